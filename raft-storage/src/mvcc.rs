//! The MVCC store: etcd's revision model on one sled tree.
//!
//! # On-disk layout (tree `mvcc`)
//!
//! ```text
//! b'r' | main u64 BE | sub u64 BE [| b't']  -> mvccpb::KeyValue (prost)   one per change
//! b"m/applied"       -> postcard(Option<LogId>)   last applied log id
//! b"m/membership"    -> postcard(StoredMembership)
//! b"m/rev"           -> i64 BE                    current revision
//! b"m/compact"       -> i64 BE                    compact revision (scheduled)
//! b"m/compact_done"  -> i64 BE                    physical compaction finished up to
//! b"m/redo"          -> postcard(writes)          only while an apply call writes
//! b"l/" | id i64 BE  -> lease (see `lease.rs`)
//! b"a/" | member u64 BE | alarm i32 BE -> empty     an active alarm
//! ```
//!
//! A tombstone's value is a `KeyValue` with only `key` and `mod_revision`.
//!
//! # Invariants
//! - Each apply call's writes (the changes of every entry, the applied log
//!   id and the revisions) are crash-atomic: a redo record, or one sled
//!   batch when large (see [`commit`]). After an open, the store is exactly
//!   at some applied log id, never between.
//! - The revision rises by exactly 1 per txn that changes anything.
//! - Apply is deterministic and never reads the clock.
//! - The index is changed only under the `state` write lock, and readers
//!   see it only after the writes that back it are in sled.
//! - Physical compaction only deletes revisions the index has forgotten.
//!
//! # Lock order
//! `state` before `gate`. Reads hold `gate` (shared) while they fetch values,
//! so physical compaction (which takes it exclusively, one small batch at a
//! time) never deletes a revision a read is about to fetch. A snapshot build
//! pauses compaction instead of holding `gate`, so reads never queue behind
//! a compaction batch that waits for a long build.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use cairn_proto::etcdserverpb::{
    alarm_request::AlarmAction,
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op, response_op, AlarmMember, AlarmRequest, AlarmResponse, AlarmType,
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    LeaseCheckpointRequest, LeaseCheckpointResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::{event::EventType, Event, KeyValue};
use openraft::{Entry, EntryPayload, LogId, StoredMembership};
use parking_lot::{Mutex, RwLock};
use prost::Message;

use crate::changes::{Changes, HistoryPage, Observer};
use crate::defrag::Defragmented;
use crate::engine::Engine;
use crate::error::{ApplyError, Error, Result};
use crate::index::{Index, KeyRange};
use crate::lease::{self, Lease, Leases};
use crate::revision::{self, Revision};
use crate::typ::{Member, NodeId, Request, Response, TypeConfig};

pub(crate) const META_APPLIED: &[u8] = b"m/applied";
pub(crate) const META_MEMBERSHIP: &[u8] = b"m/membership";
pub(crate) const META_REV: &[u8] = b"m/rev";
pub(crate) const META_COMPACT: &[u8] = b"m/compact";
pub(crate) const META_COMPACT_DONE: &[u8] = b"m/compact_done";
/// An apply call's writes while they are being made (see [`commit`]).
const META_REDO: &[u8] = b"m/redo";
/// The prefix of alarm records.
pub(crate) const ALARM_PREFIX: &[u8] = b"a/";

/// The record key of `alarm` raised for `member`.
pub(crate) fn alarm_key(member: u64, alarm: i32) -> Vec<u8> {
    let mut k = ALARM_PREFIX.to_vec();
    k.extend_from_slice(&member.to_be_bytes());
    k.extend_from_slice(&alarm.to_be_bytes());
    k
}

/// Parses an alarm record key.
pub(crate) fn parse_alarm_key(k: &[u8]) -> Option<(u64, i32)> {
    let rest = k.strip_prefix(ALARM_PREFIX)?;
    if rest.len() != 12 {
        return None;
    }
    let member = u64::from_be_bytes(rest[..8].try_into().ok()?);
    let alarm = i32::from_be_bytes(rest[8..].try_into().ok()?);
    Some((member, alarm))
}

/// The bytes a record takes in use, as the quota counts them.
fn record_bytes(k: &[u8], v: &[u8]) -> u64 {
    (k.len() + v.len()) as u64
}

/// An apply call's writes, in the order they are made.
#[derive(Default)]
struct Ops {
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    bytes: usize,
}

impl Ops {
    fn insert(&mut self, k: impl Into<Vec<u8>>, v: impl Into<Vec<u8>>) {
        let (k, v) = (k.into(), v.into());
        self.bytes += k.len() + v.len();
        self.writes.push((k, Some(v)));
    }

    fn remove(&mut self, k: impl Into<Vec<u8>>) {
        let k = k.into();
        self.bytes += k.len();
        self.writes.push((k, None));
    }
}

/// Above this many bytes an apply call's writes go to sled as one batch;
/// at or below it, through a redo record.
const REDO_MAX_BYTES: usize = 64 << 10;

/// Writes `ops` to `tree` so that a crash keeps all of them or none.
///
/// sled makes a batch crash-atomic by writing out its log buffer before
/// and after the batch, each write synced, and by blocking every reader
/// and writer in the process meanwhile: three synced writes an apply
/// instead of one. Single writes need none of that, and sled recovers its
/// log as a prefix, in order. So a small call writes its ops as one redo
/// record first, then the ops one by one, then removes the record: a crash
/// leaves either no trace of the call, or all of it, or the record, which
/// [`finish_redo`] replays at open. Every byte is written twice, so a
/// large call (a member catching up) takes the batch.
fn commit(tree: &sled::Tree, ops: Ops) -> Result<()> {
    if ops.bytes > REDO_MAX_BYTES {
        let mut batch = sled::Batch::default();
        for (k, v) in ops.writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        return Ok(tree.apply_batch(batch)?);
    }
    let record = postcard::to_stdvec(&ops.writes).expect("invariant: byte strings serialize");
    tree.insert(META_REDO, record)?;
    #[cfg(test)]
    if let Some(n) = tests::CUT_AFTER.with(std::cell::Cell::take) {
        redo(tree, ops.writes.into_iter().take(n).collect())?;
        return Err(Error::Io(std::io::Error::other("cut short by the test")));
    }
    redo(tree, ops.writes)?;
    tree.remove(META_REDO)?;
    Ok(())
}

fn redo(tree: &sled::Tree, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
    for (k, v) in writes {
        match v {
            Some(v) => tree.insert(k, v)?,
            None => tree.remove(k)?,
        };
    }
    Ok(())
}

/// Finishes the apply call a crash cut short, if any: its writes are set
/// again (they are idempotent) and its redo record removed.
fn finish_redo(tree: &sled::Tree) -> Result<()> {
    let Some(record) = tree.get(META_REDO)? else {
        return Ok(());
    };
    let writes = postcard::from_bytes(&record)
        .map_err(|e| Error::Corruption(format!("apply's redo record: {e}")))?;
    redo(tree, writes)?;
    tree.remove(META_REDO)?;
    Ok(())
}

/// Changes deleted per physical-compaction batch; apply waits at most for
/// one batch.
const COMPACTION_BATCH: usize = 1000;
/// Pause between compaction batches, so apply and reads get the gate.
const COMPACTION_PAUSE: Duration = Duration::from_millis(1);

pub(crate) type Membership = StoredMembership<NodeId, Member>;

/// What readers and apply share, behind the `state` lock.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub index: Index,
    /// The current revision: 1 on an empty store.
    pub current: i64,
    /// The compact revision; 0 when never compacted.
    pub compact: i64,
    pub applied: Option<LogId<NodeId>>,
    pub membership: Membership,
    pub leases: Leases,
    /// Active alarms: (member id, `AlarmType` as i32).
    pub alarms: BTreeSet<(u64, i32)>,
}

/// A physical compaction to run: delete every change at or below `rev`
/// that is not in `keep`.
struct Job {
    rev: i64,
    keep: HashSet<Revision>,
}

/// What the compactor thread shares with the store. Kept apart from
/// [`Shared`] so the thread never owns the store, whose drop joins it.
pub(crate) struct Compaction {
    /// Shared by reads that fetch values; exclusive for a compaction batch.
    pub gate: RwLock<()>,
    /// The revision physical compaction has finished at.
    compacted: tokio::sync::watch::Sender<i64>,
    /// Set when the store is dropped: stop between batches.
    stop: AtomicBool,
    /// Snapshot builds under way; batches wait while it is above zero.
    paused: AtomicUsize,
    /// Bytes of revision records on disk (keys and values), what the
    /// quota counts: apply adds, physical compaction subtracts.
    pub(crate) in_use: AtomicU64,
}

/// Keeps physical compaction paused while it lives.
pub(crate) struct Pause<'a>(&'a Compaction);

impl Drop for Pause<'_> {
    fn drop(&mut self) {
        self.0.paused.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Compaction {
    /// Pauses physical compaction: returns once no batch is running, and
    /// none starts until the guard is dropped.
    pub(crate) fn pause(&self) -> Pause<'_> {
        self.paused.fetch_add(1, Ordering::SeqCst);
        // A batch checks `paused` after it takes the gate: waiting for the
        // gate once is enough to see any running batch out.
        drop(self.gate.read());
        Pause(self)
    }
}

