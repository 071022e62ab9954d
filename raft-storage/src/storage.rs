//! Opening a data dir: one sled database for the log and the state machine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::log_store::LogStore;
use crate::mvcc::Store;
use crate::snapshot::{self, INSTALLING};
use crate::state_machine::StateMachine;

/// The on-disk format this build writes, kept in the `raft` tree.
const FORMAT_KEY: &[u8] = b"format";
const FORMAT: &[u8] = b"cairn-1";

/// Where and how to open the store.
#[derive(Debug, Clone)]
pub struct Options {
    /// The directory for the database and snapshots.
    pub dir: PathBuf,
    /// sled's page cache bound, in bytes. sled's memory use tracks it.
    pub cache_capacity: u64,
}

impl Options {
    /// Options for `dir` with a 256 MiB cache.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Options {
            dir: dir.into(),
            cache_capacity: 256 << 20,
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

fn db_path(dir: &Path) -> PathBuf {
    dir.join("db")
}

/// Opens (or creates) the store in `opts.dir`.
///
/// # Errors
/// [`Error::Corruption`] when the directory holds a database this build
/// did not write or cannot read; it is never overwritten. IO and sled
/// errors otherwise.
pub fn open(opts: &Options) -> Result<Opened> {
    std::fs::create_dir_all(&opts.dir)?;
    let path = db_path(&opts.dir);
    let existed = path.exists();
    let db = sled::Config::new()
        .path(&path)
        .cache_capacity(opts.cache_capacity)
        .open()
        .map_err(|e| match e {
            sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => {
                Error::Corruption(format!("{}: {e}", path.display()))
            }
            other => Error::Sled(other),
        })?;
    let raft = db.open_tree("raft")?;
    match raft.get(FORMAT_KEY)? {
        Some(f) if f.as_ref() == FORMAT => {}
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
    let log_store = LogStore::open(&db)?;
    let store = Store::open(&db)?;
    let state_machine = StateMachine {
        store: store.clone(),
        raft_tree: raft.clone(),
        dir: Arc::new(opts.dir.clone()),
    };
    if raft.get(INSTALLING)?.is_some() {
        // A crash cut a snapshot install short: finish it from the file,
        // which was saved before the install began.
        let bytes = snapshot::load(&opts.dir)?.ok_or_else(|| {
            Error::Corruption("snapshot install interrupted and its file is gone".into())
        })?;
        state_machine.install_bytes(&bytes)?;
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
