//! Recording watch streams and the writes they watch, for the watch
//! validator (`cairn_jepsen::watch`).
//!
//! - [`Writer`] sends writes and records each committed one, at the
//!   revision its response names, into a [`History`].
//! - [`Recorder`] is one raw gRPC Watch stream that records every create it
//!   sends and every response it receives. It can open its connection with
//!   tiny HTTP/2 windows, so that a client that stops reading backs up into
//!   the server within a few hundred kilobytes.

use std::time::Duration;

use cairn_jepsen::watch::wire::{response, spec};
use cairn_jepsen::watch::{Change, History, Stream};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest, WatchCancelRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Streaming;

/// Bound on waiting for one watch response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A channel to `endpoint`; with `small_windows`, HTTP/2 flow control lets
/// the server get only 64 KiB ahead of what the client has read.
pub async fn connect(endpoint: &str, small_windows: bool) -> Channel {
    let mut e = Endpoint::from_shared(endpoint.to_owned()).expect("a well-formed endpoint");
    if small_windows {
        e = e
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535);
    }
    e.connect().await.expect("connect")
}

/// Writes through KV and records what committed.
pub struct Writer {
    kv: KvClient<Channel>,
    pub history: History,
}

impl Writer {
    pub fn new(channel: Channel) -> Self {
        Self {
            kv: KvClient::new(channel),
            history: History::new(),
        }
    }

    /// Puts `key` and returns the revision.
    pub async fn put(&mut self, key: &str, value: impl Into<Vec<u8>>) -> i64 {
        let value = value.into();
        let resp = self
            .kv
            .put(PutRequest {
                key: key.into(),
                value: value.clone(),
                ..Default::default()
            })
            .await
            .expect("put")
            .into_inner();
        let rev = resp.header.expect("a header").revision;
        self.history
            .commit(rev, [Change::put(key, value)])
            .expect("a consistent history");
        rev
    }

    /// Deletes `key` (which must exist) and returns the revision.
    pub async fn delete(&mut self, key: &str) -> i64 {
        let resp = self
            .kv
            .delete_range(DeleteRangeRequest {
                key: key.into(),
                ..Default::default()
            })
            .await
            .expect("delete")
            .into_inner();
        assert_eq!(resp.deleted, 1, "deleted {key}");
        let rev = resp.header.expect("a header").revision;
        self.history
            .commit(rev, [Change::delete(key)])
            .expect("a consistent history");
        rev
    }

    /// Runs the changes as one txn and returns its revision.
    pub async fn txn(&mut self, changes: Vec<Change>) -> i64 {
        let success = changes
            .iter()
            .map(|c| RequestOp {
                request: Some(match c {
                    Change::Put { key, value, lease } => Op::RequestPut(PutRequest {
                        key: key.clone(),
                        value: value.clone(),
                        lease: *lease,
                        ..Default::default()
                    }),
                    Change::Delete { key } => Op::RequestDeleteRange(DeleteRangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    }),
                }),
            })
            .collect();
        let resp = self
            .kv
            .txn(TxnRequest {
                success,
                ..Default::default()
            })
            .await
            .expect("txn")
            .into_inner();
        let rev = resp.header.expect("a header").revision;
        self.history
            .commit(rev, changes)
            .expect("a consistent history");
        rev
    }

    /// Compacts at `revision`.
    pub async fn compact(&mut self, revision: i64) {
        self.kv
            .compact(CompactionRequest {
                revision,
                physical: true,
            })
            .await
            .expect("compact");
        self.history
            .compact(revision)
            .expect("a consistent history");
    }
}

/// One Watch stream, recorded.
pub struct Recorder {
    tx: mpsc::UnboundedSender<WatchRequest>,
    rx: Streaming<WatchResponse>,
    pub stream: Stream,
}

impl Recorder {
    pub async fn open(channel: Channel) -> Self {
        let (tx, requests) = mpsc::unbounded_channel();
        let rx = WatchClient::new(channel)
            .watch(UnboundedReceiverStream::new(requests))
            .await
            .expect("open a watch stream")
            .into_inner();
        Self {
            tx,
            rx,
            stream: Stream::default(),
        }
    }

    fn send(&self, request: RequestUnion) {
        self.tx
            .send(WatchRequest {
                request_union: Some(request),
            })
            .expect("the stream is open");
    }

    /// Sends a create request (not waiting for its answer).
    pub fn create(&mut self, create: WatchCreateRequest) {
        self.stream.creates.push(spec(&create));
        self.send(RequestUnion::CreateRequest(create));
    }

    pub fn cancel(&self, watch_id: i64) {
        self.send(RequestUnion::CancelRequest(WatchCancelRequest { watch_id }));
    }

    pub fn request_progress(&self) {
        self.send(RequestUnion::ProgressRequest(WatchProgressRequest {}));
    }

    /// The next response, recorded.
    ///
    /// # Panics
    /// If none comes within 30 s or the stream fails.
    pub async fn next(&mut self) -> WatchResponse {
        let resp = tokio::time::timeout(RESPONSE_TIMEOUT, self.rx.message())
            .await
            .expect("a watch response in time")
            .expect("the stream is healthy")
            .expect("the stream is open");
        self.stream.responses.push(response(&resp));
        resp
    }

    /// Asks for progress and reads until the stream-wide progress response
    /// comes; returns its revision. Every event up to it has then arrived.
    pub async fn sync(&mut self) -> i64 {
        self.request_progress();
        loop {
            let resp = self.next().await;
            if resp.watch_id == -1 && !resp.created && resp.events.is_empty() {
                return resp.header.expect("a header").revision;
            }
        }
    }
}