pub(crate) struct Shared {
    /// The database; its `mvcc` tree holds the records. Readers take its
    /// current generation under `state` (see `engine`): every revision the
    /// index names then is in that generation.
    pub engine: Arc<Engine>,
    /// Whole-store copies take turns: snapshot builds hold it shared while
    /// they read the `mvcc` tree; an install (which clears and reloads the
    /// tree) and a defragment (which copies and switches it) hold it
    /// exclusively. Taken before `engine`'s `writes` and `state`.
    pub copies: RwLock<()>,
    pub state: RwLock<State>,
    pub comp: Arc<Compaction>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    compactor: Mutex<Option<JoinHandle<()>>>,
    /// Weak, so the observer (which holds a store) never keeps the store
    /// alive.
    observer: RwLock<Option<Weak<dyn Observer>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.comp.stop.store(true, Ordering::Relaxed);
        self.jobs.lock().take();
        if let Some(h) = self.compactor.lock().take() {
            let _ = h.join();
        }
    }
}

/// A read handle on the MVCC state; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.state.read();
        f.debug_struct("Store")
            .field("revision", &st.current)
            .field("compact", &st.compact)
            .finish()
    }
}

fn read_i64(tree: &sled::Tree, key: &[u8]) -> Result<Option<i64>> {
    match tree.get(key)? {
        None => Ok(None),
        Some(v) => {
            let b: [u8; 8] = v.as_ref().try_into().map_err(|_| {
                Error::Corruption(format!("{} is not 8 bytes", String::from_utf8_lossy(key)))
            })?;
            Ok(Some(i64::from_be_bytes(b)))
        }
    }
}

fn read_postcard<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    key: &[u8],
) -> Result<Option<T>> {
    match tree.get(key)? {
        None => Ok(None),
        Some(v) => postcard::from_bytes(&v)
            .map(Some)
            .map_err(|e| Error::Corruption(format!("{}: {e}", String::from_utf8_lossy(key)))),
    }
}

pub(crate) fn encode_postcard<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("invariant: our meta types always serialize")
}

fn decode_kv(rev: Revision, bytes: &[u8]) -> Result<KeyValue> {
    KeyValue::decode(bytes)
        .map_err(|e| Error::Corruption(format!("revision {}.{}: {e}", rev.main, rev.sub)))
}

impl Store {
    /// Opens the store on the engine's `mvcc` tree: reads the meta,
    /// rebuilds the index, and resumes an unfinished physical compaction.
    pub(crate) fn open(engine: Arc<Engine>) -> Result<Store> {
        finish_redo(&engine.backend().mvcc)?;
        let Loaded {
            state,
            done,
            resume,
            in_use,
        } = load_state(&engine.backend().mvcc)?;
        let (tx, _) = tokio::sync::watch::channel(done);
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let comp = Arc::new(Compaction {
            gate: RwLock::new(()),
            compacted: tx,
            stop: AtomicBool::new(false),
            paused: AtomicUsize::new(0),
            in_use: AtomicU64::new(in_use),
        });
        let handle = {
            let (engine, comp) = (engine.clone(), comp.clone());
            std::thread::Builder::new()
                .name("cairn-compactor".into())
                .spawn(move || compactor(&engine, &comp, jobs_rx))
                .map_err(Error::Io)?
        };
        let shared = Arc::new(Shared {
            engine,
            copies: RwLock::new(()),
            state: RwLock::new(state),
            comp,
            jobs: Mutex::new(Some(jobs_tx)),
            compactor: Mutex::new(None),
            observer: RwLock::new(None),
        });
        *shared.compactor.lock() = Some(handle);
        let store = Store { shared };
        if let Some(job) = resume {
            store.schedule(job);
        }
        Ok(store)
    }

    fn schedule(&self, job: Job) {
        if let Some(tx) = self.shared.jobs.lock().as_ref() {
            // The compactor only stops when the store is dropped.
            let _ = tx.send(job);
        }
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.shared.state.read().current
    }

    /// The compact revision (0 when never compacted). Reads below it fail.
    pub fn compact_revision(&self) -> i64 {
        self.shared.state.read().compact
    }

    /// The last applied log index, if any.
    pub fn applied_index(&self) -> Option<u64> {
        self.shared.state.read().applied.map(|l| l.index)
    }

    /// Lease `id`, with its keys, if it exists.
    pub fn lease(&self, id: i64) -> Option<Lease> {
        self.shared.state.read().leases.get(id)
    }

    /// Every lease ID, ascending.
    pub fn lease_ids(&self) -> Vec<i64> {
        self.shared.state.read().leases.ids()
    }

    /// Number of keys that have any history kept.
    pub fn key_count(&self) -> usize {
        self.shared.state.read().index.len()
    }

    /// How many change records (revisions) are on disk; O(records), for
    /// tests and diagnostics.
    pub fn stored_revisions(&self) -> usize {
        self.shared
            .engine
            .backend()
            .mvcc
            .scan_prefix([revision::PREFIX])
            .count()
    }

    /// The bytes the data dir's sled database takes on disk (0 if sled
    /// cannot tell).
    pub fn size_on_disk(&self) -> u64 {
        self.shared.engine.backend().db.size_on_disk().unwrap_or(0)
    }

    /// The bytes the quota counts: every revision record on disk, keys and
    /// values. Compaction lowers it as soon as its physical part deleted
    /// the records; sled reuses the space they took.
    pub fn size_in_use(&self) -> u64 {
        self.shared.comp.in_use.load(Ordering::SeqCst)
    }

    /// etcd's Defragment: copies the live content into a new database
    /// generation and switches to it, giving the old file's space back to
    /// the file system. Writes are blocked only while the records written
    /// during the copy are copied too and the switch is made; reads are
    /// never blocked. See `defrag` for the steps.
    ///
    /// # Errors
    /// Storage and IO errors; the store then goes on with the database it
    /// had.
    pub fn defragment(&self) -> Result<Defragmented> {
        crate::defrag::defragment(self)
    }

    /// The active alarms, as (member id, `AlarmType` as i32), ascending.
    pub fn alarms(&self) -> Vec<(u64, i32)> {
        self.shared.state.read().alarms.iter().copied().collect()
    }

