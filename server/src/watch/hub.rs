//! The watch hub: every watcher of the node, fed by the store's observer
//! hook and by history reads.
//!
//! # Synced and unsynced
//! A watcher is *synced* when it has been handed every matching event up
//! to the hub's revision (the last one published). Synced watchers live in
//! a [`Group`] indexed by span; `applied` matches each new event against
//! it and queues one [`Out::Events`] per watcher on the watcher's stream,
//! with `try_send`. A full stream never blocks apply: its watcher moves to
//! the *unsynced* set, remembering the first revision it missed.
//!
//! The sync thread (`cairn-watch-sync`) catches unsynced watchers up from
//! the store's history, a page of at most [`MAX_PAGE_REVISIONS`] revisions
//! at a time, and moves each back to synced once it has everything up to
//! the hub's revision, under the hub lock so that no publish falls between.
//! A watcher whose next revision has been compacted is cancelled with the
//! compact revision instead; it never skips events.
//!
//! # Invariants
//! - Per watcher, events are queued in revision order, each exactly once:
//!   a synced watcher gets events from `applied` only, an unsynced one from
//!   history only, and the switch happens under the lock.
//! - A progress notification at revision `r` is queued only when every
//!   watcher concerned is synced, so it follows every event up to `r` on
//!   the same channel (etcd #15220), and none of them starts after `r + 1`
//!   (a client resumes from it: etcd #20221).
//! - Nothing here blocks on a client: streams take `try_send`; the only
//!   awaits (`reserve` for control replies) happen in the stream's own
//!   task, before the lock is taken.
//! - Memory is bounded: each stream queues at most [`STREAM_BUFFER`]
//!   messages; a history page covers at most [`MAX_PAGE_REVISIONS`]
//!   revisions for at most [`MAX_WATCHERS_PER_ROUND`] watchers.
//!
//! # Lock order
//! The hub lock is taken after the store's locks are released (`applied`
//! runs once apply has dropped them) and is never held across a store read.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cairn_proto::mvccpb::{event::EventType, Event};
use cairn_raft_storage::{Changes, Error as StorageError, HistoryPage, Observer, Store};
use parking_lot::{Condvar, Mutex};
use tokio::sync::mpsc::{self, error::TrySendError, Permit};

use super::group::{Group, Key, KeyMap, KeySet, Span};

/// Messages a stream may queue before its watchers fall back to history
/// (etcd's `chanBufLen`).
const STREAM_BUFFER: usize = 128;
/// Revisions one history page covers (etcd's `watchBatchMaxRevs`).
const MAX_PAGE_REVISIONS: usize = 1000;
/// Unsynced watchers one sync round serves (etcd's `maxWatchersPerSync`).
const MAX_WATCHERS_PER_ROUND: usize = 512;
/// How long the sync thread waits before retrying streams that were full.
const RETRY: Duration = Duration::from_millis(10);

/// etcd's reasons for refusing a create, sent as `cancel_reason`.
const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

/// A gRPC Watch stream, as the hub knows it.
pub(crate) type StreamId = u64;

/// What a stream's sender turns into `WatchResponse`s, in queue order.
#[derive(Debug)]
pub(crate) enum Out {
    /// A watcher was created.
    Created { watch_id: i64, revision: i64 },
    /// A create was refused: etcd answers created and canceled at once.
    Refused { revision: i64, reason: &'static str },
    /// Events of one or more whole revisions, in order.
    Events {
        watch_id: i64,
        revision: i64,
        events: Vec<Arc<Event>>,
        prev_kv: bool,
        fragment: bool,
    },
    /// A watcher ended: by the client (`compact_revision` 0) or because
    /// its next revision was compacted.
    Canceled {
        watch_id: i64,
        revision: i64,
        compact_revision: i64,
    },
    /// Everything up to `revision` has been sent to the watcher (or, with
    /// watch id -1, to every watcher of the stream).
    Progress { watch_id: i64, revision: i64 },
}

/// A create request, read once at the gRPC edge.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// `None`: from the revision after the current one.
    pub start: Option<i64>,
    /// `None`: the stream picks one.
    pub watch_id: Option<i64>,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
    pub fragment: bool,
    pub progress_notify: bool,
}

