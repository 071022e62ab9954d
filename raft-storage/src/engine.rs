//! The sled database of a data dir, behind the indirection that lets
//! defragment replace it while the store runs.
//!
//! # On disk
//! ```text
//! <dir>/db/            generation 0: where every data dir starts
//! <dir>/db.<n>/        generation n, written by a defragment
//! <dir>/db-current     names the generation in use ("db.3\n"); absent: `db`
//! ```
//! A defragment copies the live content into a new generation, flushes it,
//! and only then replaces `db-current` (temporary file, fsync, rename,
//! directory fsync). A crash at any point leaves the pointer naming a
//! whole generation: the old one until the rename is durable, the new one
//! after. [`open_current`] follows the pointer and removes every other
//! generation (an unfinished copy, or a retired one not yet deleted). A
//! pointer that names no generation is [`Error::Corruption`]; nothing is
//! removed then.
//!
//! # Holders
//! The MVCC store, the state machine, the physical compactor and the log
//! store (to sync before a purge) reach the database through one
//! [`Engine`]:
//! - a reader takes the current [`Backend`] ([`Engine::backend`]: an `Arc`
//!   clone under a read lock held for that instant) and keeps it for the
//!   rest of its operation, even if a switch happens meanwhile; the old
//!   generation still holds everything it read about;
//! - a writer takes a [`Write`] ([`Engine::write`]), which also holds the
//!   `writes` lock shared, so that a defragment's final copy and switch,
//!   which takes it exclusively, sees no write half done.
//!
//! # Lock order
//! The defragment mutex, then the MVCC store's `copies`, then `writes`,
//! then the store's `state` and `gate`. `current` is held
//! only for an `Arc` clone or the swap, never while taking another lock.

use std::fs;
use std::io::Write as _;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::{Error, Result};

/// Generation 0's directory name.
const FIRST: &str = "db";
/// The pointer file naming the generation in use.
const POINTER: &str = "db-current";
/// Where a new pointer is written before it is renamed over the old one.
const POINTER_TMP: &str = "db-current.tmp";

/// How long `open_db` waits for a database lock that a handle dropped a
/// moment ago in this process may still hold: sled releases it from its own
/// IO threads, shortly after the last handle goes.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// One generation's database and its trees.
pub(crate) struct Backend {
    pub db: sled::Db,
    /// The format marker, the install marker.
    pub raft: sled::Tree,
    /// The MVCC records and their meta.
    pub mvcc: sled::Tree,
    /// The generation's directory name (`db`, `db.3`).
    pub name: String,
}

impl Backend {
    pub(crate) fn new(db: sled::Db, name: String) -> Result<Backend> {
        Ok(Backend {
            raft: db.open_tree("raft")?,
            mvcc: db.open_tree("mvcc")?,
            db,
            name,
        })
    }
}

/// The data dir's database, swappable by a defragment.
pub(crate) struct Engine {
    /// The data dir: the parent of every generation.
    pub(crate) dir: PathBuf,
    pub(crate) cache_capacity: u64,
    current: RwLock<Arc<Backend>>,
    /// Shared by every write; exclusive for a defragment's final copy and
    /// switch.
    writes: RwLock<()>,
    /// Held by the defragment under way (one at a time). Holds the
    /// generations switches retired and could not delete yet, because a
    /// reader still held them.
    pub(crate) defrag: Mutex<Vec<Retired>>,
}

/// A generation a switch left behind.
pub(crate) struct Retired {
    pub(crate) backend: Weak<Backend>,
    pub(crate) name: String,
}

/// What a writer holds: the `writes` lock shared, and the current backend.
pub(crate) struct Write<'a> {
    _writes: RwLockReadGuard<'a, ()>,
    backend: Arc<Backend>,
}

impl Deref for Write<'_> {
    type Target = Backend;
    fn deref(&self) -> &Backend {
        &self.backend
    }
}

impl Engine {
    pub(crate) fn new(dir: PathBuf, cache_capacity: u64, backend: Backend) -> Engine {
        Engine {
            dir,
            cache_capacity,
            current: RwLock::new(Arc::new(backend)),
            writes: RwLock::new(()),
            defrag: Mutex::new(Vec::new()),
        }
    }

