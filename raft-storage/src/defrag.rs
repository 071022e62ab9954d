//! Defragment: give the database's free space back to the file system.
//!
//! sled 0.34 reuses the space that deletes free but never shrinks its
//! file. Defragment therefore copies the live content into a new database
//! generation (see `engine`) and switches every holder to it.
//!
//! # Steps
//! 1. Take the defragment lock (one at a time) and `Shared::copies`
//!    exclusively (no snapshot build or install runs meanwhile), and pause
//!    physical compaction. Note the current revision R.
//! 2. While writes go on, copy the revision records up to R (they never
//!    change while compaction is paused and no install runs); flush the
//!    new generation every 1024 records.
//! 3. Block writes ([`Engine::block_writes`]). Copy what may have changed:
//!    the revision records above R, the meta, lease and alarm records, and
//!    the `raft` tree. Sync the new generation ([`Engine::sync`]).
//! 4. Sync the new generation's directory, point `db-current` at it
//!    (temporary file, fsync, rename, directory fsync; if that last fsync
//!    fails, point back at the old one), switch the engine to it, and
//!    unblock writes. Readers that
//!    took the old generation finish on it.
//! 5. Delete the old generation once its last handle is gone; if a reader
//!    keeps it longer than [`REAP_WAIT`], a later defragment or the next
//!    open deletes it.
//!
//! The Raft log is not in sled (see `wal`): a defragment never copies it.
//!
//! # Crash safety
//! Until the rename in step 4 is durable, `db-current` names the old
//! generation, which writes kept going to, and `open` deletes the new one.
//! After it, it names the new one, which holds everything acknowledged
//! before the switch (synced in step 3) and everything after.
//!
//! # What blocks
//! Writes to sled (apply, physical compaction) wait during steps 3 and 4
//! only: in-flight writes drain, then the copy of what the first pass could
//! not take, one sync of it, and two fsyncs. Reads and the Raft log never
//! wait.

use std::ops::RangeBounds;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::{self, open_db, Backend, Engine, Retired};
use crate::error::Result;
use crate::mvcc::Store;
use crate::revision::{self, Revision};

/// Records copied to the new generation between two flushes.
const COPY_BATCH: usize = 1024;
/// Bytes copied to the new generation between two flushes.
const COPY_BATCH_BYTES: usize = 4 << 20;
/// How long a defragment waits for the old generation's last reader
/// before it leaves the deletion to later.
pub(crate) const REAP_WAIT: Duration = Duration::from_secs(2);

/// After step 2's copy and flush.
pub(crate) const COPIED: &str = "raft-storage::defrag-copied";
/// After step 3, with the new generation complete and flushed, before the
/// pointer is written.
pub(crate) const CAUGHT_UP: &str = "raft-storage::defrag-caught-up";
/// After the pointer names the new generation, before the switch in
/// memory.
pub(crate) const POINTED: &str = "raft-storage::defrag-pointed";

/// What a defragment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Defragmented {
    /// sled's size on disk before, in bytes.
    pub size_before: u64,
    /// sled's size on disk after (the new generation), in bytes.
    pub size_after: u64,
    /// How long writes were blocked (steps 3 and 4).
    pub writes_blocked: Duration,
    /// How long the whole defragment took.
    pub took: Duration,
}

/// Runs a defragment of `store`'s data dir (see the module docs).
pub(crate) fn defragment(store: &Store) -> Result<Defragmented> {
    let started = Instant::now();
    let engine = &store.shared.engine;
    let mut retired = engine.defrag.lock();
    // No snapshot build or install runs meanwhile: an install would hold
    // writes for its whole length, and step 3 waits for writes.
    let _copy = store.shared.copies.write();
    engine.reap(&mut retired, Duration::ZERO);
    let name = engine.next_generation()?;
    let new = Backend::new(
        open_db(&engine.dir.join(&name), engine.cache_capacity)?,
        name.clone(),
    )?;
    let switched = match copy_and_switch(store, new) {
        Ok(s) => s,
        Err(e) => {
            // The pointer never named it: nothing refers to it. (sled may
            // need a moment to let go of the files; the next open removes
            // what is left.)
            if let Err(rm) = std::fs::remove_dir_all(engine.dir.join(&name)) {
                tracing::warn!(generation = %name, error = %rm, "cannot remove an unfinished database copy");
            }
            return Err(e);
        }
    };
    let size_before = switched.old.db.size_on_disk().unwrap_or(0);
    retired.push(Retired {
        backend: Arc::downgrade(&switched.old),
        name: switched.old.name.clone(),
    });
    drop(switched.old);
    engine.reap(&mut retired, REAP_WAIT);
    Ok(Defragmented {
        size_before,
        size_after: store.size_on_disk(),
        writes_blocked: switched.writes_blocked,
        took: started.elapsed(),
    })
}