/// etcd's NOPUT and NODELETE filters.
#[derive(Debug, Clone, Copy)]
struct Filters {
    no_put: bool,
    no_delete: bool,
}

impl Filters {
    fn wants(self, ev: &Event) -> bool {
        if ev.r#type == EventType::Delete as i32 {
            !self.no_delete
        } else {
            !self.no_put
        }
    }
}

#[derive(Debug)]
struct Watcher {
    stream: StreamId,
    id: i64,
    span: Span,
    /// The first revision not yet queued. For a synced watcher, only a
    /// lower bound on what it accepts (a start in the future).
    next: i64,
    synced: bool,
    filters: Filters,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// No events queued since the last progress tick.
    quiet: bool,
    /// Events being gathered for one message, while the hub lock is held;
    /// empty otherwise.
    batch: Vec<Arc<Event>>,
}

#[derive(Debug)]
struct StreamState {
    tx: mpsc::Sender<Out>,
    ids: HashMap<i64, Key>,
    /// The next watch id to try when the client leaves it to us.
    next_id: i64,
    /// How many of its watchers are unsynced.
    unsynced: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// The last revision published to the hub.
    rev: i64,
    compact: i64,
    watchers: KeyMap<Watcher>,
    synced: Group,
    unsynced: KeySet,
    streams: HashMap<StreamId, StreamState>,
    /// Streams whose progress request waits for them to catch up.
    pending: HashSet<StreamId>,
    next_key: Key,
    next_stream: StreamId,
    closed: bool,
}

impl Inner {
    fn mark_unsynced(&mut self, key: Key, next: i64) {
        let Some(w) = self.watchers.get_mut(&key) else {
            return;
        };
        if w.synced {
            w.synced = false;
            self.synced.remove(&w.span, key);
            self.unsynced.insert(key);
            if let Some(st) = self.streams.get_mut(&w.stream) {
                st.unsynced += 1;
            }
        }
        w.next = w.next.max(next);
    }

    fn mark_synced(&mut self, key: Key) {
        let Some(w) = self.watchers.get_mut(&key) else {
            return;
        };
        if !w.synced {
            w.synced = true;
            self.unsynced.remove(&key);
            self.synced.insert(&w.span, key);
            if let Some(st) = self.streams.get_mut(&w.stream) {
                st.unsynced -= 1;
            }
        }
    }

    fn remove(&mut self, key: Key) {
        let Some(w) = self.watchers.remove(&key) else {
            return;
        };
        if w.synced {
            self.synced.remove(&w.span, key);
        } else {
            self.unsynced.remove(&key);
        }
        if let Some(st) = self.streams.get_mut(&w.stream) {
            st.ids.remove(&w.id);
            if !w.synced {
                st.unsynced -= 1;
            }
        }
    }

    /// Whether a progress response at the hub's revision is honest for
    /// every watcher of the stream: each is synced, and none starts in the
    /// future, since a client resumes from a progress revision and would
    /// then get events from before its start (etcd #20221).
    fn stream_caught_up(&self, stream: StreamId) -> bool {
        self.streams.get(&stream).is_some_and(|st| {
            st.unsynced == 0
                && st
                    .ids
                    .values()
                    .all(|k| self.watchers.get(k).is_none_or(|w| !self.is_future(w)))
        })
    }

    fn is_future(&self, w: &Watcher) -> bool {
        w.next > self.rev + 1
    }