    /// The current generation, for a reader.
    pub(crate) fn backend(&self) -> Arc<Backend> {
        self.current.read().clone()
    }

    /// The current generation, for a writer: no switch happens until the
    /// returned guard is dropped. Never call it while holding one.
    pub(crate) fn write(&self) -> Write<'_> {
        let writes = self.writes.read();
        Write {
            backend: self.backend(),
            _writes: writes,
        }
    }

    /// Blocks every writer until the guard is dropped.
    pub(crate) fn block_writes(&self) -> RwLockWriteGuard<'_, ()> {
        self.writes.write()
    }

    /// Makes `backend` current. The caller holds [`Engine::block_writes`].
    pub(crate) fn switch(&self, backend: Backend) -> Arc<Backend> {
        std::mem::replace(&mut *self.current.write(), Arc::new(backend))
    }

    /// Makes everything written to `backend` durable, on power loss too.
    /// sled's own flush is `pwrite` and `sync_file_range`, which syncs
    /// neither the file's metadata nor the disk's write cache; and sled
    /// never syncs the files under `blobs/`, where it keeps items too big
    /// for its pages. So after the flush: `fdatasync` of its file, of every
    /// blob, and of the blob directory.
    pub(crate) fn sync(&self, backend: &Backend) -> Result<()> {
        backend.db.flush()?;
        let path = self.dir.join(&backend.name);
        fs::File::open(path.join("db"))?.sync_data()?;
        let blobs = path.join("blobs");
        match fs::read_dir(&blobs) {
            Ok(entries) => {
                for e in entries {
                    match fs::File::open(e?.path()) {
                        Ok(blob) => blob.sync_data()?,
                        // sled deleted it meanwhile.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                sync_dir(&blobs)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// The name of the generation after the newest one on disk.
    pub(crate) fn next_generation(&self) -> Result<String> {
        let mut newest = generation(&self.backend().name).unwrap_or(0);
        for e in fs::read_dir(&self.dir)? {
            if let Some(n) = e?.file_name().to_str().and_then(generation) {
                newest = newest.max(n);
            }
        }
        Ok(generation_name(newest + 1))
    }

    /// Deletes every retired generation whose last handle is gone, waiting
    /// up to `wait` for the rest; those still open are left for a later
    /// defragment or the next open. `retired` is the list held in
    /// [`Engine::defrag`].
    pub(crate) fn reap(&self, retired: &mut Vec<Retired>, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            retired.retain(|r| {
                if r.backend.strong_count() > 0 {
                    return true;
                }
                match fs::remove_dir_all(self.dir.join(&r.name)) {
                    Ok(()) => false,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                    Err(e) => {
                        tracing::warn!(generation = %r.name, error = %e, "cannot delete a retired database yet");
                        true
                    }
                }
            });
            if retired.is_empty() || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The generation number of directory `name`: 0 for `db`, n for `db.<n>`.
fn generation(name: &str) -> Option<u64> {
    if name == FIRST {
        return Some(0);
    }
    let n = name.strip_prefix("db.")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok().filter(|n| *n > 0)
}

fn generation_name(n: u64) -> String {
    if n == 0 {
        FIRST.to_owned()
    } else {
        format!("db.{n}")
    }
}

/// Whether `dir` holds a database (of any generation).
pub(crate) fn holds_database(dir: &Path) -> bool {
    dir.join(POINTER).exists() || dir.join(FIRST).exists()
}

/// The generation the pointer of `dir` names (`db` without a pointer),
/// after removing every other generation and a pointer left half written.
///
/// # Errors
/// [`Error::Corruption`] for a pointer that is not a generation's name or
/// names a directory that does not exist; nothing is removed then.
pub(crate) fn open_current(dir: &Path) -> Result<String> {
    let name = match fs::read(dir.join(POINTER)) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let name = text.strip_suffix('\n').unwrap_or(&text);
            if generation(name).is_none() {
                return Err(Error::Corruption(format!(
                    "{}: {:?} does not name a database",
                    dir.join(POINTER).display(),
                    name
                )));
            }
            if !dir.join(name).is_dir() {
                return Err(Error::Corruption(format!(
                    "{} names {name}, which is missing",
                    dir.join(POINTER).display()
                )));
            }
            name.to_owned()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FIRST.to_owned(),
        Err(e) => return Err(e.into()),
    };
    for e in fs::read_dir(dir)? {
        let e = e?;
        let Some(other) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if other != name && generation(&other).is_some() {
            tracing::info!(generation = %other, "removing a database generation not in use");
            fs::remove_dir_all(e.path())?;
        } else if other == POINTER_TMP {
            fs::remove_file(e.path())?;
        }
    }
    Ok(name)
}

/// Makes `name` the generation in use on disk: the pointer is written to a
/// temporary file, synced, and renamed over the old one. The caller syncs
/// the directory.
///
/// # Errors
/// IO errors; the rename is the last step, so after an error the pointer
/// still names the old generation. Only [`sync_dir`] makes it durable.
pub(crate) fn write_pointer(dir: &Path, name: &str) -> Result<()> {
    let tmp = dir.join(POINTER_TMP);
    let mut f = fs::File::create(&tmp)?;
    f.write_all(format!("{name}\n").as_bytes())?;
    // Durability: the pointer's content is on disk before it is the pointer.
    f.sync_all()?;
    fs::rename(&tmp, dir.join(POINTER))?;
    Ok(())
}

/// Syncs `dir`, making the names in it (a rename, new files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    // Durability: the directory's entries are on disk.
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Opens the sled database at `path`, waiting out a lock that this process
/// is about to release.
pub(crate) fn open_db(path: &Path, cache_capacity: u64) -> Result<sled::Db> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(sled::Error::Corruption { .. } | sled::Error::Unsupported(_)) => {
                return Err(Error::Corruption(format!(
                    "{}: not a readable sled database",
                    path.display()
                )))
            }
            // sled reports a held lock only as an IO error with this text.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(other) => return Err(Error::Sled(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_names() {
        for (name, n) in [
            ("db", Some(0)),
            ("db.1", Some(1)),
            ("db.42", Some(42)),
            ("db.0", None),
            ("db.", None),
            ("db.-1", None),
            ("db.+1", None),
            ("db.1x", None),
            ("db-current", None),
            ("db-current.tmp", None),
            ("snap", None),
        ] {
            assert_eq!(generation(name), n, "{name}");
            if let Some(n) = n {
                assert_eq!(generation_name(n), name);
            }
        }
    }

    /// The pointer: absent means `db`; garbage or a missing generation is
    /// refused and nothing is removed; otherwise the other generations go.
    #[test]
    fn open_current_follows_the_pointer() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(open_current(d).unwrap(), "db");
        for g in ["db", "db.1", "db.2"] {
            fs::create_dir_all(d.join(g)).unwrap();
            fs::write(d.join(g).join("data"), g).unwrap();
        }
        assert_eq!(open_current(d).unwrap(), "db");
        assert!(!d.join("db.1").exists() && !d.join("db.2").exists());

        for g in ["db.1", "db.2"] {
            fs::create_dir_all(d.join(g)).unwrap();
            fs::write(d.join(g).join("data"), g).unwrap();
        }
        for bad in ["db.7\n", "", "../etc\n", "db.1\nx"] {
            fs::write(d.join(POINTER), bad).unwrap();
            assert!(
                matches!(open_current(d), Err(Error::Corruption(_))),
                "{bad:?}"
            );
            assert!(d.join("db").exists() && d.join("db.1").exists());
        }
        write_pointer(d, "db.1").unwrap();
        fs::write(d.join(POINTER_TMP), "db.2\n").unwrap();
        assert_eq!(open_current(d).unwrap(), "db.1");
        assert!(d.join("db.1").join("data").exists());
        assert!(!d.join("db").exists() && !d.join("db.2").exists());
        assert!(!d.join(POINTER_TMP).exists());
        assert!(holds_database(d));
    }
}
