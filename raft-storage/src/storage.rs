//! Opening a data dir: the Raft log's write-ahead log, and the sled
//! database of the state machine.

use std::path::PathBuf;
use std::sync::Arc;

use crate::engine::{self, open_db, Backend, Engine};
use crate::error::{Error, Result};
use crate::log_store::LogStore;
use crate::mvcc::Store;
use crate::snapshot::{self, INSTALLING};
use crate::state_machine::StateMachine;

/// The on-disk format this build writes, kept in the `raft` tree: 2 since
/// the Raft log left sled for its own files (`wal`). A build that knows
/// only format 1 refuses it, rather than find no log in sled.
const FORMAT_KEY: &[u8] = b"format";
const FORMAT: &[u8] = b"cairn-2";
/// The format with the Raft log in sled, which [`open`] moves out.
const FORMAT_1: &[u8] = b"cairn-1";

/// The Raft log's directory in the store dir (see `wal`).
const WAL_DIR: &str = "wal";

/// Where and how to open the store.
#[derive(Debug, Clone)]
pub struct Options {
    /// The directory for the database and snapshots.
    pub dir: PathBuf,
    /// sled's page cache bound, in bytes. sled's memory use tracks it.
    pub cache_capacity: u64,
}

/// The default page cache bound: small, since the key index is in memory
/// anyway and edge boxes have little to spare.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

impl Options {
    /// Options for `dir` with a [`DEFAULT_CACHE_BYTES`] cache.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Options {
            dir: dir.into(),
            cache_capacity: DEFAULT_CACHE_BYTES,
        }
    }
}

/// An opened store: the halves openraft wants, and a read handle.
pub struct Opened {
    /// openraft's log storage.
    pub log_store: LogStore,
    /// openraft's state machine.
    pub state_machine: StateMachine,
    /// The read handle the server answers ranges from.
    pub store: Store,
}

/// Opens (or creates) the store in `opts.dir`.
///
/// The database is the generation `db-current` names (see `engine`); the
/// other generations, left by a defragment that a crash cut short, are
/// removed first.
///
/// # Errors
/// [`Error::Corruption`] when the directory holds a database this build
/// did not write or cannot read, or a pointer that names no database; it
/// is never overwritten. IO and sled errors otherwise.
pub fn open(opts: &Options) -> Result<Opened> {
    std::fs::create_dir_all(&opts.dir)?;
    let name = engine::open_current(&opts.dir)?;
    let path = opts.dir.join(&name);
    let existed = path.exists();
    let db = open_db(&path, opts.cache_capacity)?;
    let raft = db.open_tree("raft")?;
    let format = raft.get(FORMAT_KEY)?;
    let format_1 = format.as_ref().is_some_and(|f| f.as_ref() == FORMAT_1);
    // A database that already has a Raft log of format 2 must find it.
    let log_expected = format.is_some() && !format_1;
    match format {
        Some(f) if f.as_ref() == FORMAT || format_1 => {}
        Some(f) => {
            return Err(Error::Corruption(format!(
                "{}: unknown format {:?}",
                path.display(),
                String::from_utf8_lossy(&f)
            )))
        }
        None if existed && db.tree_names().len() > 1 && !is_blank(&db)? => {
            return Err(Error::Corruption(format!(
                "{}: not a Cairn database",
                path.display()
            )));
        }
        None => {
            raft.insert(FORMAT_KEY, FORMAT)?;
            db.flush()?;
        }
    }
    let installing = raft.get(INSTALLING)?.is_some();
    if installing {
        // A crash cut a snapshot install short; the `mvcc` tree holds part
        // of it and must not be read. Empty it, and load the snapshot again
        // below from the file the install left.
        db.open_tree("mvcc")?.clear()?;
    }
    let engine = Arc::new(Engine::new(
        opts.dir.clone(),
        opts.cache_capacity,
        Backend::new(db, name)?,
    ));
    let wal_dir = opts.dir.join(WAL_DIR);
    if log_expected && !wal_dir.exists() {
        return Err(Error::Corruption(format!(
            "{}: the Raft log is missing",
            wal_dir.display()
        )));
    }
    let log_store = LogStore::open(engine.clone(), &wal_dir)?;
    if format_1 {
        // The log has moved (durably): now a format 1 build must refuse it.
        let b = engine.backend();
        b.raft.insert(FORMAT_KEY, FORMAT)?;
        engine.sync(&b)?;
    }
    let store = Store::open(engine)?;
    let state_machine = StateMachine::new(store.clone(), opts.dir.clone())?;
    snapshot::clean_scratch(&opts.dir)?;
    if installing {
        // Before the rename the file is `installing`; after it, `current`
        // (and the marker was about to go).
        let name = [snapshot::RECEIVED, snapshot::CURRENT]
            .into_iter()
            .find(|n| snapshot::path(&opts.dir, n).exists())
            .ok_or_else(|| {
                Error::Corruption("snapshot install interrupted and its file is gone".into())
            })?;
        state_machine.install_file(name)?;
    }
    Ok(Opened {
        log_store,
        state_machine,
        store,
    })
}