    /// Answers the stream's deferred progress request once it is caught
    /// up.
    fn answer_progress(&mut self, stream: StreamId) {
        if !self.pending.contains(&stream) || !self.stream_caught_up(stream) {
            return;
        }
        let Some(st) = self.streams.get(&stream) else {
            self.pending.remove(&stream);
            return;
        };
        let progress = Out::Progress {
            watch_id: -1,
            revision: self.rev,
        };
        if !matches!(st.tx.try_send(progress), Err(TrySendError::Full(_))) {
            self.pending.remove(&stream);
        }
    }

    /// Answers every deferred progress request that can be. Returns
    /// whether any was.
    fn answer_pending(&mut self) -> bool {
        let before = self.pending.len();
        let pending: Vec<StreamId> = self.pending.iter().copied().collect();
        for stream in pending {
            self.answer_progress(stream);
        }
        self.pending.len() < before
    }

    /// Whether the sync thread has something to do: unsynced watchers, or
    /// a caught-up stream whose progress answer did not fit its queue. (A
    /// stream waiting for a future start is answered by a later apply.)
    fn has_work(&self) -> bool {
        !self.unsynced.is_empty() || self.pending.iter().any(|s| self.stream_caught_up(*s))
    }

    /// Periodic progress for watchers that asked for it: sent to each synced
    /// one, not waiting for a future start, that got no events since the
    /// last tick.
    fn tick(&mut self) {
        let rev = self.rev;
        for w in self.watchers.values_mut().filter(|w| w.progress_notify) {
            if w.synced && w.quiet && w.next <= rev + 1 {
                if let Some(st) = self.streams.get(&w.stream) {
                    let _ = st.tx.try_send(Out::Progress {
                        watch_id: w.id,
                        revision: rev,
                    });
                }
            }
            w.quiet = true;
        }
    }
}

/// One unsynced watcher, as a sync round saw it.
struct Pick {
    key: Key,
    next: i64,
    span: Span,
    filters: Filters,
}

/// The watch hub of one node. See the module docs.
pub(crate) struct Hub {
    inner: Mutex<Inner>,
    /// Wakes the sync thread.
    wake: Condvar,
    store: Store,
    /// Tells stream tasks that the hub is closed.
    closed: tokio::sync::watch::Sender<bool>,
}