/// What steps 1 to 4 leave.
struct Switched {
    /// The generation switched away from.
    old: Arc<Backend>,
    writes_blocked: Duration,
}

/// Steps 1 to 4. An error means the old generation is still in use, on
/// disk and in memory.
fn copy_and_switch(store: &Store, new: Backend) -> Result<Switched> {
    let engine: &Engine = &store.shared.engine;
    let comp = &store.shared.comp;

    // Step 1.
    let _pause = comp.pause();
    let (old, r) = (engine.backend(), store.shared.state.read().current);

    // Step 2.
    let upto_r = Revision::lower_bound(r.saturating_add(1));
    let flush = Some(&new.db);
    copy(
        &old.mvcc,
        &new.mvcc,
        vec![revision::PREFIX]..upto_r.clone(),
        flush,
    )?;
    new.db.flush()?;
    step(COPIED);

    // Step 3.
    let blocked_at = Instant::now();
    let writes = engine.block_writes();
    copy(&old.mvcc, &new.mvcc, ..vec![revision::PREFIX], None)?;
    copy(&old.mvcc, &new.mvcc, upto_r.., None)?;
    copy(&old.raft, &new.raft, .., None)?;
    engine.sync(&new)?;
    step(CAUGHT_UP);

    // Step 4. The new generation's files are durable before the pointer
    // names it (sled never syncs its directory), and the pointer is
    // durable before the new generation takes writes.
    engine::sync_dir(&engine.dir.join(&new.name))?;
    engine::write_pointer(&engine.dir, &new.name)?;
    if let Err(e) = engine::sync_dir(&engine.dir) {
        // The rename may or may not be on disk. Name the old generation
        // again, durably, and go on with it; if even that fails, no one
        // can tell which generation a restart would open, and writes
        // made now could be lost: stop.
        let back = engine::write_pointer(&engine.dir, &old.name)
            .and_then(|()| engine::sync_dir(&engine.dir));
        if let Err(back) = back {
            tracing::error!(error = %e, again = %back, "defragment: cannot make either generation durably current");
            std::process::abort();
        }
        return Err(e);
    }
    step(POINTED);
    let was = engine.switch(new);
    debug_assert!(Arc::ptr_eq(&old, &was));
    drop(was);
    drop(writes);
    Ok(Switched {
        old,
        writes_blocked: blocked_at.elapsed(),
    })
}

/// Copies `range` of `from` into `to`, flushing `flush` every
/// [`COPY_BATCH`] records or [`COPY_BATCH_BYTES`] bytes if given. (When the
/// copy wrote sled batches, that made the new file smaller: about 80 MB
/// instead of 100 to 140 MB for 53 MB of records. With plain inserts the
/// size came out the same without it, 417 against 422 MB in
/// `scripts/compare-defrag.sh`, and the defragment took 2.1 s against
/// 3.7 s: one run each.)
///
/// Plain inserts, not sled batches: nothing reads the new generation
/// before the switch, and `open` deletes it if a crash comes first, so
/// atomicity adds nothing. A batch would cost two synced writes and stop
/// every sled reader in the process (the old generation's included) while
/// it applies.
fn copy<R: RangeBounds<Vec<u8>>>(
    from: &sled::Tree,
    to: &sled::Tree,
    range: R,
    flush: Option<&sled::Db>,
) -> Result<()> {
    let (mut n, mut bytes) = (0, 0);
    for item in from.range(range) {
        let (k, v) = item?;
        bytes += k.len() + v.len();
        n += 1;
        to.insert(k, v)?;
        if n == COPY_BATCH || bytes >= COPY_BATCH_BYTES {
            if let Some(db) = flush {
                db.flush()?;
            }
            (n, bytes) = (0, 0);
        }
    }
    Ok(())
}