    /// etcd's HashKV: a hash of the MVCC history up to main revision `rev`
    /// (0: the current revision). Returns (hash, compact revision, the
    /// revision hashed).
    ///
    /// The hash covers what every member keeps whatever its physical
    /// compaction's progress: the values live at the compact revision and
    /// every change from the compact revision to `rev`. Members that
    /// applied the same log agree on it.
    ///
    /// # Errors
    /// [`Error::Compacted`] or [`Error::FutureRevision`] for `rev` out of
    /// reach; storage errors otherwise.
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64, i64)> {
        let st = self.shared.state.read();
        let rev = if rev <= 0 { st.current } else { rev };
        if rev > st.current {
            return Err(Error::FutureRevision);
        }
        if rev < st.compact {
            return Err(Error::Compacted);
        }
        let compact = st.compact;
        let kept = if compact > 0 {
            let all = RangeRequest {
                key: vec![0],
                range_end: vec![0],
                revision: compact,
                ..Default::default()
            };
            plan_range(&st.index, &all, st.current, compact)?.revs
        } else {
            Vec::new()
        };
        let _gate = self.shared.comp.gate.read();
        let backend = self.shared.engine.backend();
        drop(st);
        let tree = &backend.mvcc;
        let mut h = crc32fast::Hasher::new();
        let mut kept: Vec<Revision> = kept.into_iter().filter(|r| r.main < compact).collect();
        kept.sort();
        for r in kept {
            let k = r.to_key(false);
            let v = tree.get(&k)?.ok_or_else(|| {
                Error::Corruption(format!("revision {}.{} is not on disk", r.main, r.sub))
            })?;
            h.update(&k);
            h.update(&v);
        }
        for item in tree.range(Revision::lower_bound(compact)..Revision::lower_bound(rev + 1)) {
            let (k, v) = item?;
            h.update(&k);
            h.update(&v);
        }
        Ok((h.finalize(), compact, rev))
    }

    /// etcd's Hash: a hash of everything this member's `mvcc` tree holds,
    /// meta included. Members differ in meta and in physical compaction's
    /// progress, so only [`Store::hash_kv`] is comparable across members.
    ///
    /// # Errors
    /// Storage errors.
    pub fn hash(&self) -> Result<u32> {
        let _st = self.shared.state.read();
        let _gate = self.shared.comp.gate.read();
        let mut h = crc32fast::Hasher::new();
        for item in self.shared.engine.backend().mvcc.iter() {
            let (k, v) = item?;
            h.update(&k);
            h.update(&v);
        }
        Ok(h.finalize())
    }

    /// Waits until physical compaction has finished at or above `rev`.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future only stops waiting.
    pub async fn wait_compacted(&self, rev: i64) {
        let mut rx = self.shared.comp.compacted.subscribe();
        // The sender lives as long as the store, which we hold.
        let _ = rx.wait_for(|done| *done >= rev).await;
    }

    /// Serves etcd's Range at the request's revision (0: current).
    ///
    /// The response header carries only `revision`, the current revision.
    ///
    /// # Errors
    /// [`Error::Compacted`] or [`Error::FutureRevision`] for a revision out
    /// of reach; storage errors otherwise.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let st = self.shared.state.read();
        let plan = plan_range(&st.index, req, st.current, st.compact)?;
        let _gate = self.shared.comp.gate.read();
        let backend = self.shared.engine.backend();
        drop(st);
        finish_range(req, plan, |rev| fetch(&backend.mvcc, rev))
    }

    /// Runs a read-only txn ([`read_only_ranges`]) at the current
    /// revision, without the log, as apply would run it; `None` if `t` is
    /// not read-only. The header carries only `revision`.
    ///
    /// # Errors
    /// Storage errors; the inner error is what apply would refuse it with.
    pub fn read_txn(&self, t: &TxnRequest) -> Option<Result<Result<TxnResponse, ApplyError>>> {
        read_only_ranges(t)?;
        let st = self.shared.state.read();
        let _gate = self.shared.comp.gate.read();
        let backend = self.shared.engine.backend();
        let mut view = ReadView {
            st: &st,
            tree: &backend.mvcc,
        };
        Some(view.txn(t))
    }

    /// Applies committed entries in one atomic batch.
    pub(crate) fn apply(&self, entries: Vec<Entry<TypeConfig>>) -> Result<Vec<Response>> {
        let w = self.shared.engine.write();
        let mut st = self.shared.state.write();
        let mut batch = Ops::default();
        let mut written = Written::default();
        let mut jobs = Vec::new();
        let mut out = Vec::with_capacity(entries.len());
        let (start_compact, start_rev) = (st.compact, st.current);
        let mut membership_changed = false;
        for entry in entries {
            st.applied = Some(entry.log_id);
            let resp = match entry.payload {
                EntryPayload::Blank => Response::Empty,
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(entry.log_id), m);
                    membership_changed = true;
                    Response::Empty
                }
                EntryPayload::Normal(req) => {
                    let mut w = Writer {
                        st: &mut st,
                        tree: &w.mvcc,
                        batch: &mut batch,
                        written: &mut written,
                        sub: 0,
                    };
                    w.request(req, &mut jobs)?
                }
            };
            out.push(resp);
        }
        // What did not change stays as the last batch that changed it wrote
        // it: the common batch of puts writes its kvs, the applied id and
        // the revision only.
        batch.insert(META_APPLIED, encode_postcard(&st.applied));
        if membership_changed {
            batch.insert(META_MEMBERSHIP, encode_postcard(&st.membership));
        }
        if st.current != start_rev {
            batch.insert(META_REV, st.current.to_be_bytes());
        }
        if st.compact != start_compact {
            batch.insert(META_COMPACT, st.compact.to_be_bytes());
        }
        commit(&w.mvcc, batch)?;
        self.shared
            .comp
            .in_use
            .fetch_add(written.bytes, Ordering::SeqCst);
        let changes = Changes {
            events: written.events,
            revision: st.current,
            compact: st.compact,
        };
        drop(st);
        drop(w);
        for job in jobs {
            self.schedule(job);
        }
        // After the lock: an event is published only once reads see it.
        if let Some(observer) = self.observer() {
            observer.applied(changes);
        }
        Ok(out)
    }

    /// Hangs `observer` on the store; it replaces any earlier one. The
    /// store holds it weakly: once dropped, it is no longer told.
    pub fn set_observer(&self, observer: Weak<dyn Observer>) {
        *self.shared.observer.write() = Some(observer);
    }

    fn observer(&self) -> Option<Arc<dyn Observer>> {
        self.shared.observer.read().as_ref().and_then(Weak::upgrade)
    }

    /// Tells the observer that a snapshot replaced the store's contents.
    pub(crate) fn notify_replaced(&self) {
        let (revision, compact) = {
            let st = self.shared.state.read();
            (st.current, st.compact)
        };
        if let Some(observer) = self.observer() {
            observer.replaced(revision, compact);
        }
    }

    /// Reads the changes of revisions `from..=to` back, in revision order,
    /// covering at most `max_revisions` revisions that have changes. Only
    /// changes whose key `keep` accepts are returned.
    ///
    /// Every change at or above the compact revision is on disk (the
    /// compaction keeps even tombstones at the compact revision), so a page
    /// never has gaps.
    ///
    /// # Errors
    /// [`Error::Compacted`] if `from` is below the compact revision;
    /// storage errors otherwise.
    pub fn history(
        &self,
        from: i64,
        to: i64,
        max_revisions: usize,
        mut keep: impl FnMut(&[u8]) -> bool,
    ) -> Result<HistoryPage> {
        let st = self.shared.state.read();
        if from < st.compact {
            return Err(Error::Compacted);
        }
        // Held through the scan: physical compaction deletes nothing at or
        // above the compact revision read above while it is held.
        let _gate = self.shared.comp.gate.read();
        let backend = self.shared.engine.backend();
        drop(st);
        let mut page = HistoryPage {
            events: Vec::new(),
            next: to.saturating_add(1),
        };
        if from > to {
            page.next = from;
            return Ok(page);
        }
        let (mut revisions, mut last) = (0, 0);
        let range = Revision::lower_bound(from)..Revision::lower_bound(to.saturating_add(1));
        for item in backend.mvcc.range(range) {
            let (k, v) = item?;
            let (rev, tombstone) = Revision::from_key(&k)
                .ok_or_else(|| Error::Corruption(format!("bad revision key {k:?}")))?;
            if rev.main != last {
                if revisions == max_revisions {
                    page.next = rev.main;
                    break;
                }
                revisions += 1;
                last = rev.main;
            }
            let kv = decode_kv(rev, &v)?;
            if keep(&kv.key) {
                page.events.push(event(kv, tombstone));
            }
        }
        Ok(page)
    }

    /// The key's value as of main revision `rev` (None if it did not exist
    /// then, or if `rev` is below the compact revision): what a watcher's
    /// `prev_kv` shows for an event at `rev + 1`.
    ///
    /// # Errors
    /// Storage errors only.
    pub fn value_at(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>> {
        let st = self.shared.state.read();
        if rev < st.compact || rev > st.current {
            return Ok(None);
        }
        let Some(at) = st.index.get(key).and_then(|ki| ki.at(rev)) else {
            return Ok(None);
        };
        let _gate = self.shared.comp.gate.read();
        let backend = self.shared.engine.backend();
        drop(st);
        fetch(&backend.mvcc, at).map(Some)
    }

    /// The applied log id and membership, for openraft.
    pub(crate) fn applied_state(&self) -> (Option<LogId<NodeId>>, Membership) {
        let st = self.shared.state.read();
        (st.applied, st.membership.clone())
    }

    /// Takes the state a snapshot's load rebuilt (see [`Rebuild`]). The
    /// caller holds the state write lock (`st`) and a write guard.
    pub(crate) fn reload(&self, st: &mut State, loaded: Loaded) {
        let Loaded {
            state,
            done,
            resume,
            in_use,
        } = loaded;
        *st = state;
        self.shared.comp.in_use.store(in_use, Ordering::SeqCst);
        self.shared.comp.compacted.send_replace(done);
        if let Some(job) = resume {
            self.schedule(job);
        }
    }
}

/// The state a [`Rebuild`] produced.
pub(crate) struct Loaded {
    state: State,
    /// The revision physical compaction had finished at.
    done: i64,
    /// The physical compaction to resume, if one was cut short.
    resume: Option<Job>,
    /// Bytes of revision records.
    in_use: u64,
}

/// Rebuilds the state (index, leases, alarms) from the store's records,
/// fed one by one: from the tree at open, or from a snapshot file as it
/// loads (which saves a second pass over a freshly loaded tree). Revision
/// records must come in revision order; lease and alarm records in any
/// order.
pub(crate) struct Rebuild {
    st: State,
    in_use: u64,
    /// The lease of each key's newest value, for keys whose newest change
    /// is a put with a lease: their attachments.
    attached: HashMap<Vec<u8>, i64>,
}

impl Rebuild {
    /// Starts from the meta: the current and compact revisions, the applied
    /// log id and the membership.
    pub(crate) fn new(
        current: i64,
        compact: i64,
        applied: Option<LogId<NodeId>>,
        membership: Membership,
    ) -> Self {
        Rebuild {
            st: State {
                current,
                compact,
                applied,
                membership,
                index: Index::default(),
                leases: Leases::default(),
                alarms: BTreeSet::new(),
            },
            in_use: 0,
            attached: HashMap::new(),
        }
    }

    /// Takes one record of the `mvcc` tree (not a meta record).
    pub(crate) fn record(&mut self, k: &[u8], v: &[u8]) -> Result<()> {
        if k.first() == Some(&revision::PREFIX) {
            return self.revision(k, v);
        }
        if k.starts_with(lease::PREFIX) {
            return self.st.leases.restore(k, v);
        }
        let alarm =
            parse_alarm_key(k).ok_or_else(|| Error::Corruption(format!("bad record key {k:?}")))?;
        self.st.alarms.insert(alarm);
        Ok(())
    }