impl Hub {
    /// Creates the hub, hangs it on `store`, and starts its sync thread,
    /// which also sends periodic progress every `progress_interval`.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub(crate) fn start(
        store: Store,
        progress_interval: Duration,
    ) -> std::io::Result<(Arc<Hub>, JoinHandle<()>)> {
        let inner = Inner {
            rev: store.revision(),
            compact: store.compact_revision(),
            ..Inner::default()
        };
        let hub = Arc::new(Hub {
            inner: Mutex::new(inner),
            wake: Condvar::new(),
            store,
            closed: tokio::sync::watch::channel(false).0,
        });
        let observer: Arc<dyn Observer> = hub.clone();
        hub.store.set_observer(Arc::downgrade(&observer));
        // An apply between reading the revision above and hanging the
        // observer told no one: read it again (before taking the hub lock,
        // which is never held across a store read).
        let (rev, compact) = (hub.store.revision(), hub.store.compact_revision());
        {
            let mut inner = hub.inner.lock();
            inner.rev = inner.rev.max(rev);
            inner.compact = inner.compact.max(compact);
        }
        let thread = {
            let hub = hub.clone();
            std::thread::Builder::new()
                .name("cairn-watch-sync".into())
                .spawn(move || hub.run(progress_interval))?
        };
        Ok((hub, thread))
    }

    /// The store the hub decorates.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Ends every stream and stops the sync thread.
    pub(crate) fn close(&self) {
        let mut inner = self.inner.lock();
        inner.closed = true;
        inner.streams.clear();
        inner.pending.clear();
        inner.watchers.clear();
        inner.unsynced.clear();
        inner.synced = Group::default();
        drop(inner);
        self.closed.send_replace(true);
        self.wake.notify_all();
    }

    /// A receiver that turns true when the hub closes.
    pub(crate) fn closed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Registers a new gRPC stream. Returns its id, a sender for control
    /// replies (through [`mpsc::Sender::reserve`]) and the receiver the
    /// response stream reads. None once the hub is closed.
    pub(crate) fn open_stream(&self) -> Option<(StreamId, mpsc::Sender<Out>, mpsc::Receiver<Out>)> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let mut inner = self.inner.lock();
        if inner.closed {
            return None;
        }
        let id = inner.next_stream;
        inner.next_stream += 1;
        inner.streams.insert(
            id,
            StreamState {
                tx: tx.clone(),
                ids: HashMap::new(),
                next_id: 0,
                unsynced: 0,
            },
        );
        Some((id, tx, rx))
    }

    /// Forgets a stream and its watchers.
    pub(crate) fn close_stream(&self, stream: StreamId) {
        let mut inner = self.inner.lock();
        let Some(st) = inner.streams.get(&stream) else {
            return;
        };
        let keys: Vec<Key> = st.ids.values().copied().collect();
        for key in keys {
            inner.remove(key);
        }
        inner.streams.remove(&stream);
        inner.pending.remove(&stream);
    }

    /// Creates a watcher on `stream` and queues the reply through `permit`,
    /// ahead of any of its events.
    pub(crate) fn create(&self, stream: StreamId, spec: Spec, permit: Permit<'_, Out>) {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let rev = inner.rev;
        let Some(st) = inner.streams.get_mut(&stream) else {
            return;
        };
        let refuse = |reason| Out::Refused {
            revision: rev,
            reason,
        };
        let Some(span) = Span::new(&spec.key, &spec.range_end) else {
            permit.send(refuse(EMPTY_RANGE));
            return;
        };
        let id = match spec.watch_id {
            Some(id) if st.ids.contains_key(&id) => {
                permit.send(refuse(DUPLICATE_ID));
                return;
            }
            Some(id) => id,
            None => {
                while st.ids.contains_key(&st.next_id) {
                    st.next_id += 1;
                }
                st.next_id += 1;
                st.next_id - 1
            }
        };
        let next = spec.start.unwrap_or(rev + 1);
        let synced = next > rev;
        let key = inner.next_key;
        inner.next_key += 1;
        st.ids.insert(id, key);
        if !synced {
            st.unsynced += 1;
        }
        let w = Watcher {
            stream,
            id,
            span,
            next,
            synced,
            filters: Filters {
                no_put: spec.no_put,
                no_delete: spec.no_delete,
            },
            prev_kv: spec.prev_kv,
            fragment: spec.fragment,
            progress_notify: spec.progress_notify,
            quiet: true,
            batch: Vec::new(),
        };
        if synced {
            inner.synced.insert(&w.span, key);
        } else {
            inner.unsynced.insert(key);
        }
        inner.watchers.insert(key, w);
        permit.send(Out::Created {
            watch_id: id,
            revision: rev,
        });
        drop(guard);
        if !synced {
            self.wake.notify_one();
        }
    }

    /// Cancels watcher `watch_id` of `stream`; as etcd, an unknown id gets
    /// no reply.
    pub(crate) fn cancel(&self, stream: StreamId, watch_id: i64, permit: Permit<'_, Out>) {
        let mut inner = self.inner.lock();
        let Some(&key) = inner
            .streams
            .get(&stream)
            .and_then(|st| st.ids.get(&watch_id))
        else {
            return;
        };
        inner.remove(key);
        permit.send(Out::Canceled {
            watch_id,
            revision: inner.rev,
            compact_revision: 0,
        });
        inner.answer_progress(stream);
    }

    /// Answers a progress request at once if every watcher of the stream is
    /// synced; otherwise once they are.
    pub(crate) fn request_progress(&self, stream: StreamId, permit: Permit<'_, Out>) {
        let mut inner = self.inner.lock();
        if !inner.streams.contains_key(&stream) {
            return;
        }
        if inner.stream_caught_up(stream) {
            permit.send(Out::Progress {
                watch_id: -1,
                revision: inner.rev,
            });
        } else {
            // Answered by the sync thread or by a later apply.
            inner.pending.insert(stream);
        }
    }

    /// The sync thread: catch-up rounds while there is work, progress ticks.
    fn run(&self, progress_interval: Duration) {
        let mut next_tick = Instant::now() + progress_interval;
        let mut backoff = false;
        loop {
            let mut inner = self.inner.lock();
            if inner.closed {
                return;
            }
            let now = Instant::now();
            if now >= next_tick {
                inner.tick();
                next_tick = now + progress_interval;
            }
            let busy = inner.has_work();
            if !busy || backoff {
                let until = if busy { now + RETRY } else { next_tick };
                self.wake.wait_until(&mut inner, until.min(next_tick));
                backoff = false;
                continue;
            }
            drop(inner);
            backoff = !self.sync_round();
        }
    }

    /// One catch-up round. Returns whether anything moved; false means
    /// every stream concerned was full, so the caller backs off.
    fn sync_round(&self) -> bool {
        let (target, compact, picks) = {
            let inner = self.inner.lock();
            // A stream with no room would refuse what a history read
            // yields: skip its watchers until it drains.
            let has_room = |w: &Watcher| {
                inner
                    .streams
                    .get(&w.stream)
                    .is_some_and(|st| st.tx.capacity() > 0)
            };
            let picks: Vec<Pick> = inner
                .unsynced
                .iter()
                .filter_map(|key| inner.watchers.get(key).map(|w| (key, w)))
                .filter(|(_, w)| has_room(w))
                .take(MAX_WATCHERS_PER_ROUND)
                .map(|(key, w)| Pick {
                    key: *key,
                    next: w.next,
                    span: w.span.clone(),
                    filters: w.filters,
                })
                .collect();
            (inner.rev, inner.compact, picks)
        };

        // etcd's compact revision is -1 before the first compaction: a
        // start below it is cancelled as compacted, and a start of -1 reads
        // no history (etcd scans from an impossible revision) and so is
        // "from now".
        let compact = if compact == 0 { -1 } else { compact };
        // Read one page of history for every pick that can be served.
        let mut group = Group::default();
        let mut from = i64::MAX;
        for p in picks
            .iter()
            .filter(|p| p.next >= compact.max(1) && p.next <= target)
        {
            group.insert(&p.span, p.key);
            from = from.min(p.next);
        }
        let page = if from <= target {
            match self
                .store
                .history(from, target, MAX_PAGE_REVISIONS, |k| group.any_match(k))
            {
                Ok(page) => Some(page),
                // A compaction came in: the next round cancels those below it.
                Err(StorageError::Compacted) => return true,
                Err(e) => {
                    tracing::error!(error = %e, "watch catch-up could not read history");
                    return false;
                }
            }
        } else {
            None
        };
        let covered = page.as_ref().map_or(target + 1, |p| p.next);
        let mut batches = split(&picks, &group, page);

        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let mut moved = false;
        let mut streams = HashSet::new();
        for p in &picks {
            let Some(w) = inner.watchers.get_mut(&p.key) else {
                continue;
            };
            if w.synced || w.next != p.next {
                continue;
            }
            let Some(st) = inner.streams.get(&w.stream) else {
                continue;
            };
            if p.next < compact {
                let cancel = Out::Canceled {
                    watch_id: w.id,
                    revision: 0,
                    compact_revision: compact,
                };
                if !matches!(st.tx.try_send(cancel), Err(TrySendError::Full(_))) {
                    streams.insert(w.stream);
                    inner.remove(p.key);
                    moved = true;
                }
                continue;
            }
            if let Some(events) = batches.remove(&p.key) {
                let out = Out::Events {
                    watch_id: w.id,
                    revision: target,
                    events,
                    prev_kv: w.prev_kv,
                    fragment: w.fragment,
                };
                if let Err(TrySendError::Full(_)) = st.tx.try_send(out) {
                    continue;
                }
                w.quiet = false;
            }
            w.next = if p.next < 1 {
                target + 1
            } else {
                w.next.max(covered)
            };
            moved = true;
            if w.next > inner.rev {
                streams.insert(w.stream);
                inner.mark_synced(p.key);
            }
        }
        for stream in streams {
            inner.answer_progress(stream);
        }
        inner.answer_pending() || moved
    }
}

