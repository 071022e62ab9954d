//! openraft's network: each RPC is one `cairnpeer.Peer` call on the
//! member's reused connection.
//!
//! A refused connection is reported as `Unreachable`, so openraft backs off
//! instead of retrying at once; any other failure is a `NetworkError`. A
//! snapshot travels from the leader's snapshot file as one client-streamed
//! call, in slices, into a file on the receiver, which installs it once
//! it is whole.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairnpeer::peer_client::PeerClient;
use cairn_proto::cairnpeer::SnapshotChunk;
use cairn_raft_storage::{Member, NodeId, TypeConfig};
use futures::StreamExt;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{Entry, EntryPayload, Snapshot, StorageIOError, Vote};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tonic::transport::Channel;

use super::{classify, decode, encode, PeerError, Peers};
use crate::cluster::Connected;

/// Slices of a snapshot on the wire.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// The most entry bytes one AppendEntries carries (beyond its first
/// entry), as etcd's 1 MiB per message. openraft 0.9 limits a call only by
/// entry count (300), and one entry may hold a batch of requests up to
/// 2 MiB, while each call must be answered within a heartbeat interval: a
/// lagging member sent megabytes timed out, and was sent the same again,
/// for seconds.
const MAX_APPEND_BYTES: usize = 1 << 20;

/// Builds a [`PeerConnection`] for each member openraft replicates to.
#[derive(Debug, Clone)]
pub(crate) struct Network {
    peers: Arc<Peers>,
    connected: Arc<Connected>,
    heartbeat: Duration,
}

impl Network {
    pub(crate) fn new(peers: Arc<Peers>, connected: Arc<Connected>, heartbeat: Duration) -> Self {
        Network {
            peers,
            connected,
            heartbeat,
        }
    }
}

/// openraft's handle on one member.
#[derive(Debug)]
pub(crate) struct PeerConnection {
    target: NodeId,
    node: Member,
    peers: Arc<Peers>,
    connected: Arc<Connected>,
    heartbeat: Duration,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerConnection {
        PeerConnection {
            target,
            node: node.clone(),
            peers: self.peers.clone(),
            connected: self.connected.clone(),
            heartbeat: self.heartbeat,
        }
    }
}

/// A failed call as openraft wants it.
fn rpc_error<E: std::error::Error>(e: PeerError) -> RPCError<NodeId, Member, E> {
    if e.undelivered() {
        RPCError::Unreachable(Unreachable::new(&e))
    } else {
        RPCError::Network(NetworkError::new(&e))
    }
}

impl PeerConnection {
    fn client(&self) -> Result<PeerClient<Channel>, PeerError> {
        self.peers.client(self.target, &self.node.peer_urls)
    }