    fn revision(&mut self, k: &[u8], v: &[u8]) -> Result<()> {
        let st = &mut self.st;
        let (rev, tombstone) = Revision::from_key(k)
            .ok_or_else(|| Error::Corruption(format!("bad revision key {k:?}")))?;
        if rev.main > st.current {
            return Err(Error::Corruption(format!(
                "change at revision {} beyond the current revision {}",
                rev.main, st.current
            )));
        }
        self.in_use += record_bytes(k, v);
        let kv = decode_kv(rev, v)?;
        st.index
            .restore(&kv.key, rev, tombstone, kv.create_revision, kv.version);
        if tombstone || kv.lease == 0 {
            self.attached.remove(&kv.key);
        } else {
            self.attached.insert(kv.key, kv.lease);
        }
        Ok(())
    }

    /// Attaches keys to their leases and compacts the index at the compact
    /// revision (once: that also yields what a resumed physical compaction
    /// must keep). `done` is the revision physical compaction finished at.
    pub(crate) fn finish(self, done: i64) -> Result<Loaded> {
        let Rebuild {
            mut st,
            attached,
            in_use,
        } = self;
        for (key, lease) in attached {
            st.leases.restore_key(&key, lease)?;
        }
        let mut resume = None;
        if st.compact > 0 {
            // Forget what a compaction had removed from the index before a
            // restart; the caller resumes the physical part if it was cut short.
            let keep = st.index.compact(st.compact);
            if st.compact > done {
                resume = Some(Job {
                    rev: st.compact,
                    keep,
                });
            }
        }
        Ok(Loaded {
            state: st,
            done,
            resume,
            in_use,
        })
    }
}

/// Reads meta and rebuilds the state from every record on disk.
fn load_state(tree: &sled::Tree) -> Result<Loaded> {
    let mut rebuild = Rebuild::new(
        read_i64(tree, META_REV)?.unwrap_or(1),
        read_i64(tree, META_COMPACT)?.unwrap_or(0),
        read_postcard(tree, META_APPLIED)?.flatten(),
        read_postcard(tree, META_MEMBERSHIP)?.unwrap_or_default(),
    );
    for prefix in [lease::PREFIX, ALARM_PREFIX, &[revision::PREFIX]] {
        for item in tree.scan_prefix(prefix) {
            let (k, v) = item?;
            rebuild.record(&k, &v)?;
        }
    }
    rebuild.finish(read_i64(tree, META_COMPACT_DONE)?.unwrap_or(0))
}

fn fetch(tree: &sled::Tree, rev: Revision) -> Result<KeyValue> {
    let v = tree.get(rev.to_key(false))?.ok_or_else(|| {
        Error::Corruption(format!(
            "index names revision {}.{} but it is not on disk",
            rev.main, rev.sub
        ))
    })?;
    decode_kv(rev, &v)
}

/// The first half of a Range: which revisions to fetch.
struct RangePlan {
    revs: Vec<Revision>,
    count: usize,
    current: i64,
}

fn needs_all(req: &RangeRequest) -> bool {
    req.sort_order != SortOrder::None as i32
        || req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0
}

fn plan_range(index: &Index, req: &RangeRequest, current: i64, compact: i64) -> Result<RangePlan> {
    let at = if req.revision <= 0 {
        current
    } else {
        req.revision
    };
    if at > current {
        return Err(Error::FutureRevision);
    }
    if at < compact {
        return Err(Error::Compacted);
    }
    let range = KeyRange::new(&req.key, &req.range_end);
    // Fetch one more than the limit to learn `more`; fetch all when sorting
    // or filtering decides which ones are kept.
    let fetch = if req.count_only {
        0
    } else if needs_all(req) || req.limit <= 0 {
        usize::MAX
    } else {
        req.limit as usize + 1
    };
    let mut revs = Vec::new();
    let mut count = 0;
    for (_, rev) in index.range_at(&range, at) {
        if revs.len() < fetch {
            revs.push(rev);
        }
        count += 1;
    }
    Ok(RangePlan {
        revs,
        count,
        current,
    })
}

fn finish_range(
    req: &RangeRequest,
    plan: RangePlan,
    mut fetch: impl FnMut(Revision) -> Result<KeyValue>,
) -> Result<RangeResponse> {
    let mut kvs = plan
        .revs
        .into_iter()
        .map(&mut fetch)
        .collect::<Result<Vec<_>>>()?;
    kvs.retain(|kv| {
        (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
            && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
            && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
            && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
    });
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    let mut order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    if target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    if order != SortOrder::None {
        // Stable, so ties stay in key order.
        kvs.sort_by(|a, b| {
            let o = match target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            if order == SortOrder::Descend {
                o.reverse()
            } else {
                o
            }
        });
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse {
        header: Some(header(plan.current)),
        kvs,
        more,
        count: plan.count as i64,
    })
}

fn header(revision: i64) -> ResponseHeader {
    ResponseHeader {
        revision,
        ..Default::default()
    }
}

/// The changes of one apply call so far: the events the observer gets, and
/// where each put's value is among them, for reads inside the call.
#[derive(Default)]
struct Written {
    events: Vec<Event>,
    puts: HashMap<Revision, usize>,
    /// Bytes of the revision records written, for the quota.
    bytes: u64,
}

/// The watch event for a change record.
fn event(kv: KeyValue, tombstone: bool) -> Event {
    let kind = if tombstone {
        EventType::Delete
    } else {
        EventType::Put
    };
    Event {
        r#type: kind as i32,
        kv: Some(kv),
        prev_kv: None,
    }
}

/// Applies one request. Holds the state write lock through its borrow.
struct Writer<'a> {
    st: &'a mut State,
    tree: &'a sled::Tree,
    batch: &'a mut Ops,
    /// What this apply call wrote so far, not yet in sled.
    written: &'a mut Written,
    /// Changes so far in this request.
    sub: i64,
}

impl Writer<'_> {
    /// The main revision this request writes at.
    fn main(&self) -> i64 {
        self.st.current + 1
    }

    fn live_value(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.st.index.get(key).and_then(|ki| ki.live()) {
            Some(l) => self.value(l.modified).map(Some),
            None => Ok(None),
        }
    }

    /// Applies one request at revision `current + 1` (a batch: each of its
    /// requests in turn, as if each had its own entry).
    fn request(&mut self, req: Request, jobs: &mut Vec<Job>) -> Result<Response> {
        self.sub = 0;
        // A batch's requests are checked one by one, below.
        if self.nospace() && !matches!(req, Request::Batch(_)) && req.adds_data() {
            return Ok(Response::Rejected(ApplyError::NoSpace));
        }
        let resp = match req {
            Request::Put(p) => match self.check_put(&p)? {
                Err(e) => Response::Rejected(e),
                Ok(()) => Response::Put(self.put(&p)?),
            },
            Request::DeleteRange(d) => Response::DeleteRange(self.delete(&d)?),
            Request::Txn(t) => match self.txn(&t)? {
                Err(e) => Response::Rejected(e),
                Ok(r) => Response::Txn(r),
            },
            Request::Compaction(c) => {
                let (resp, job) = self.compact(&c);
                jobs.extend(job);
                resp
            }
            Request::LeaseGrant(g) => self.lease_grant(&g),
            Request::LeaseRevoke(r) => self.lease_revoke(&r)?,
            Request::LeaseCheckpoint(c) => self.lease_checkpoint(&c),
            Request::Alarm(a) => self.alarm(&a),
            Request::Batch(reqs) => {
                let mut out = Vec::with_capacity(reqs.len());
                for r in reqs {
                    out.push(self.request(r, jobs)?);
                }
                return Ok(Response::Batch(out));
            }
        };
        if self.sub > 0 {
            self.st.current += 1;
        }
        Ok(resp)
    }

    fn next_rev(&mut self) -> Revision {
        let rev = Revision::new(self.main(), self.sub);
        self.sub += 1;
        rev
    }

    /// Deletes live `key` at the next sub revision.
    fn tombstone(&mut self, key: &[u8]) {
        let rev = self.next_rev();
        self.st.index.entry(key).tombstone(rev);
        self.st.leases.detach(key);
        let kv = KeyValue {
            key: key.to_vec(),
            mod_revision: rev.main,
            ..Default::default()
        };
        let (k, v) = (rev.to_key(true), kv.encode_to_vec());
        self.written.bytes += record_bytes(&k, &v);
        self.batch.insert(k, v);
        self.written.events.push(event(kv, true));
    }

    fn lease_grant(&mut self, g: &LeaseGrantRequest) -> Response {
        // The proposer picks an ID for a client that leaves it 0.
        if g.id == 0 {
            return Response::Rejected(ApplyError::LeaseNotFound);
        }
        if self.st.leases.contains(g.id) {
            return Response::Rejected(ApplyError::LeaseExists);
        }
        let (k, v) = self.st.leases.grant(g.id, g.ttl);
        self.batch.insert(k, v);
        Response::LeaseGrant(LeaseGrantResponse {
            header: Some(header(self.st.current)),
            id: g.id,
            ttl: g.ttl,
            error: String::new(),
        })
    }

    /// Revokes a lease: its keys are deleted in one revision, in key
    /// order, as etcd does.
    fn lease_revoke(&mut self, r: &LeaseRevokeRequest) -> Result<Response> {
        let Some(keys) = self.st.leases.revoke(r.id) else {
            return Ok(Response::Rejected(ApplyError::LeaseNotFound));
        };
        for key in &keys {
            if self.live_value(key)?.is_none() {
                return Err(Error::Corruption(format!(
                    "lease {:x} holds key {:?}, which is not live",
                    r.id,
                    String::from_utf8_lossy(key)
                )));
            }
            self.tombstone(key);
        }
        self.batch.remove(lease::record_key(r.id));
        Ok(Response::LeaseRevoke(LeaseRevokeResponse {
            header: Some(header(self.read_rev())),
        }))
    }

    fn nospace(&self) -> bool {
        self.st
            .alarms
            .iter()
            .any(|(_, a)| *a == AlarmType::Nospace as i32)
    }

    /// Raises or clears an alarm (GET never comes through the log). As
    /// etcd's alarm store: the response lists the alarm changed, if any;
    /// deactivating an alarm that is not raised changes nothing.
    fn alarm(&mut self, a: &AlarmRequest) -> Response {
        let member = AlarmMember {
            member_id: a.member_id,
            alarm: a.alarm,
        };
        let key = (a.member_id, a.alarm);
        let changed = match AlarmAction::try_from(a.action) {
            Ok(AlarmAction::Activate) if a.alarm != AlarmType::None as i32 => {
                if self.st.alarms.insert(key) {
                    self.batch.insert(alarm_key(key.0, key.1), []);
                }
                true
            }
            Ok(AlarmAction::Deactivate) => {
                let removed = self.st.alarms.remove(&key);
                if removed {
                    self.batch.remove(alarm_key(key.0, key.1));
                }
                removed
            }
            _ => false,
        };
        Response::Alarm(AlarmResponse {
            header: Some(header(self.st.current)),
            alarms: if changed { vec![member] } else { Vec::new() },
        })
    }

    fn lease_checkpoint(&mut self, c: &LeaseCheckpointRequest) -> Response {
        for cp in &c.checkpoints {
            if let Some((k, v)) = self.st.leases.checkpoint(cp.id, cp.remaining_ttl) {
                self.batch.insert(k, v);
            }
        }
        Response::LeaseCheckpoint(LeaseCheckpointResponse {
            header: Some(header(self.st.current)),
        })
    }

    fn compact(&mut self, c: &CompactionRequest) -> (Response, Option<Job>) {
        if c.revision <= self.st.compact {
            return (Response::Rejected(ApplyError::Compacted), None);
        }
        if c.revision > self.st.current {
            return (Response::Rejected(ApplyError::FutureRevision), None);
        }
        self.st.compact = c.revision;
        let keep = self.st.index.compact(c.revision);
        let resp = CompactionResponse {
            header: Some(header(self.st.current)),
        };
        (
            Response::Compaction(resp),
            Some(Job {
                rev: c.revision,
                keep,
            }),
        )
    }
}