/// Splits a history page into each pick's events.
fn split(picks: &[Pick], group: &Group, page: Option<HistoryPage>) -> KeyMap<Vec<Arc<Event>>> {
    let mut batches: KeyMap<Vec<Arc<Event>>> = KeyMap::default();
    let Some(page) = page else {
        return batches;
    };
    let picks: KeyMap<&Pick> = picks.iter().map(|p| (p.key, p)).collect();
    for ev in page.events {
        let ev = Arc::new(ev);
        let (key, rev) = key_rev(&ev);
        group.for_each_match(key, |k| {
            let p = picks[&k];
            if rev >= p.next && p.filters.wants(&ev) {
                batches.entry(k).or_default().push(ev.clone());
            }
        });
    }
    batches
}

fn key_rev(ev: &Event) -> (&[u8], i64) {
    let kv = ev
        .kv
        .as_ref()
        .expect("invariant: the store's events carry a kv");
    (&kv.key, kv.mod_revision)
}

impl Observer for Hub {
    fn applied(&self, changes: Changes) {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        inner.rev = changes.revision;
        inner.compact = changes.compact;
        if changes.events.is_empty() || inner.watchers.is_empty() {
            inner.answer_pending();
            return;
        }
        // Each watcher collects its events in its own `batch`; `touched`
        // lists the watchers that got any, in first-event order.
        let mut touched = Vec::new();
        for ev in changes.events {
            let ev = Arc::new(ev);
            let (key, rev) = key_rev(&ev);
            let watchers = &mut inner.watchers;
            inner.synced.for_each_match(key, |k| {
                let w = watchers
                    .get_mut(&k)
                    .expect("invariant: a synced watcher is registered");
                if rev >= w.next && w.filters.wants(&ev) {
                    if w.batch.is_empty() {
                        touched.push(k);
                    }
                    w.batch.push(ev.clone());
                }
            });
        }
        let mut slow = Vec::new();
        for key in touched {
            let w = inner
                .watchers
                .get_mut(&key)
                .expect("invariant: a synced watcher is registered");
            let events = std::mem::take(&mut w.batch);
            let Some(st) = inner.streams.get(&w.stream) else {
                continue;
            };
            let first = key_rev(&events[0]).1;
            let out = Out::Events {
                watch_id: w.id,
                revision: changes.revision,
                events,
                prev_kv: w.prev_kv,
                fragment: w.fragment,
            };
            match st.tx.try_send(out) {
                Ok(()) => w.quiet = false,
                Err(TrySendError::Full(_)) => slow.push((key, first)),
                // The stream is going; its task removes the watchers.
                Err(TrySendError::Closed(_)) => {}
            }
        }
        for (key, first) in &slow {
            inner.mark_unsynced(*key, *first);
        }
        // After the events: a progress request waiting for a future
        // start may now be answered behind them.
        inner.answer_pending();
        if slow.is_empty() {
            return;
        }
        drop(guard);
        self.wake.notify_one();
    }

    fn replaced(&self, revision: i64, compact: i64) {
        let mut inner = self.inner.lock();
        // Synced watchers have everything up to the old revision; the rest
        // comes from the new store's history (or a compaction cancel).
        let old = inner.rev;
        inner.rev = revision;
        inner.compact = compact;
        let synced: Vec<Key> = inner
            .watchers
            .iter()
            .filter(|(_, w)| w.synced)
            .map(|(k, _)| *k)
            .collect();
        for key in synced {
            inner.mark_unsynced(key, old + 1);
        }
        drop(inner);
        self.wake.notify_one();
    }
}