/// Whether every tree of `db` is empty (a database created but never used).
fn is_blank(db: &sled::Db) -> Result<bool> {
    for name in db.tree_names() {
        if !db.open_tree(name)?.is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    use super::*;
    use crate::typ::Request;

    /// A crash after an install loaded its first records: the marker is
    /// set, the `mvcc` tree holds records without meta, and the received
    /// file is whole. Opening finishes the install.
    #[test]
    fn open_finishes_an_interrupted_install() {
        let a = tempfile::tempdir().unwrap();
        let built = a.path().join("built");
        {
            let o = open(&Options::new(a.path())).unwrap();
            let entries = (1..=10u64)
                .map(|i| Entry {
                    log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
                    payload: EntryPayload::Normal(Request::Put(PutRequest {
                        key: format!("k{i}").into_bytes(),
                        value: b"v".to_vec(),
                        ..Default::default()
                    })),
                })
                .collect();
            o.store.apply(entries).unwrap();
            snapshot::build(&o.store, &built).unwrap();
        }

        let b = tempfile::tempdir().unwrap();
        drop(open(&Options::new(b.path())).unwrap());
        {
            // open_db: it waits out the lock the handle dropped above still holds.
            let db = open_db(&b.path().join("db"), 1 << 20).unwrap();
            let mvcc = db.open_tree("mvcc").unwrap();
            mvcc.clear().unwrap();
            let mut r = snapshot::open_file(&built).unwrap();
            let (mut k, mut v) = (Vec::new(), Vec::new());
            for _ in 0..4 {
                assert!(r.next(&mut k, &mut v).unwrap());
                mvcc.insert(&k, &v[..]).unwrap();
            }
            db.open_tree("raft")
                .unwrap()
                .insert(INSTALLING, &[1u8])
                .unwrap();
            std::fs::create_dir_all(b.path().join("snap")).unwrap();
            std::fs::copy(&built, snapshot::path(b.path(), snapshot::RECEIVED)).unwrap();
            // A scratch file a crash left is removed by open.
            std::fs::write(
                snapshot::scratch(&snapshot::snap_dir(b.path()), "build").unwrap(),
                b"x",
            )
            .unwrap();
            db.flush().unwrap();
        }

        let o = open(&Options::new(b.path())).unwrap();
        assert_eq!(o.store.revision(), 11);
        let all = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        };
        assert_eq!(o.store.range(&all).unwrap().count, 10);
        assert_eq!(o.store.applied_index(), Some(10));
        assert!(snapshot::path(b.path(), snapshot::CURRENT).exists());
        let left: Vec<_> = std::fs::read_dir(b.path().join("snap"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [snapshot::CURRENT]);
    }
}