/// What a txn runs against: the state at one revision, and writes. The
/// applying [`Writer`] is one (its own writes in the request count); a
/// [`ReadView`] is the other, for read-only txns served without the log,
/// and is never asked to write.
trait TxnTarget {
    /// The key index, leases, and the current and compact revisions.
    fn state(&self) -> &State;
    /// The revision reads see.
    fn read_rev(&self) -> i64;
    /// The record written at `rev`.
    fn value(&self, rev: Revision) -> Result<KeyValue>;
    /// What apply would refuse a put with.
    fn check_put(&self, p: &PutRequest) -> Result<Result<(), ApplyError>>;
    fn put(&mut self, p: &PutRequest) -> Result<PutResponse>;
    fn delete(&mut self, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse>;

    fn check_range(&self, r: &RangeRequest) -> Result<(), ApplyError> {
        if r.revision > self.state().current {
            Err(ApplyError::FutureRevision)
        } else if r.revision > 0 && r.revision < self.state().compact {
            Err(ApplyError::Compacted)
        } else {
            Ok(())
        }
    }

    fn range(&self, r: &RangeRequest) -> Result<RangeResponse> {
        let plan = plan_range(
            &self.state().index,
            r,
            self.read_rev(),
            self.state().compact,
        )?;
        finish_range(r, plan, |rev| self.value(rev))
    }

    fn txn(&mut self, t: &TxnRequest) -> Result<Result<TxnResponse, ApplyError>> {
        // As etcd: every compare on the taken path is decided against the
        // state before the txn, then the chosen ops are checked, then run.
        let mut path = Vec::new();
        self.compare_path(t, &mut path)?;
        let mut i = 0;
        if let Err(e) = self.check_path(t, &path, &mut i)? {
            return Ok(Err(e));
        }
        let mut i = 0;
        let mut resp = self.run_txn(t, &path, &mut i)?;
        resp.header = Some(header(self.read_rev()));
        Ok(Ok(resp))
    }

    fn compare_path(&self, t: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
        let mut ok = true;
        for c in &t.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let Some(request_op::Request::RequestTxn(nested)) = &op.request {
                self.compare_path(nested, path)?;
            }
        }
        Ok(())
    }

    fn check_path(
        &self,
        t: &TxnRequest,
        path: &[bool],
        i: &mut usize,
    ) -> Result<Result<(), ApplyError>> {
        for op in branch(t, path, i) {
            let r = match &op.request {
                Some(request_op::Request::RequestPut(p)) => self.check_put(p)?,
                Some(request_op::Request::RequestRange(r)) => self.check_range(r),
                Some(request_op::Request::RequestTxn(nested)) => {
                    self.check_path(nested, path, i)?
                }
                _ => Ok(()),
            };
            if r.is_err() {
                return Ok(r);
            }
        }
        Ok(Ok(()))
    }

    fn run_txn(&mut self, t: &TxnRequest, path: &[bool], i: &mut usize) -> Result<TxnResponse> {
        let succeeded = path[*i];
        let ops = branch(t, path, i);
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    Some(response_op::Response::ResponseRange(self.range(r)?))
                }
                Some(request_op::Request::RequestPut(p)) => {
                    Some(response_op::Response::ResponsePut(self.put(p)?))
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    Some(response_op::Response::ResponseDeleteRange(self.delete(d)?))
                }
                Some(request_op::Request::RequestTxn(nested)) => {
                    let mut r = self.run_txn(nested, path, i)?;
                    r.header = Some(ResponseHeader::default());
                    Some(response_op::Response::ResponseTxn(r))
                }
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    }

    fn compare(&self, c: &Compare) -> Result<bool> {
        let range = KeyRange::new(&c.key, &c.range_end);
        let at = self.read_rev();
        let revs: Vec<Revision> = self
            .state()
            .index
            .range_at(&range, at)
            .map(|(_, r)| r)
            .collect();
        let target = CompareTarget::try_from(c.target).ok();
        if revs.is_empty() {
            if target == Some(CompareTarget::Value) {
                return Ok(false);
            }
            return Ok(compare_kv(c, target, &KeyValue::default()));
        }
        for rev in revs {
            if !compare_kv(c, target, &self.value(rev)?) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The branch the compare path takes at step `i`; moves `i` on.
fn branch<'t>(t: &'t TxnRequest, path: &[bool], i: &mut usize) -> &'t [RequestOp] {
    let ok = path[*i];
    *i += 1;
    if ok {
        &t.success
    } else {
        &t.failure
    }
}

impl TxnTarget for Writer<'_> {
    fn state(&self) -> &State {
        self.st
    }

    /// Its own writes count.
    fn read_rev(&self) -> i64 {
        if self.sub > 0 {
            self.main()
        } else {
            self.st.current
        }
    }

    fn value(&self, rev: Revision) -> Result<KeyValue> {
        match self.written.puts.get(&rev) {
            Some(&i) => Ok(self.written.events[i]
                .kv
                .clone()
                .expect("invariant: a written event has a kv")),
            None => fetch(self.tree, rev),
        }
    }

    fn check_put(&self, p: &PutRequest) -> Result<Result<(), ApplyError>> {
        // ignore_lease takes the key's lease, which exists: no check.
        if p.lease != 0 && !self.st.leases.contains(p.lease) {
            return Ok(Err(ApplyError::LeaseNotFound));
        }
        if (p.ignore_value || p.ignore_lease) && self.live_value(&p.key)?.is_none() {
            return Ok(Err(ApplyError::KeyNotFound));
        }
        Ok(Ok(()))
    }

    fn put(&mut self, p: &PutRequest) -> Result<PutResponse> {
        let prev = if p.prev_kv || p.ignore_value || p.ignore_lease {
            self.live_value(&p.key)?
        } else {
            None
        };
        let value = match (&prev, p.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            _ => p.value.clone(),
        };
        let lease = match (&prev, p.ignore_lease) {
            (Some(prev), true) => prev.lease,
            _ => p.lease,
        };
        let rev = self.next_rev();
        let (created, version) = self.st.index.entry(&p.key).put(rev);
        self.st.leases.attach(&p.key, lease);
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: created,
            mod_revision: rev.main,
            version,
            value,
            lease,
        };
        let (k, v) = (rev.to_key(false), kv.encode_to_vec());
        self.written.bytes += record_bytes(&k, &v);
        self.batch.insert(k, v);
        self.written.puts.insert(rev, self.written.events.len());
        self.written.events.push(event(kv, false));
        Ok(PutResponse {
            header: Some(header(rev.main)),
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    fn delete(&mut self, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let range = KeyRange::new(&d.key, &d.range_end);
        let live: Vec<(Vec<u8>, Revision)> = self
            .st
            .index
            .live_in(&range)
            .map(|(k, l)| (k.to_vec(), l.modified))
            .collect();
        let mut prev_kvs = Vec::new();
        if d.prev_kv {
            for (_, rev) in &live {
                prev_kvs.push(self.value(*rev)?);
            }
        }
        for (key, _) in &live {
            self.tombstone(key);
        }
        Ok(DeleteRangeResponse {
            header: Some(header(self.read_rev())),
            deleted: live.len() as i64,
            prev_kvs,
        })
    }
}

/// The committed state as a read-only txn sees it, under the state's read
/// lock.
struct ReadView<'a> {
    st: &'a State,
    tree: &'a sled::Tree,
}

