//! The Watch service: one bidirectional gRPC stream per client call, many
//! watchers on each.
//!
//! Each call gets a task that reads the client's requests and turns them
//! into hub calls, and a response stream that renders the hub's [`Out`]
//! messages: it fills the header, looks up `prev_kv`, cuts responses
//! between revisions when they grow past `--max-request-bytes`, and splits
//! one revision into fragments only for watchers that asked for it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::watch_server::Watch;
use cairn_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use cairn_proto::mvccpb::{event::EventType, Event};
use cairn_raft_storage::Store;
use futures::Stream;
use prost::Message;
use tokio::sync::mpsc::{self, Permit};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use super::hub::{Hub, Out, Spec, StreamId};
use crate::header::Header;
use crate::status::RequestError;
use crate::tracked::Tracker;

/// The Watch service of one node.
pub(crate) struct WatchService {
    hub: Arc<Hub>,
    header: Header,
    max_request_bytes: usize,
    tracker: Tracker,
}

impl WatchService {
    pub(crate) fn new(
        hub: Arc<Hub>,
        header: Header,
        max_request_bytes: usize,
        tracker: Tracker,
    ) -> Self {
        WatchService {
            hub,
            header,
            max_request_bytes,
            tracker,
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        let Some((id, tx, rx)) = self.hub.open_stream() else {
            return Err(RequestError::Stopped.into());
        };
        let requests = request.into_inner();
        let (hub, tracker) = (self.hub.clone(), self.tracker.clone());
        tokio::spawn(async move {
            read_requests(&hub, id, &tx, requests).await;
            hub.close_stream(id);
            drop(tracker);
        });
        let renderer = Renderer {
            rx,
            pending: VecDeque::new(),
            store: self.hub.store().clone(),
            header: self.header.clone(),
            max_bytes: self.max_request_bytes,
            _tracker: self.tracker.clone(),
        };
        let stream = futures::stream::unfold(renderer, |mut r| async move {
            let resp = r.next().await?;
            Some((Ok(resp), r))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Reads the client's requests until it closes its side, the connection
/// drops, or the hub closes.
async fn read_requests(
    hub: &Hub,
    id: StreamId,
    tx: &mpsc::Sender<Out>,
    mut requests: Streaming<WatchRequest>,
) {
    let mut closed = hub.closed();
    loop {
        let req = tokio::select! {
            req = requests.message() => req,
            _ = closed.wait_for(|c| *c) => return,
        };
        let Ok(Some(req)) = req else { return };
        // etcd ignores a request with no known kind rather than failing
        // the stream.
        let Some(kind) = req.request_union else {
            continue;
        };
        // Control replies wait for room in the stream's queue here, before
        // the hub's lock is taken, so the hub never waits on a client.
        let Some(permit) = reserve(tx, &mut closed).await else {
            return;
        };
        match kind {
            RequestUnion::CreateRequest(create) => hub.create(id, spec(create), permit),
            RequestUnion::CancelRequest(cancel) => hub.cancel(id, cancel.watch_id, permit),
            RequestUnion::ProgressRequest(_) => hub.request_progress(id, permit),
        }
    }
}

async fn reserve<'a>(
    tx: &'a mpsc::Sender<Out>,
    closed: &mut watch::Receiver<bool>,
) -> Option<Permit<'a, Out>> {
    tokio::select! {
        permit = tx.reserve() => permit.ok(),
        _ = closed.wait_for(|c| *c) => None,
    }
}

/// Reads a create request once, turning etcd's sentinels into options.
fn spec(c: WatchCreateRequest) -> Spec {
    let has = |f: FilterType| c.filters.contains(&(f as i32));
    Spec {
        no_put: has(FilterType::Noput),
        no_delete: has(FilterType::Nodelete),
        start: (c.start_revision != 0).then_some(c.start_revision),
        watch_id: (c.watch_id != 0).then_some(c.watch_id),
        prev_kv: c.prev_kv,
        fragment: c.fragment,
        progress_notify: c.progress_notify,
        key: c.key,
        range_end: c.range_end,
    }
}

/// Turns a stream's [`Out`] messages into responses.
struct Renderer {
    rx: mpsc::Receiver<Out>,
    pending: VecDeque<WatchResponse>,
    store: Store,
    header: Header,
    max_bytes: usize,
    /// The store handle above keeps shutdown waiting for this stream.
    _tracker: Tracker,
}

impl Renderer {
    async fn next(&mut self) -> Option<WatchResponse> {
        loop {
            if let Some(resp) = self.pending.pop_front() {
                return Some(resp);
            }
            let out = self.rx.recv().await?;
            self.render(out);
        }
    }

    fn render(&mut self, out: Out) {
        let base = |header, watch_id| WatchResponse {
            header,
            watch_id,
            ..Default::default()
        };
        let resp = match out {
            Out::Created { watch_id, revision } => WatchResponse {
                created: true,
                ..base(self.header.at(revision), watch_id)
            },
            Out::Refused { revision, reason } => WatchResponse {
                created: true,
                canceled: true,
                cancel_reason: reason.to_owned(),
                ..base(self.header.at(revision), -1)
            },
            Out::Canceled {
                watch_id,
                revision,
                compact_revision,
            } => WatchResponse {
                canceled: true,
                compact_revision,
                ..base(self.header.at(revision), watch_id)
            },
            Out::Progress { watch_id, revision } => base(self.header.at(revision), watch_id),
            Out::Events {
                watch_id,
                revision,
                events,
                prev_kv,
                fragment,
            } => {
                let events = events
                    .iter()
                    .map(|ev| self.event(ev, prev_kv))
                    .collect::<Vec<_>>();
                let header = self.header.at(revision);
                for (chunk, more) in chunks(events, self.max_bytes, fragment) {
                    self.pending.push_back(WatchResponse {
                        events: chunk,
                        fragment: more,
                        ..base(header, watch_id)
                    });
                }
                return;
            }
        };
        self.pending.push_back(resp);
    }

    /// The event as sent, with `prev_kv` looked up as etcd does: the key at
    /// the revision before, skipped for creations.
    fn event(&self, ev: &Event, prev_kv: bool) -> Event {
        let mut ev = ev.clone();
        if !prev_kv {
            return ev;
        }
        let Some(kv) = &ev.kv else { return ev };
        let created = ev.r#type == EventType::Put as i32 && kv.create_revision == kv.mod_revision;
        if !created {
            match self.store.value_at(&kv.key, kv.mod_revision - 1) {
                Ok(prev) => ev.prev_kv = prev,
                Err(e) => tracing::warn!(error = %e, "watch could not read prev_kv"),
            }
        }
        ev
    }
}

/// Cuts events into responses of about `max_bytes`: between revisions
/// always, and inside one revision only for a watcher that asked for
/// fragments. Returns each chunk with whether it is a fragment that more
/// of its revision follows.
fn chunks(events: Vec<Event>, max_bytes: usize, fragment: bool) -> Vec<(Vec<Event>, bool)> {
    let mut out = Vec::new();
    let mut cur: Vec<Event> = Vec::new();
    let mut size = 0;
    let mut events = events.into_iter().peekable();
    while let Some(ev) = events.next() {
        let len = ev.encoded_len() + 8;
        let rev = mod_revision(&ev);
        let same_rev = cur.last().is_some_and(|last| mod_revision(last) == rev);
        if !cur.is_empty() && size + len >= max_bytes && (!same_rev || fragment) {
            out.push((std::mem::take(&mut cur), same_rev));
            size = 0;
        }
        size += len;
        cur.push(ev);
        if events.peek().is_none() {
            out.push((std::mem::take(&mut cur), false));
        }
    }
    out
}

fn mod_revision(ev: &Event) -> i64 {
    ev.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

#[cfg(test)]
mod tests {
    use cairn_proto::mvccpb::KeyValue;

    use super::*;

    fn ev(rev: i64, size: usize) -> Event {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: b"k".to_vec(),
                mod_revision: rev,
                value: vec![0; size],
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    /// (revisions, fragment flag) of each chunk.
    fn shape(chunks: Vec<(Vec<Event>, bool)>) -> Vec<(Vec<i64>, bool)> {
        chunks
            .into_iter()
            .map(|(c, more)| (c.iter().map(mod_revision).collect(), more))
            .collect()
    }

    #[test]
    fn responses_are_cut_between_revisions_and_fragmented_on_request() {
        let events = || vec![ev(2, 600), ev(2, 600), ev(3, 600), ev(4, 10)];
        // Small events all fit.
        assert_eq!(
            shape(chunks(events(), 10_000, false)),
            [(vec![2, 2, 3, 4], false)]
        );
        // Without fragment, one revision is never split.
        assert_eq!(
            shape(chunks(events(), 1000, false)),
            [(vec![2, 2], false), (vec![3, 4], false)]
        );
        // With fragment, a revision is split and flagged.
        assert_eq!(
            shape(chunks(events(), 1000, true)),
            [(vec![2], true), (vec![2], false), (vec![3, 4], false)]
        );
        // A single huge event is sent whole.
        assert_eq!(
            shape(chunks(vec![ev(5, 5000)], 1000, true)),
            [(vec![5], false)]
        );
        assert!(chunks(Vec::new(), 1000, true).is_empty());
    }
}
