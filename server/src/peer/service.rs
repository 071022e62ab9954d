//! The `cairnpeer.Peer` service: what this member answers its peers.
//!
//! openraft's RPCs go straight to openraft. Forwarded requests go to
//! [`Leader`], the leader side of this member, which never forwards again:
//! if this member lost leadership meanwhile, the request fails and the
//! follower relays that failure to its client.
//!
//! Every call carries the sender's cluster id; a call from another cluster
//! (another `--initial-cluster-token`) is refused, as etcd refuses it with
//! "request cluster ID mismatch".

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::cairnpeer::peer_server::Peer;
use cairn_proto::cairnpeer::{Envelope, Reply, SnapshotChunk};
use cairn_raft_storage::{Member, NodeId, Raft, TypeConfig};
use futures::StreamExt;
use openraft::error::{Fatal, RaftError};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest};
use openraft::{LogId, ServerState, Snapshot, SnapshotMeta, Vote};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use super::{
    encode, Answer, Forwarded, LinearizableError, MembersReply, Relayed, Route, UNDECODABLE,
};
use crate::cluster::{ClusterError, Membership};
use crate::lease::Lessor;
use crate::propose::Proposer;
use crate::status::RequestError;

/// When this member last heard from a leader it accepted: a pre-vote is
/// granted only once that is an election timeout ago.
#[derive(Debug, Default)]
pub(crate) struct Contact {
    last: Mutex<Option<Instant>>,
}

impl Contact {
    fn heard(&self) {
        *self.last.lock() = Some(Instant::now());
    }

    /// Whether a leader was heard from within `within`.
    pub(crate) fn recent(&self, within: Duration) -> bool {
        self.last.lock().is_some_and(|t| t.elapsed() < within)
    }
}

/// A pre-vote: would the receiver vote for a candidate with this log?
/// Members that lost contact with the leader send it, learners included,
/// because the answer also tells a member it was removed.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PreVote {
    pub(crate) last_log_id: Option<LogId<NodeId>>,
}

/// The answer to a [`PreVote`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct PreVoteReply {
    /// The receiver would vote for the sender.
    pub(crate) granted: bool,
    /// The receiver's committed membership, newer than anything in the
    /// sender's log, does not hold the sender: it was removed. (A removed
    /// member may never receive the entry that removes it, since the leader
    /// stops replicating to it.)
    pub(crate) removed: bool,
}

/// The leader side of this member: what it does with forwarded requests.
#[derive(Clone)]
pub(crate) struct Leader {
    pub(crate) route: Route,
    pub(crate) proposer: Proposer,
    pub(crate) membership: Arc<Membership>,
    pub(crate) lessor: Arc<Lessor>,
}

/// The peer service of one member.
#[derive(Clone)]
pub(crate) struct PeerService {
    raft: Raft,
    cluster_id: u64,
    contact: Arc<Contact>,
    leader: Leader,
    election_timeout: Duration,
}

impl PeerService {
    pub(crate) fn new(
        raft: Raft,
        cluster_id: u64,
        contact: Arc<Contact>,
        leader: Leader,
        election_timeout: Duration,
    ) -> Self {
        PeerService {
            raft,
            cluster_id,
            contact,
            leader,
            election_timeout,
        }
    }

    fn check_cluster(&self, cluster_id: u64, from: NodeId) -> Result<(), Status> {
        if cluster_id == self.cluster_id {
            return Ok(());
        }
        tracing::warn!(
            from = format_args!("{from:x}"),
            local = format_args!("{:x}", self.cluster_id),
            remote = format_args!("{cluster_id:x}"),
            "request cluster ID mismatch"
        );
        Err(Status::failed_precondition("request cluster ID mismatch"))
    }

    /// Checks the envelope and decodes its body.
    fn open<T: serde::de::DeserializeOwned>(&self, envelope: &Envelope) -> Result<T, Status> {
        self.check_cluster(envelope.cluster_id, envelope.from)?;
        postcard::from_bytes(&envelope.body)
            .map_err(|e| Status::invalid_argument(format!("{UNDECODABLE}: {e}")))
    }

    fn leading(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.current_leader == Some(metrics.id)
    }

    /// The answer to `from`'s pre-vote.
    async fn answer_pre_vote(
        &self,
        from: NodeId,
        request: &PreVote,
    ) -> Result<PreVoteReply, Status> {
        let (committed_at, committed_has) = self
            .raft
            .with_raft_state(move |st| {
                let c = st.membership_state.committed();
                (*c.log_id(), c.get_node(&from).is_some())
            })
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if !committed_has && committed_at > request.last_log_id {
            return Ok(PreVoteReply {
                granted: false,
                removed: true,
            });
        }
        Ok(PreVoteReply {
            granted: self.grant_pre_vote(from, request),
            removed: false,
        })
    }

    /// Whether to grant `from` a pre-vote.
    fn grant_pre_vote(&self, from: NodeId, request: &PreVote) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        let is_voter = metrics
            .membership_config
            .membership()
            .get_joint_config()
            .iter()
            .any(|c| c.contains(&from));
        if !is_voter || metrics.state == ServerState::Leader {
            return false;
        }
        if self.contact.recent(self.election_timeout) {
            return false;
        }
        let mine = self.raft.data_metrics().borrow().last_log;
        request.last_log_id >= mine
    }
}