/// A step boundary: a crash point (feature `failpoints`), and in unit
/// tests a place to stop as a crash would, with no cleanup (a panic,
/// which the test catches).
fn step(name: &'static str) {
    crate::crash::point(name);
    #[cfg(test)]
    tests::maybe_stop(name);
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};

    use cairn_proto::etcdserverpb::{
        CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest,
    };
    use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

    use super::*;
    use crate::storage::{open, Opened, Options};
    use crate::typ::{Request, TypeConfig};

    /// What a test runs at a step, on the defragment's thread.
    type Hook = Box<dyn FnMut(&'static str) + Send>;

    thread_local! {
        /// The step at which the defragment on this thread stops.
        static STOP_AFTER: Cell<Option<&'static str>> = const { Cell::new(None) };
        static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    pub(super) fn maybe_stop(name: &'static str) {
        if STOP_AFTER.with(|s| s.get()) == Some(name) {
            panic!("test: stopped after {name}");
        }
        HOOK.with(|h| {
            if let Some(hook) = h.borrow_mut().as_mut() {
                hook(name);
            }
        });
    }

    fn entry(term: u64, index: u64, req: Request) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(req),
        }
    }

    fn put(key: String, value: Vec<u8>, lease: i64) -> Request {
        Request::Put(PutRequest {
            key: key.into_bytes(),
            value,
            lease,
            ..Default::default()
        })
    }

    fn all(revision: i64) -> RangeRequest {
        RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision,
            ..Default::default()
        }
    }

    /// Everything a store and its log hold, to compare before and after.
    #[derive(Debug, PartialEq)]
    struct Image {
        revision: i64,
        compact: i64,
        kvs: Vec<cairn_proto::mvccpb::KeyValue>,
        hash_kv: (u32, i64, i64),
        hash: u32,
        leases: Vec<crate::Lease>,
        alarms: Vec<(u64, i32)>,
        applied: Option<LogId<u64>>,
        log: Vec<Entry<TypeConfig>>,
        log_state: (Option<LogId<u64>>, Option<LogId<u64>>),
        vote: Option<Vote<u64>>,
        committed: Option<LogId<u64>>,
        revisions: usize,
    }

    async fn image(o: &Opened) -> Image {
        let s = &o.store;
        let mut log = o.log_store.clone();
        let state = log.get_log_state().await.unwrap();
        Image {
            revision: s.revision(),
            compact: s.compact_revision(),
            kvs: s.range(&all(0)).unwrap().kvs,
            hash_kv: s.hash_kv(0).unwrap(),
            hash: s.hash().unwrap(),
            leases: s
                .lease_ids()
                .iter()
                .map(|id| s.lease(*id).unwrap())
                .collect(),
            alarms: s.alarms(),
            applied: s.applied_state().0,
            log: log.try_get_log_entries(..).await.unwrap(),
            log_state: (state.last_purged_log_id, state.last_log_id),
            vote: log.read_vote().await.unwrap(),
            committed: log.read_committed().await.unwrap(),
            revisions: s.stored_revisions(),
        }
    }

    /// Blocks the files of `dir` take on disk, in bytes.
    fn du(dir: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let mut total = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            total += if m.is_dir() {
                du(&e.path())
            } else {
                m.blocks() * 512
            };
        }
        total
    }

    fn generations(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("db"))
            .collect();
        names.sort();
        names
    }

    /// 20,000 puts of 1 KiB over 500 keys (in the log too, most of it
    /// purged), leases, a delete, a vote, then a physical compaction:
    /// a big file with little in use. Returns the next log index.
    async fn fill(o: &mut Opened) -> u64 {
        let mut i = 1;
        o.store
            .apply(vec![
                entry(
                    1,
                    i,
                    Request::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 7 }),
                ),
                entry(
                    1,
                    i + 1,
                    Request::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 9 }),
                ),
            ])
            .unwrap();
        i += 2;
        for chunk in 0..200u64 {
            let entries: Vec<_> = (0..100u64)
                .map(|j| {
                    let n = chunk * 100 + j;
                    let lease = if n % 50 == 0 { 7 } else { 0 };
                    let value = vec![b'a' + (n % 26) as u8; 1024];
                    entry(1, i + j, put(format!("k{:03}", n % 500), value, lease))
                })
                .collect();
            i += 100;
            o.log_store.blocking_append(entries.clone()).await.unwrap();
            o.store.apply(entries).unwrap();
        }
        o.store
            .apply(vec![entry(
                1,
                i,
                Request::DeleteRange(DeleteRangeRequest {
                    key: b"k4".to_vec(),
                    range_end: b"k5".to_vec(),
                    ..Default::default()
                }),
            )])
            .unwrap();
        i += 1;
        let rev = o.store.revision() - 10;
        o.store
            .apply(vec![entry(
                1,
                i,
                Request::Compaction(CompactionRequest {
                    revision: rev,
                    physical: true,
                }),
            )])
            .unwrap();
        i += 1;
        o.store.wait_compacted(rev).await;
        o.log_store.save_vote(&Vote::new(3, 1)).await.unwrap();
        o.log_store
            .save_committed(Some(LogId::new(CommittedLeaderId::new(1, 1), i - 1)))
            .await
            .unwrap();
        o.log_store
            .purge(LogId::new(CommittedLeaderId::new(1, 1), i - 1000))
            .await
            .unwrap();
        i
    }

    /// The file shrinks, on sled's count and on the file system's, and
    /// everything reads back the same: keys, revisions, leases, hashes,
    /// the log, the vote; and again after a reopen.
    #[tokio::test]
    async fn defragment_shrinks_the_file_and_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(&Options::new(dir.path())).unwrap();
        fill(&mut o).await;
        let before = image(&o).await;
        assert_eq!(before.leases.len(), 2);
        assert!(before.kvs.len() > 300 && before.log.len() < 1000);
        // Nothing left in sled's buffers, for its flusher to write (and
        // the file to grow) between this measure and the defragment's.
        o.store.shared.engine.backend().db.flush().unwrap();
        // The file system's count of the generation's directory (the Raft
        // log is beside it, in its own files).
        let (sled_before, du_before) = (o.store.size_on_disk(), du(&dir.path().join("db")));

        let d = o.store.defragment().unwrap();
        let (sled_after, du_after) = (o.store.size_on_disk(), du(&dir.path().join("db.1")));
        eprintln!("sled {sled_before} -> {sled_after}, on disk {du_before} -> {du_after}, {d:?}");
        assert_eq!((d.size_before, d.size_after), (sled_before, sled_after));
        assert!(
            sled_after * 3 < sled_before,
            "sled's size: {sled_before} -> {sled_after}"
        );
        assert!(
            du_after * 3 < du_before,
            "on disk: {du_before} -> {du_after}"
        );
        assert_eq!(generations(dir.path()), ["db-current", "db.1"]);
        assert_eq!(image(&o).await, before);

        // Writes go to the new generation, and a second defragment works.
        o.store
            .apply(vec![entry(2, 30_000, put("new".into(), b"v".to_vec(), 9))])
            .unwrap();
        let after_write = image(&o).await;
        o.store.defragment().unwrap();
        assert_eq!(generations(dir.path()), ["db-current", "db.2"]);
        assert_eq!(image(&o).await, after_write);

        drop(o);
        let o = open(&Options::new(dir.path())).unwrap();
        assert_eq!(image(&o).await, after_write);
    }

    /// A writer applies and appends, and now and then truncates and
    /// purges the log, through three defragments: no write is lost or
    /// reordered, and the log is exactly what was written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn defragment_under_writes_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let o = open(&Options::new(dir.path())).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (store, mut log, stop) = (o.store.clone(), o.log_store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut revisions = BTreeMap::new();
                let mut i = 1u64;
                while !stop.load(Ordering::SeqCst) || i < 3000 {
                    if i.is_multiple_of(97) {
                        // A conflicting entry, truncated and replaced.
                        let bogus = entry(1, i, put("bogus".into(), b"x".to_vec(), 0));
                        log.blocking_append(vec![bogus]).await.unwrap();
                        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), i))
                            .await
                            .unwrap();
                    }
                    let e = entry(2, i, put(format!("k{}", i % 100), i.to_string().into(), 0));
                    log.blocking_append(vec![e.clone()]).await.unwrap();
                    let out = store.apply(vec![e]).unwrap();
                    let crate::Response::Put(p) = &out[0] else {
                        panic!("{out:?}")
                    };
                    revisions.insert(i, p.header.as_ref().unwrap().revision);
                    if i.is_multiple_of(1000) {
                        log.purge(LogId::new(CommittedLeaderId::new(2, 1), i - 500))
                            .await
                            .unwrap();
                    }
                    i += 1;
                }
                revisions
            })
        };
        let mut blocked = Vec::new();
        for _ in 0..3 {
            let store = o.store.clone();
            let d = tokio::task::spawn_blocking(move || store.defragment())
                .await
                .unwrap()
                .unwrap();
            blocked.push(d.writes_blocked);
        }
        stop.store(true, Ordering::SeqCst);
        let revisions = writer.await.unwrap();
        assert_eq!(generations(dir.path()), ["db-current", "db.3"]);
        let check = |o: &Opened| {
            let n = revisions.len() as u64;
            assert_eq!(o.store.revision(), n as i64 + 1);
            for (i, rev) in &revisions {
                assert_eq!(*rev, *i as i64 + 1, "put {i}: revisions in order");
                let r = o
                    .store
                    .range(&RangeRequest {
                        key: format!("k{}", i % 100).into_bytes(),
                        revision: *rev,
                        ..Default::default()
                    })
                    .unwrap();
                assert_eq!(r.kvs[0].value, i.to_string().into_bytes(), "put {i}");
            }
        };
        check(&o);
        let n = revisions.len() as u64;
        let log = o.log_store.clone().try_get_log_entries(..).await.unwrap();
        let first = (n / 1000) * 1000 - 500 + 1;
        assert_eq!(log.first().unwrap().log_id.index, first, "purged up to");
        assert_eq!(log.len() as u64, n - first + 1, "no gap, nothing extra");
        for e in &log {
            assert_eq!(
                e.log_id.leader_id.term, 2,
                "{}: truncated entries gone",
                e.log_id.index
            );
        }
        let before = image(&o).await;
        drop(o);
        let o = open(&Options::new(dir.path())).unwrap();
        check(&o);
        assert_eq!(image(&o).await, before);
        eprintln!("writes blocked: {blocked:?}");
    }

    /// A defragment cut short at each step (as a crash would: no cleanup)
    /// reopens to one whole generation holding everything: the old one
    /// before the pointer names the new one, the new one after.
    #[tokio::test]
    async fn a_defragment_cut_short_at_any_step_reopens_whole() {
        for (stop, want) in [(COPIED, "db"), (CAUGHT_UP, "db"), (POINTED, "db.1")] {
            let dir = tempfile::tempdir().unwrap();
            let mut o = open(&Options::new(dir.path())).unwrap();
            fill(&mut o).await;
            let before = image(&o).await;
            let store = o.store.clone();
            let cut = std::thread::spawn(move || {
                STOP_AFTER.with(|s| s.set(Some(stop)));
                store.defragment()
            })
            .join();
            assert!(cut.is_err(), "{stop}: stopped");
            assert!(generations(dir.path()).len() >= 2, "{stop}: left behind");
            drop(o);

            let o = open(&Options::new(dir.path())).unwrap();
            let mut left = vec![want.to_owned()];
            if want != "db" {
                left.insert(0, "db-current".into());
            }
            assert_eq!(generations(dir.path()), left, "{stop}");
            assert_eq!(image(&o).await, before, "{stop}");
            // And it defragments again.
            o.store.defragment().unwrap();
            assert_eq!(image(&o).await, before, "{stop}");
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// Runs a defragment of `o` on a thread of its own with `hook` at each
    /// step.
    fn defragment_with(o: &Opened, hook: Hook) -> Defragmented {
        let store = o.store.clone();
        std::thread::spawn(move || {
            HOOK.with(|h| *h.borrow_mut() = Some(hook));
            store.defragment().unwrap()
        })
        .join()
        .unwrap()
    }

    /// What the log, the vote and the store see change between the first
    /// pass and the switch (a truncate below the copied end of the log and
    /// its replacement, a purge, puts, a vote, a lease) is in the new
    /// generation: it reads exactly as the old one did just before the
    /// switch.
    #[tokio::test]
    async fn changes_during_the_copy_are_caught_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(&Options::new(dir.path())).unwrap();
        let next = fill(&mut o).await;
        let seen = Arc::new(parking_lot::Mutex::new(None));
        let hook: Hook = {
            let (mut log, store, seen) = (o.log_store.clone(), o.store.clone(), seen.clone());
            let o2 = open_view(&o);
            Box::new(move |step| match step {
                COPIED => block_on(async {
                    let at = next - 300;
                    log.truncate(LogId::new(CommittedLeaderId::new(1, 1), at))
                        .await
                        .unwrap();
                    let redo: Vec<_> = (at..next + 50)
                        .map(|i| entry(5, i, put(format!("t{i}"), b"t".to_vec(), 0)))
                        .collect();
                    log.blocking_append(redo.clone()).await.unwrap();
                    store.apply(redo[300..].to_vec()).unwrap();
                    store
                        .apply(vec![entry(
                            5,
                            next + 50,
                            Request::LeaseGrant(LeaseGrantRequest { ttl: 9, id: 11 }),
                        )])
                        .unwrap();
                    log.purge(LogId::new(CommittedLeaderId::new(1, 1), next - 600))
                        .await
                        .unwrap();
                    log.save_vote(&Vote::new(5, 1)).await.unwrap();
                }),
                POINTED => *seen.lock() = Some(block_on(image(&o2))),
                _ => {}
            })
        };
        defragment_with(&o, hook);
        let seen = seen.lock().take().unwrap();
        assert_eq!(seen.log.first().unwrap().log_id.index, next - 599);
        assert_eq!(seen.log.last().unwrap().log_id.index, next + 49);
        assert_eq!(seen.log[seen.log.len() - 350].log_id.leader_id.term, 5);
        assert_eq!(seen.vote, Some(Vote::new(5, 1)));
        assert_eq!(image(&o).await, seen);
        drop(o);
        let o = open(&Options::new(dir.path())).unwrap();
        assert_eq!(image(&o).await, seen);
    }

    /// A snapshot install asked for while a defragment copies waits for
    /// it, then replaces the new generation's content.
    #[tokio::test]
    async fn an_install_waits_for_a_defragment() {
        let src = tempfile::tempdir().unwrap();
        let s = open(&Options::new(src.path())).unwrap();
        s.store
            .apply(
                (1..=5)
                    .map(|i| entry(9, 40_000 + i, put(format!("s{i}"), b"s".to_vec(), 0)))
                    .collect(),
            )
            .unwrap();
        let built = src.path().join("built");
        crate::snapshot::build(&s.store, &built).unwrap();
        let want = s.store.range(&all(0)).unwrap().kvs;

        let dir = tempfile::tempdir().unwrap();
        let mut o = open(&Options::new(dir.path())).unwrap();
        fill(&mut o).await;
        let before = image(&o).await;
        let sm = o.state_machine.clone();
        let received = crate::snapshot::path(dir.path(), crate::snapshot::RECEIVED);
        std::fs::create_dir_all(received.parent().unwrap()).unwrap();
        let install = Arc::new(parking_lot::Mutex::new(None));
        let seen = Arc::new(parking_lot::Mutex::new(None));
        let hook: Hook = {
            let (install, seen, o2) = (install.clone(), seen.clone(), open_view(&o));
            Box::new(move |step| match step {
                COPIED => {
                    std::fs::copy(&built, &received).unwrap();
                    let sm = sm.clone();
                    *install.lock() = Some(std::thread::spawn(move || {
                        sm.install_file(crate::snapshot::RECEIVED).unwrap();
                    }));
                    std::thread::sleep(Duration::from_millis(200));
                }
                POINTED => *seen.lock() = Some(block_on(image(&o2))),
                _ => {}
            })
        };
        defragment_with(&o, hook);
        // The install had not run when the new generation was named.
        assert_eq!(seen.lock().take().unwrap(), before);
        let install = install.lock().take().unwrap();
        install.join().unwrap();
        let after = image(&o).await;
        assert_eq!(after.kvs, want);
        assert_eq!(after.revisions, 5);
    }

    /// Another handle on the same opened store, for a hook.
    fn open_view(o: &Opened) -> Opened {
        Opened {
            log_store: o.log_store.clone(),
            state_machine: o.state_machine.clone(),
            store: o.store.clone(),
        }
    }
}