    /// One unary call: the envelope out, `Result<T, E>` back.
    async fn call<Req, T, E, F, Fut>(
        &self,
        body: &Req,
        option: &RPCOption,
        send: F,
    ) -> Result<T, RPCError<NodeId, Member, E>>
    where
        Req: serde::Serialize,
        T: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
        F: FnOnce(PeerClient<Channel>, tonic::Request<cairn_proto::cairnpeer::Envelope>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<cairn_proto::cairnpeer::Reply>, tonic::Status>>,
    {
        let client = self.client().map_err(rpc_error)?;
        let mut request = tonic::Request::new(self.peers.envelope(body));
        request.set_timeout(option.hard_ttl());
        let reply = send(client, request)
            .await
            .map_err(|status| rpc_error(classify(self.target, status)))?;
        let result: Result<T, E> = decode(self.target, &reply.into_inner()).map_err(rpc_error)?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// How many of `entries`, from the first, fit in `budget` bytes; always at
/// least one.
fn entries_within(entries: &[Entry<TypeConfig>], budget: usize) -> usize {
    let mut bytes = 0;
    let over = entries.iter().position(|e| {
        bytes += match &e.payload {
            EntryPayload::Normal(request) => request.encoded_len(),
            EntryPayload::Blank | EntryPayload::Membership(_) => 0,
        };
        bytes > budget
    });
    over.map_or(entries.len(), |i| i.max(1))
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let fit = entries_within(&rpc.entries, MAX_APPEND_BYTES);
        if fit < rpc.entries.len() {
            // openraft sends the first `fit` at once, and as few for the
            // next several calls.
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fit as u64),
            ));
        }
        let response = self
            .call(&rpc, &option, |mut c, r| async move {
                c.append_entries(r).await
            })
            .await;
        // Any answer, even a refusal, means the connection works.
        match &response {
            Ok(_) | Err(RPCError::RemoteError(_)) => self.connected.up(self.target),
            Err(_) => self.connected.down(self.target),
        }
        response
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call(&rpc, &option, |mut c, r| async move { c.vote(r).await })
            .await
    }

    /// Never called: [`PeerConnection::full_snapshot`] sends snapshots whole.
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(RPCError::Network(NetworkError::new(
            &std::io::Error::other("snapshots are streamed whole by full_snapshot"),
        )))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let streaming = |e: PeerError| -> StreamingError<TypeConfig, Fatal<NodeId>> {
            if e.undelivered() {
                StreamingError::Unreachable(Unreachable::new(&e))
            } else {
                StreamingError::Network(NetworkError::new(&e))
            }
        };
        let mut client = self.client().map_err(streaming)?;
        let mut file = snapshot.snapshot;
        let read_failed = |e: std::io::Error| {
            StreamingError::StorageError(StorageIOError::read_snapshot(None, &e).into())
        };
        let bytes = file.len().await.map_err(read_failed)?;
        file.seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(read_failed)?;
        tracing::info!(
            target = format_args!("{:x}", self.target),
            bytes,
            snapshot = %snapshot.meta.snapshot_id,
            "sending a snapshot"
        );
        let (cluster_id, from) = (self.peers.cluster_id(), self.peers.me());
        let first = SnapshotChunk {
            cluster_id,
            from,
            header: encode(&(vote, snapshot.meta.clone())),
            data: Vec::new(),
            total_bytes: bytes,
        };
        // Slices are read from the file as the stream is polled: one in
        // memory at a time. A read error ends the stream short of
        // `total_bytes`, which the receiver refuses.
        let slices = futures::stream::unfold(Some(file), move |file| async move {
            let mut file = file?;
            let mut data = Vec::with_capacity(SNAPSHOT_CHUNK_BYTES);
            match (&mut file)
                .take(SNAPSHOT_CHUNK_BYTES as u64)
                .read_to_end(&mut data)
                .await
            {
                Ok(0) => None,
                Ok(_) => Some((
                    SnapshotChunk {
                        cluster_id,
                        from,
                        header: Vec::new(),
                        data,
                        total_bytes: 0,
                    },
                    Some(file),
                )),
                Err(e) => {
                    tracing::warn!(error = %e, "reading a snapshot to send failed");
                    None
                }
            }
        });
        let send = client.install_snapshot(futures::stream::iter([first]).chain(slices));
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            reply = send => reply.map_err(|s| streaming(classify(self.target, s)))?,
        };
        let result: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
            decode(self.target, &reply.into_inner()).map_err(streaming)?;
        result.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn backoff(&self) -> Backoff {
        // Retry an unreachable member about every other heartbeat, capped,
        // so a restarted member hears from the leader quickly.
        let first = self.heartbeat.saturating_mul(2);
        Backoff::new((0..).map(move |i: u32| {
            first
                .saturating_mul(1 << i.min(3))
                .min(Duration::from_secs(1))
        }))
    }
}

#[cfg(test)]
mod tests {
    use cairn_proto::etcdserverpb::PutRequest;
    use cairn_raft_storage::Request;
    use openraft::{CommittedLeaderId, LogId};

    use super::*;

    fn put(value_bytes: usize) -> Request {
        Request::Put(PutRequest {
            key: b"k".to_vec(),
            value: vec![b'v'; value_bytes],
            ..Default::default()
        })
    }

    fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload,
        }
    }

    /// An AppendEntries carries entries up to the byte budget, and always
    /// its first entry, however big.
    #[test]
    fn entries_are_cut_at_the_byte_budget() {
        let size = put(1000).encoded_len();
        let mut entries = vec![entry(1, EntryPayload::Blank)];
        entries.extend((2..=11).map(|i| entry(i, EntryPayload::Normal(put(1000)))));
        assert_eq!(entries_within(&entries, 10 * size), 11);
        assert_eq!(entries_within(&entries, 10 * size - 1), 10);
        assert_eq!(entries_within(&entries, 3 * size), 4);
        assert_eq!(entries_within(&entries[1..], 10), 1);
        let huge = [entry(1, EntryPayload::Normal(put(4 << 20)))];
        assert_eq!(entries_within(&huge, MAX_APPEND_BYTES), 1);
        assert_eq!(entries_within(&[], MAX_APPEND_BYTES), 0);
    }
}