impl TxnTarget for ReadView<'_> {
    fn state(&self) -> &State {
        self.st
    }

    fn read_rev(&self) -> i64 {
        self.st.current
    }

    fn value(&self, rev: Revision) -> Result<KeyValue> {
        fetch(self.tree, rev)
    }

    fn check_put(&self, _: &PutRequest) -> Result<Result<(), ApplyError>> {
        unreachable!("a read-only txn has no puts")
    }

    fn put(&mut self, _: &PutRequest) -> Result<PutResponse> {
        unreachable!("a read-only txn has no puts")
    }

    fn delete(&mut self, _: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        unreachable!("a read-only txn has no deletes")
    }
}

/// The ranges of a txn whose every op, in both branches, is a Range; `None`
/// if it writes or nests a txn (etcd's `isTxnReadonly`).
pub fn read_only_ranges(t: &TxnRequest) -> Option<Vec<&RangeRequest>> {
    t.success
        .iter()
        .chain(&t.failure)
        .map(|op| match &op.request {
            Some(request_op::Request::RequestRange(r)) => Some(r),
            _ => None,
        })
        .collect()
}

fn compare_kv(c: &Compare, target: Option<CompareTarget>, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ord = match (target, &c.target_union) {
        (Some(CompareTarget::Version), t) => kv.version.cmp(&match t {
            Some(TargetUnion::Version(v)) => *v,
            _ => 0,
        }),
        (Some(CompareTarget::Create), t) => kv.create_revision.cmp(&match t {
            Some(TargetUnion::CreateRevision(v)) => *v,
            _ => 0,
        }),
        (Some(CompareTarget::Mod), t) => kv.mod_revision.cmp(&match t {
            Some(TargetUnion::ModRevision(v)) => *v,
            _ => 0,
        }),
        (Some(CompareTarget::Lease), t) => kv.lease.cmp(&match t {
            Some(TargetUnion::Lease(v)) => *v,
            _ => 0,
        }),
        (Some(CompareTarget::Value), t) => {
            let want: &[u8] = match t {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
        (None, _) => return false,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ord != Ordering::Equal,
        Ok(CompareResult::Greater) => ord == Ordering::Greater,
        Ok(CompareResult::Less) => ord == Ordering::Less,
        Err(_) => false,
    }
}

/// The physical-compaction thread: runs jobs in order, one small batch at
/// a time, and ends when the store is dropped.
fn compactor(engine: &Engine, comp: &Compaction, jobs: mpsc::Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        match compact_physical(engine, comp, &job) {
            Ok(true) => {}
            // Stopped: the next open resumes, compact_done was not advanced.
            Ok(false) => return,
            Err(e) => {
                tracing::error!(error = %e, rev = job.rev, "physical compaction failed; the next open resumes it")
            }
        }
    }
}

/// Deletes what `job` says, batch by batch. Returns false if stopped.
fn compact_physical(engine: &Engine, comp: &Compaction, job: &Job) -> Result<bool> {
    let end = Revision::lower_bound(job.rev + 1);
    let mut from = vec![revision::PREFIX];
    loop {
        if comp.stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        // Each batch is a write (see `engine`): it goes to the generation
        // current when it runs.
        let w = engine.write();
        let gate = comp.gate.write();
        if comp.paused.load(Ordering::SeqCst) > 0 {
            drop(gate);
            drop(w);
            std::thread::sleep(COMPACTION_PAUSE * 10);
            continue;
        }
        let mut batch = sled::Batch::default();
        let mut last = None;
        let mut freed = 0;
        for item in w
            .mvcc
            .range(from.clone()..end.clone())
            .take(COMPACTION_BATCH)
        {
            let (k, v) = item?;
            if let Some((rev, _)) = Revision::from_key(&k) {
                if !job.keep.contains(&rev) {
                    freed += record_bytes(&k, &v);
                    batch.remove(k.clone());
                }
            }
            last = Some(k);
        }
        let Some(last) = last else { break };
        w.mvcc.apply_batch(batch)?;
        comp.in_use.fetch_sub(freed, Ordering::SeqCst);
        drop(gate);
        drop(w);
        from = last.to_vec();
        from.push(0);
        std::thread::sleep(COMPACTION_PAUSE);
    }
    engine
        .write()
        .mvcc
        .insert(META_COMPACT_DONE, &job.rev.to_be_bytes())?;
    comp.compacted.send_replace(job.rev);
    Ok(true)
}

#[cfg(test)]
impl Store {
    /// A store on `db` alone (no data dir, no defragment), for unit tests.
    pub(crate) fn on(db: &sled::Db) -> Result<Store> {
        let backend = crate::engine::Backend::new(db.clone(), "db".into())?;
        Store::open(Arc::new(Engine::new(Default::default(), 0, backend)))
    }
}

#[cfg(test)]
mod tests {
    use cairn_proto::etcdserverpb::{
        DeleteRangeRequest, LeaseCheckpointRequest, LeaseGrantRequest, LeaseRevokeRequest,
        PutRequest,
    };
    use openraft::CommittedLeaderId;

    use super::*;

    thread_local! {
        /// Set by a test: the next small commit makes its redo record and
        /// this many of its writes, then fails, as a crash there would.
        pub(super) static CUT_AFTER: std::cell::Cell<Option<usize>> =
            const { std::cell::Cell::new(None) };
    }

    fn entry(i: u64, req: Request) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
            payload: EntryPayload::Normal(req),
        }
    }

    fn put(i: u64, key: &str) -> Entry<TypeConfig> {
        entry(
            i,
            Request::Put(PutRequest {
                key: key.as_bytes().to_vec(),
                value: format!("v{i}").into_bytes(),
                ..Default::default()
            }),
        )
    }

    fn delete(i: u64, key: &str) -> Entry<TypeConfig> {
        entry(
            i,
            Request::DeleteRange(DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            }),
        )
    }

    /// (revision, key, is delete) of each event.
    fn summary(events: &[Event]) -> Vec<(i64, String, bool)> {
        events
            .iter()
            .map(|e| {
                let kv = e.kv.as_ref().unwrap();
                (
                    kv.mod_revision,
                    String::from_utf8(kv.key.clone()).unwrap(),
                    e.r#type == EventType::Delete as i32,
                )
            })
            .collect()
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Changes>>);

    impl Observer for Recorder {
        fn applied(&self, changes: Changes) {
            self.0.lock().push(changes);
        }
        fn replaced(&self, _: i64, _: i64) {}
    }

    /// A read-only txn served without the log answers as its apply would:
    /// compares, ranges at old and current revisions, and refusals.
    #[test]
    fn a_read_only_txn_reads_as_apply_would() {
        use cairn_proto::etcdserverpb::compare::CompareResult;

        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = Store::on(&db).unwrap();
        store
            .apply(vec![put(1, "a"), put(2, "b"), put(3, "a"), delete(4, "b")])
            .unwrap();
        let range = |key: &str, revision: i64| RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: key.as_bytes().to_vec(),
                range_end: if key.is_empty() { vec![0] } else { Vec::new() },
                revision,
                ..Default::default()
            })),
        };
        let version_is = |key: &str, version: i64| Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Version as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(TargetUnion::Version(version)),
            ..Default::default()
        };
        let txn = |compare, success, failure| TxnRequest {
            compare,
            success,
            failure,
        };
        let cases = [
            txn(vec![version_is("a", 2)], vec![range("a", 0)], vec![]),
            txn(
                vec![version_is("a", 1)],
                vec![range("a", 0)],
                vec![range("", 2)],
            ),
            txn(vec![], vec![range("", 0), range("b", 3)], vec![]),
            txn(vec![version_is("b", 0)], vec![range("a", 9)], vec![]),
            txn(vec![], vec![], vec![]),
        ];
        let mut i = 5;
        store
            .apply(vec![entry(
                i,
                Request::Compaction(CompactionRequest {
                    revision: 2,
                    physical: false,
                }),
            )])
            .unwrap();
        i += 1;
        let compacted = txn(vec![], vec![range("a", 1)], vec![]);
        assert_eq!(
            store.read_txn(&compacted).unwrap().unwrap(),
            Err(ApplyError::Compacted)
        );
        for t in cases {
            let read = store.read_txn(&t).expect("read-only").unwrap();
            let applied = store
                .apply(vec![entry(i, Request::Txn(t.clone()))])
                .unwrap();
            i += 1;
            let expected = match applied.into_iter().next() {
                Some(Response::Txn(r)) => Ok(r),
                Some(Response::Rejected(e)) => Err(e),
                other => panic!("{other:?}"),
            };
            assert_eq!(read, expected, "{t:?}");
        }
        let future = txn(vec![], vec![range("a", 9)], vec![]);
        assert_eq!(
            store.read_txn(&future).unwrap().unwrap(),
            Err(ApplyError::FutureRevision)
        );

        let put_c = RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"c".to_vec(),
                ..Default::default()
            })),
        };
        let writes = txn(vec![], vec![range("a", 0)], vec![put_c]);
        assert!(store.read_txn(&writes).is_none());
        let nested = txn(
            vec![],
            vec![RequestOp {
                request: Some(request_op::Request::RequestTxn(txn(vec![], vec![], vec![]))),
            }],
            vec![],
        );
        assert!(store.read_txn(&nested).is_none());
    }

    /// The observer gets each apply call's events, in order, with the
    /// revision after the call; a dropped observer is no longer told.
    #[test]
    fn observer_hears_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = Store::on(&db).unwrap();
        let rec = Arc::new(Recorder::default());
        let weak: Weak<dyn Observer> = Arc::downgrade(&rec) as Weak<dyn Observer>;
        store.set_observer(weak);
        store
            .apply(vec![
                put(1, "a"),
                put(2, "b"),
                delete(3, "a"),
                delete(4, "zz"),
            ])
            .unwrap();
        store.apply(vec![put(5, "a")]).unwrap();
        let got = rec.0.lock().clone();
        assert_eq!(got.len(), 2);
        assert_eq!(
            summary(&got[0].events),
            vec![
                (2, "a".into(), false),
                (3, "b".into(), false),
                (4, "a".into(), true)
            ]
        );
        assert_eq!(got[0].revision, 4);
        let kv = got[1].events[0].kv.as_ref().unwrap();
        assert_eq!((kv.create_revision, kv.version, kv.mod_revision), (5, 1, 5));
        drop(got);
        drop(rec);
        store.apply(vec![put(6, "c")]).unwrap();
    }

    /// An apply call cut short after its redo record, at any point of its
    /// writes, is finished at the next open: the store is then exactly as
    /// if the call had completed, and a call too large for a redo record
    /// goes to sled as one batch.
    #[test]
    fn an_apply_cut_short_is_finished_at_open() {
        let calls = || {
            let grant = Request::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 60 });
            let attach = Request::Put(PutRequest {
                key: b"b".to_vec(),
                value: b"x".to_vec(),
                lease: 7,
                ..Default::default()
            });
            let revoke = Request::LeaseRevoke(LeaseRevokeRequest { id: 7 });
            vec![
                vec![put(1, "a"), entry(2, grant), entry(3, attach)],
                vec![put(4, "a"), delete(5, "a"), put(6, "c"), entry(7, revoke)],
            ]
        };
        let state = |store: &Store| {
            let all = store.range(&RangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            });
            (
                all.unwrap().kvs,
                store.revision(),
                store.applied_index(),
                store.lease_ids(),
                store.hash_kv(0).unwrap(),
            )
        };
        let whole = {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::on(&sled::open(dir.path()).unwrap()).unwrap();
            for call in calls() {
                store.apply(call).unwrap();
            }
            state(&store)
        };
        assert_eq!(whole.1, 7);
        assert!(whole.3.is_empty());
        // The last call writes 4 records (b goes with its lease), the
        // lease's removal, the applied id and the revision.
        for cut in 0..=7 {
            let dir = tempfile::tempdir().unwrap();
            {
                let store = Store::on(&sled::open(dir.path()).unwrap()).unwrap();
                let mut calls = calls();
                let last = calls.pop().unwrap();
                for call in calls {
                    store.apply(call).unwrap();
                }
                CUT_AFTER.with(|c| c.set(Some(cut)));
                assert!(store.apply(last).is_err(), "cut after {cut}");
            }
            let store = Store::on(&sled::open(dir.path()).unwrap()).unwrap();
            assert_eq!(state(&store), whole, "cut after {cut}");
            let tree = store.shared.engine.backend().mvcc.clone();
            assert!(tree.get(META_REDO).unwrap().is_none());
        }

        // Too large for a redo record: a batch, which the cut never sees.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::on(&sled::open(dir.path()).unwrap()).unwrap();
        let big = Request::Put(PutRequest {
            key: b"big".to_vec(),
            value: vec![b'v'; REDO_MAX_BYTES + 1],
            ..Default::default()
        });
        CUT_AFTER.with(|c| c.set(Some(0)));
        store.apply(vec![entry(1, big)]).unwrap();
        assert_eq!(CUT_AFTER.with(std::cell::Cell::take), Some(0));
        assert_eq!(store.revision(), 2);
    }

    /// History pages: revision order, the `keep` filter, the page limit,
    /// and the delete at the compact revision kept after physical
    /// compaction (etcd #18089).
    #[tokio::test]
    async fn history_replays_from_the_compact_revision() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = Store::on(&db).unwrap();
        // Revisions: a@2, b@3, a@4, del a@5, c@6.
        store
            .apply(vec![
                put(1, "a"),
                put(2, "b"),
                put(3, "a"),
                delete(4, "a"),
                put(5, "c"),
            ])
            .unwrap();
        let all = store.history(2, 6, 100, |_| true).unwrap();
        assert_eq!(all.next, 7);
        assert_eq!(
            summary(&all.events),
            vec![
                (2, "a".into(), false),
                (3, "b".into(), false),
                (4, "a".into(), false),
                (5, "a".into(), true),
                (6, "c".into(), false)
            ]
        );
        let page = store.history(2, 6, 2, |k| k == b"a").unwrap();
        assert_eq!(page.next, 4);
        assert_eq!(summary(&page.events), vec![(2, "a".into(), false)]);

        let compact = Request::Compaction(CompactionRequest {
            revision: 5,
            physical: true,
        });
        store.apply(vec![entry(6, compact)]).unwrap();
        store.wait_compacted(5).await;
        assert!(matches!(
            store.history(4, 6, 100, |_| true),
            Err(Error::Compacted)
        ));
        let from_compact = store.history(5, 6, 100, |_| true).unwrap();
        assert_eq!(
            summary(&from_compact.events),
            vec![(5, "a".into(), true), (6, "c".into(), false)]
        );
        assert_eq!(store.value_at(b"b", 5).unwrap().unwrap().mod_revision, 3);
        assert_eq!(store.value_at(b"a", 5).unwrap(), None);
        assert_eq!(store.value_at(b"b", 4).unwrap(), None, "below compact");
    }

    fn grant(i: u64, id: i64, ttl: i64) -> Entry<TypeConfig> {
        entry(i, Request::LeaseGrant(LeaseGrantRequest { ttl, id }))
    }

    fn revoke(i: u64, id: i64) -> Entry<TypeConfig> {
        entry(i, Request::LeaseRevoke(LeaseRevokeRequest { id }))
    }

    fn put_leased(i: u64, key: &str, lease: i64) -> Entry<TypeConfig> {
        entry(
            i,
            Request::Put(PutRequest {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                lease,
                ..Default::default()
            }),
        )
    }

    fn keys(store: &Store, id: i64) -> Vec<String> {
        store
            .lease(id)
            .unwrap()
            .keys
            .into_iter()
            .map(|k| String::from_utf8(k).unwrap())
            .collect()
    }

    /// Grant, attach, move, detach and revoke, with etcd's answers; a
    /// revoke deletes the lease's keys in one revision, in key order.
    #[test]
    fn leases_hold_keys_until_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = Store::on(&db).unwrap();
        let rec = Arc::new(Recorder::default());
        store.set_observer(Arc::downgrade(&rec) as Weak<dyn Observer>);
        let out = store
            .apply(vec![
                grant(1, 7, 60),
                grant(2, 7, 60),
                grant(3, 0, 60),
                grant(4, 8, 30),
                put_leased(5, "b", 7), // 2
                put_leased(6, "a", 7), // 3
                put_leased(7, "c", 8), // 4
                put_leased(8, "c", 7), // 5: moves c to lease 7
                put_leased(9, "x", 9), // unknown lease
            ])
            .unwrap();
        assert!(matches!(&out[0], Response::LeaseGrant(g) if g.id == 7 && g.ttl == 60));
        assert_eq!(out[1], Response::Rejected(ApplyError::LeaseExists));
        assert_eq!(out[2], Response::Rejected(ApplyError::LeaseNotFound));
        assert_eq!(out[8], Response::Rejected(ApplyError::LeaseNotFound));
        assert_eq!(keys(&store, 7), ["a", "b", "c"]);
        assert!(keys(&store, 8).is_empty());
        assert_eq!(store.lease_ids(), [7, 8]);

        // A put without a lease, and a delete, detach.
        store
            .apply(vec![
                put_leased(10, "a", 0), // 6
                delete(11, "b"),        // 7
                put(12, "d"),           // 8
                put_leased(13, "d", 7), // 9
            ])
            .unwrap();
        assert_eq!(keys(&store, 7), ["c", "d"]);

        rec.0.lock().clear();
        let out = store
            .apply(vec![revoke(14, 7), revoke(15, 7), revoke(16, 8)])
            .unwrap();
        match &out[0] {
            Response::LeaseRevoke(r) => assert_eq!(r.header.as_ref().unwrap().revision, 10),
            other => panic!("{other:?}"),
        }
        assert_eq!(out[1], Response::Rejected(ApplyError::LeaseNotFound));
        // A lease with no keys changes no revision.
        assert!(
            matches!(&out[2], Response::LeaseRevoke(r) if r.header.as_ref().unwrap().revision == 10)
        );
        assert_eq!(store.revision(), 10);
        let events = rec.0.lock()[0].events.clone();
        assert_eq!(
            summary(&events),
            [(10, "c".into(), true), (10, "d".into(), true)]
        );
        assert!(store.lease_ids().is_empty());
        let gone = store.range(&RangeRequest {
            key: b"c".to_vec(),
            ..Default::default()
        });
        assert_eq!(gone.unwrap().count, 0);
    }

    /// Leases, their checkpoints and their keys survive a reopen and a
    /// snapshot install.
    #[test]
    fn leases_survive_reopen_and_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = Store::on(&db).unwrap();
        store
            .apply(vec![
                grant(1, 7, 60),
                grant(2, -3, 10),
                put_leased(3, "a", 7),
                put_leased(4, "b", -3),
                put_leased(5, "b", 7),
                put_leased(6, "c", -3),
                delete(7, "c"),
                entry(
                    8,
                    Request::LeaseCheckpoint(LeaseCheckpointRequest {
                        checkpoints: vec![cairn_proto::etcdserverpb::LeaseCheckpoint {
                            id: 7,
                            remaining_ttl: 42,
                        }],
                    }),
                ),
            ])
            .unwrap();
        let want = |s: &Store| {
            assert_eq!(s.lease_ids(), [-3, 7]);
            assert_eq!(keys(s, 7), ["a", "b"]);
            assert!(keys(s, -3).is_empty());
            assert_eq!(s.lease(7).unwrap().remaining_ttl, 42);
            assert_eq!(s.lease(-3).unwrap().ttl, 10);
        };
        want(&store);
        let scratch = tempfile::tempdir().unwrap();
        let built = scratch.path().join("built");
        crate::snapshot::build(&store, &built).unwrap();
        drop(store);
        let store = Store::on(&db).unwrap();
        want(&store);

        let dir2 = tempfile::tempdir().unwrap();
        let db2 = sled::open(dir2.path()).unwrap();
        let other = Store::on(&db2).unwrap();
        other.apply(vec![grant(1, 99, 5)]).unwrap();
        let tree = other.shared.engine.backend().mvcc.clone();
        crate::snapshot::load_into(&other, &tree, &built).unwrap();
        want(&other);
    }

    /// The state an install rebuilds as it loads is the state an open
    /// reads from the loaded tree: revisions, the compact revision, the
    /// index (history, tombstones, versions), alarms and the hash.
    #[test]
    fn an_install_rebuilds_what_an_open_reads() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = Store::on(&db).unwrap();
        let mut entries: Vec<_> = (1..=30u64)
            .map(|i| put(i, &format!("k{}", i % 4)))
            .collect();
        entries.push(delete(31, "k1"));
        entries.push(entry(
            32,
            Request::Compaction(CompactionRequest {
                revision: 20,
                physical: false,
            }),
        ));
        entries.push(put(33, "k1"));
        entries.push(entry(
            34,
            Request::Alarm(AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: 5,
                alarm: AlarmType::Nospace as i32,
            }),
        ));
        store.apply(entries).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let built = scratch.path().join("built");
        crate::snapshot::build(&store, &built).unwrap();

        let dir2 = tempfile::tempdir().unwrap();
        let db2 = sled::open(dir2.path()).unwrap();
        let other = Store::on(&db2).unwrap();
        other.apply(vec![put(1, "gone")]).unwrap();
        let tree = other.shared.engine.backend().mvcc.clone();
        crate::snapshot::load_into(&other, &tree, &built).unwrap();
        let reopened = Store::on(&db2).unwrap();
        let seen = |s: &Store| {
            let at = |rev| {
                s.range(&RangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    revision: rev,
                    ..Default::default()
                })
                .map(|r| r.kvs)
            };
            (
                s.revision(),
                s.compact_revision(),
                at(0).unwrap(),
                at(25).unwrap(),
                at(20).unwrap(),
                matches!(at(19), Err(Error::Compacted)),
                s.alarms(),
                s.hash_kv(0).unwrap(),
            )
        };
        let want = seen(&store);
        assert_eq!(want.1, 20);
        assert!(want.5);
        assert_eq!(want.6, [(5, AlarmType::Nospace as i32)]);
        assert_eq!(seen(&other), want);
        assert_eq!(seen(&reopened), want);
    }

    /// While a snapshot build holds a pause, physical compaction deletes
    /// nothing; it finishes once the pause ends.
    #[tokio::test]
    async fn physical_compaction_waits_for_a_pause() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = Store::on(&db).unwrap();
        let puts = (1..=3000u64)
            .map(|i| {
                let key = format!("k{}", i % 10).into_bytes();
                entry(
                    i,
                    Request::Put(PutRequest {
                        key,
                        value: b"v".to_vec(),
                        ..Default::default()
                    }),
                )
            })
            .collect();
        store.apply(puts).unwrap();
        let before = store.stored_revisions();

        let pause = store.shared.comp.pause();
        let compact = Request::Compaction(CompactionRequest {
            revision: 3001,
            physical: true,
        });
        store.apply(vec![entry(3001, compact)]).unwrap();
        // Several batches' worth of time: none may run.
        std::thread::sleep(COMPACTION_PAUSE * 100);
        assert_eq!(store.stored_revisions(), before);

        drop(pause);
        store.wait_compacted(3001).await;
        assert_eq!(store.stored_revisions(), 10);
    }

    /// HashKV covers what every member keeps: the same before and after
    /// physical compaction, and in-use bytes drop once it ran.
    #[tokio::test]
    async fn hash_kv_ignores_physical_compaction_progress() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = Store::on(&db).unwrap();
        store
            .apply((1..=300).map(|i| put(i, &format!("k{}", i % 7))).collect())
            .unwrap();
        store.apply(vec![delete(301, "k3")]).unwrap();
        let pause = store.shared.comp.pause();
        let compact = Request::Compaction(CompactionRequest {
            revision: 250,
            physical: false,
        });
        store.apply(vec![entry(302, compact)]).unwrap();
        let in_use = store.size_in_use();
        let before = store.hash_kv(0).unwrap();
        let at = store.hash_kv(280).unwrap();
        drop(pause);
        store.wait_compacted(250).await;
        assert!(store.size_in_use() < in_use / 2);
        assert_eq!(store.hash_kv(0).unwrap(), before);
        assert_eq!(store.hash_kv(280).unwrap(), at);
        assert_ne!(before.0, at.0);
        assert_eq!((before.1, before.2), (250, 302));
        assert!(matches!(store.hash_kv(200), Err(Error::Compacted)));
        assert!(matches!(store.hash_kv(303), Err(Error::FutureRevision)));
    }

    /// NOSPACE refuses what adds data, at apply, and survives a reopen;
    /// deactivating lifts it.
    #[test]
    fn nospace_refuses_puts_txns_with_puts_and_grants() {
        use cairn_proto::etcdserverpb::{alarm_request::AlarmAction, RequestOp};
        let dir = tempfile::tempdir().unwrap();
        let alarm = |action: AlarmAction| {
            Request::Alarm(AlarmRequest {
                action: action as i32,
                member_id: 7,
                alarm: AlarmType::Nospace as i32,
            })
        };
        {
            let db = sled::open(dir.path()).unwrap();
            let store = Store::on(&db).unwrap();
            store
                .apply(vec![put(1, "a"), entry(2, alarm(AlarmAction::Activate))])
                .unwrap();
            assert_eq!(store.alarms(), vec![(7, AlarmType::Nospace as i32)]);
        }
        let db = sled::open(dir.path()).unwrap();
        let store = Store::on(&db).unwrap();
        assert_eq!(store.alarms(), vec![(7, AlarmType::Nospace as i32)]);
        let txn_put = Request::Txn(TxnRequest {
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: b"t".to_vec(),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        });
        let grant = Request::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 5 });
        let out = store
            .apply(vec![
                put(3, "b"),
                entry(4, txn_put.clone()),
                entry(5, grant.clone()),
                delete(6, "a"),
            ])
            .unwrap();
        let refused = Response::Rejected(ApplyError::NoSpace);
        assert_eq!(out[..3], [refused.clone(), refused.clone(), refused]);
        assert!(matches!(out[3], Response::DeleteRange(_)));
        assert_eq!(store.revision(), 3, "only the delete changed anything");
        store
            .apply(vec![entry(7, alarm(AlarmAction::Deactivate))])
            .unwrap();
        assert!(store.alarms().is_empty());
        let out = store
            .apply(vec![entry(8, txn_put), entry(9, grant)])
            .unwrap();
        assert!(matches!(out[0], Response::Txn(_)));
        assert!(matches!(out[1], Response::LeaseGrant(_)));
    }
}