fn reply<T: Serialize>(body: &T) -> Result<Response<Reply>, Status> {
    Ok(Response::new(Reply { body: encode(body) }))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(&self, request: Request<Envelope>) -> Result<Response<Reply>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = self.open(request.get_ref())?;
        let result = self.raft.append_entries(rpc).await;
        if matches!(
            result,
            Ok(AppendEntriesResponse::Success
                | AppendEntriesResponse::PartialSuccess(_)
                | AppendEntriesResponse::Conflict)
        ) {
            self.contact.heard();
        }
        reply(&result)
    }

    async fn vote(&self, request: Request<Envelope>) -> Result<Response<Reply>, Status> {
        let rpc: VoteRequest<NodeId> = self.open(request.get_ref())?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Reply>, Status> {
        let mut chunks = request.into_inner();
        let first = chunks
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        self.check_cluster(first.cluster_id, first.from)?;
        let (vote, meta): (Vote<NodeId>, SnapshotMeta<NodeId, Member>) =
            postcard::from_bytes(&first.header).map_err(|e| {
                Status::invalid_argument(format!("undecodable snapshot header: {e}"))
            })?;
        let mut file = self
            .raft
            .begin_receiving_snapshot()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let receive = async {
            let failed = |e: std::io::Error| Status::internal(format!("saving a snapshot: {e}"));
            let mut received = 0u64;
            let mut data = first.data;
            loop {
                file.write_all(&data).await.map_err(failed)?;
                received += data.len() as u64;
                match chunks.next().await {
                    Some(chunk) => data = chunk?.data,
                    None => break,
                }
            }
            file.flush().await.map_err(failed)?;
            if first.total_bytes != 0 && received != first.total_bytes {
                return Err(Status::invalid_argument(format!(
                    "snapshot cut short: {received} of {} bytes",
                    first.total_bytes
                )));
            }
            Ok(received)
        };
        // On an error the file goes with `file`. A damaged snapshot is
        // refused here: openraft stops on a failed install.
        let received = receive.await?;
        file.check(&meta)
            .await
            .map_err(|e| Status::invalid_argument(format!("refusing a snapshot: {e}")))?;
        tracing::info!(
            from = format_args!("{:x}", first.from),
            bytes = received,
            snapshot = %meta.snapshot_id,
            "received a snapshot"
        );
        let result: Result<_, Fatal<NodeId>> = self
            .raft
            .install_full_snapshot(
                vote,
                Snapshot {
                    meta,
                    snapshot: file,
                },
            )
            .await;
        if result.is_ok() {
            self.contact.heard();
        }
        reply(&result)
    }

    async fn pre_vote(&self, request: Request<Envelope>) -> Result<Response<Reply>, Status> {
        let pre_vote: PreVote = self.open(request.get_ref())?;
        reply(
            &self
                .answer_pre_vote(request.get_ref().from, &pre_vote)
                .await?,
        )
    }

    async fn forward(&self, request: Request<Envelope>) -> Result<Response<Reply>, Status> {
        let forwarded: Forwarded = self.open(request.get_ref())?;
        // A batch's requests are spliced into one entry, where batches
        // never nest.
        if let Forwarded::ProposeBatch(requests)
        | Forwarded::Propose(cairn_raft_storage::Request::Batch(requests)) = &forwarded
        {
            if requests
                .iter()
                .any(|r| matches!(r, cairn_raft_storage::Request::Batch(_)))
            {
                return Err(Status::invalid_argument(format!(
                    "{UNDECODABLE}: nested batch"
                )));
            }
        }
        let answer: Result<Answer, RequestError> = match forwarded {
            Forwarded::Propose(request) => self
                .leader
                .proposer
                .propose_here(request)
                .await
                .map(|(response, index)| Answer::Proposed(response, index)),
            // One item of the next batch: `propose.rs` splices it in.
            Forwarded::ProposeBatch(requests) => self
                .leader
                .proposer
                .propose_here(cairn_raft_storage::Request::Batch(requests))
                .await
                .map(|(response, index)| Answer::Proposed(response, index)),
            Forwarded::ReadIndex => read_index(&self.leader.route).await.map(Answer::ReadIndex),
            Forwarded::ChangeMembers(change) => self
                .leader
                .membership
                .change_here(change)
                .await
                .map(Answer::ChangedMembers),
            // Deadlines live on the leader only.
            Forwarded::LeaseRenew(_) | Forwarded::LeaseRemaining(_) if !self.leading() => {
                Err(ClusterError::LeaderChanged.into())
            }
            Forwarded::LeaseRenew(id) => {
                Ok(Answer::LeaseTtl(self.leader.lessor.renew(id).unwrap_or(0)))
            }
            Forwarded::LeaseRemaining(id) => {
                Ok(Answer::LeaseRemaining(self.leader.lessor.remaining(id)))
            }
            Forwarded::Campaign => self
                .raft
                .trigger()
                .elect()
                .await
                .map(|()| Answer::Campaigning)
                .map_err(RequestError::Fatal),
        };
        reply(&answer.map_err(|e| Relayed::from(Status::from(e))))
    }

    async fn members(&self, request: Request<Envelope>) -> Result<Response<Reply>, Status> {
        // A joining member does not know the cluster id yet: it sends 0.
        let envelope = request.get_ref();
        if envelope.cluster_id != 0 {
            self.check_cluster(envelope.cluster_id, envelope.from)?;
        }
        let metrics = self.raft.metrics().borrow().clone();
        let members = metrics
            .membership_config
            .nodes()
            .map(|(id, m)| (*id, m.clone()))
            .collect();
        reply(&MembersReply {
            cluster_id: self.cluster_id,
            members,
        })
    }
}

/// The leader's read index: confirms leadership with a quorum and returns
/// the log index a follower must apply before it reads.
async fn read_index(route: &Route) -> Result<u64, RequestError> {
    route.linearizable().await.map_err(|e| match e {
        LinearizableError::Raft(e) => match *e {
            RaftError::APIError(_) => RequestError::NoLeader,
            RaftError::Fatal(f) => RequestError::Fatal(f),
        },
        LinearizableError::Behind => RequestError::Timeout,
    })
}
