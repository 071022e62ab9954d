//! Raft snapshots of the MVCC store: build, verify, install, all streamed
//! through files, so no snapshot is ever whole in memory.
//!
//! # Format
//! ```text
//! b"CAIRNSNP" | version u32 BE | header_len u32 BE | postcard(Header)
//! then Header.entries times: key_len u32 BE | key | value_len u32 BE | value
//! then crc32 (u32 BE) of every byte before it
//! ```
//! The entries are the `mvcc` tree's revision records, oldest first, then
//! its lease records as they were at the snapshot's revision, then its
//! alarm records.
//!
//! # Building while writes continue
//! Changes at or below the current revision never change, except by
//! physical compaction. The builder notes the applied log id and the
//! current revision R under the state lock, then pauses physical
//! compaction while it copies every record up to R. Writes go on above R.
//! Installs and defragments, which replace the tree, wait for the build
//! (`Shared::copies`).
//! The header comes first and holds the record count, so the records are
//! counted in one pass over the tree and written in a second.
//!
//! # Installing
//! The received file is `snap/installing`; it is verified in one pass, a
//! marker in the `raft` tree (flushed) says an install is under way, the
//! `mvcc` tree is replaced from a second pass and flushed, and only then
//! does the file become `snap/current` and the marker go. [`crate::open`]
//! redoes an interrupted install from whichever file it left.
//!
//! # Durability of `current`
//! `snap/current` never describes more than the store holds on disk: a
//! build flushes the store before it renames its file to `current`, and an
//! install renames the file only after the loaded state is flushed. A build
//! never replaces a newer snapshot (one with a greater last log id), and
//! builds and installs take turns on the file.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use openraft::SnapshotMeta;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lease;
use crate::mvcc::{
    alarm_key, encode_postcard, parse_alarm_key, Rebuild, Store, META_APPLIED, META_COMPACT,
    META_COMPACT_DONE, META_MEMBERSHIP, META_REV,
};
use crate::revision::{self, Revision};
use crate::typ::{Member, NodeId};

const MAGIC: &[u8; 8] = b"CAIRNSNP";
const VERSION: u32 = 1;
/// The `raft` tree key that marks an install in progress.
pub(crate) const INSTALLING: &[u8] = b"installing";
/// IO buffer for snapshot files.
const BUF: usize = 256 << 10;

/// What a snapshot says about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Header {
    pub meta: SnapshotMeta<NodeId, Member>,
    pub revision: i64,
    pub compact: i64,
    pub compact_done: i64,
    pub entries: u64,
}

/// The snapshot file the state machine answers `get_current_snapshot` with.
pub(crate) const CURRENT: &str = "current";
/// A received snapshot while it is being installed; renamed to
/// [`CURRENT`] once the state it holds is durable in the store.
pub(crate) const RECEIVED: &str = "installing";
/// Files under `snap/` with this extension are scratch (builds in
/// progress, snapshots being received, backups being sent); `open`
/// removes any a crash left.
pub(crate) const SCRATCH_EXT: &str = "tmp";

pub(crate) fn path(dir: &Path, name: &str) -> PathBuf {
    snap_dir(dir).join(name)
}

/// The directory of a data dir's snapshot files.
pub(crate) fn snap_dir(dir: &Path) -> PathBuf {
    dir.join("snap")
}

/// A fresh scratch path in directory `dir`, unique in this process.
pub(crate) fn scratch(dir: &Path, what: &str) -> Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    fs::create_dir_all(dir)?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ok(dir.join(format!("{what}-{}-{n}.{SCRATCH_EXT}", std::process::id())))
}

/// Removes the scratch files a crash left in `dir/snap/`.
pub(crate) fn clean_scratch(dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(snap_dir(dir)) else {
        return Ok(());
    };
    for entry in entries {
        let p = entry?.path();
        if p.extension().is_some_and(|e| e == SCRATCH_EXT) {
            fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// Renames snapshot file `from` (a path under `dir/snap/`) to `name`,
/// durably.
pub(crate) fn rename(dir: &Path, from: &Path, name: &str) -> Result<()> {
    fs::rename(from, path(dir, name))?;
    // Durability: the rename is on disk before anyone relies on it.
    crate::engine::sync_dir(&snap_dir(dir))
}

/// Writes a snapshot: the header, the records, then the checksum.
pub(crate) struct Writer<W: Write> {
    out: W,
    crc: crc32fast::Hasher,
    left: u64,
}

impl<W: Write> Writer<W> {
    pub(crate) fn new(out: W, header: &Header) -> Result<Self> {
        let h = encode_postcard(header);
        let mut w = Writer {
            out,
            crc: crc32fast::Hasher::new(),
            left: header.entries,
        };
        w.put(MAGIC)?;
        w.put(&VERSION.to_be_bytes())?;
        w.put(&(h.len() as u32).to_be_bytes())?;
        w.put(&h)?;
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.crc.update(b);
        self.out.write_all(b)?;
        Ok(())
    }

    fn put_chunk(&mut self, b: &[u8]) -> Result<()> {
        self.put(&(b.len() as u32).to_be_bytes())?;
        self.put(b)
    }

    pub(crate) fn record(&mut self, k: &[u8], v: &[u8]) -> Result<()> {
        self.left = self
            .left
            .checked_sub(1)
            .ok_or_else(|| Error::Corruption("snapshot: more records than counted".into()))?;
        self.put_chunk(k)?;
        self.put_chunk(v)
    }

    /// Writes the checksum; returns the output.
    pub(crate) fn finish(mut self) -> Result<W> {
        if self.left != 0 {
            return Err(Error::Corruption(format!(
                "snapshot: {} records fewer than counted",
                self.left
            )));
        }
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_be_bytes())?;
        Ok(self.out)
    }
}

/// Builds a snapshot of `store` as it is now into a new file at `to`,
/// synced; returns its header.
pub(crate) fn build(store: &Store, to: &Path) -> Result<Header> {
    let s = &store.shared;
    // No install or defragment replaces the tree while it is counted and
    // copied.
    let _copy = s.copies.read();
    let st = s.state.read();
    let (applied, membership, revision, compact) =
        (st.applied, st.membership.clone(), st.current, st.compact);
    // Leases change in place, so they are copied at R, under the lock;
    // revision records at or below R never change and are copied after.
    let leases = st.leases.records();
    let alarms: Vec<Vec<u8>> = st.alarms.iter().map(|(m, a)| alarm_key(*m, *a)).collect();
    // Physical compaction pauses while the records are copied; a job
    // scheduled later waits too, since it can only come from an apply that
    // needs `state`, which is held until the pause is in place.
    let _pause = s.comp.pause();
    // Taken under `state`: it holds every record up to R. A defragment
    // switching meanwhile leaves it whole until it is dropped.
    let backend = s.engine.backend();
    drop(st);
    let compact_done = backend
        .mvcc
        .get(META_COMPACT_DONE)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, i64::from_be_bytes);
    let records = || {
        backend
            .mvcc
            .range(vec![revision::PREFIX]..Revision::lower_bound(revision + 1))
    };
    let counted = records().keys().try_fold(0u64, |n, k| k.map(|_| n + 1))?;
    let snapshot_id = match applied {
        Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, revision),
        None => format!("0-0-{revision}"),
    };
    let header = Header {
        meta: SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id,
        },
        revision,
        compact,
        compact_done,
        entries: counted + leases.len() as u64 + alarms.len() as u64,
    };
    let mut w = Writer::new(BufWriter::with_capacity(BUF, File::create(to)?), &header)?;
    for item in records() {
        let (k, v) = item?;
        w.record(&k, &v)?;
    }
    for (k, v) in &leases {
        w.record(k, v)?;
    }
    for k in &alarms {
        w.record(k, &[])?;
    }
    // Not synced: only a snapshot saved as current must be durable (the
    // caller syncs it before the rename); a backup is read back at once.
    w.finish()?.into_inner().map_err(|e| e.into_error())?;
    Ok(header)
}

fn bad(what: &str) -> Error {
    Error::Corruption(format!("snapshot: {what}"))
}

/// Reads a snapshot record by record, checking its structure as it goes
/// and its checksum at the end.
pub(crate) struct Reader<R: Read> {
    r: R,
    crc: crc32fast::Hasher,
    left: u64,
    pub header: Header,
}

/// Reads exactly `buf.len()` bytes, or fails with `what`.
fn read_exact(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => bad(what),
        _ => Error::Io(e),
    })
}

impl<R: Read> Reader<R> {
    /// Reads the magic, version and header.
    pub(crate) fn new(mut r: R) -> Result<Self> {
        let mut crc = crc32fast::Hasher::new();
        let mut fixed = [0u8; 16];
        read_exact(&mut r, &mut fixed, "not a Cairn snapshot")?;
        if &fixed[..8] != MAGIC {
            return Err(bad("not a Cairn snapshot"));
        }
        let word = |at: usize| {
            u32::from_be_bytes([fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]])
        };
        let version = word(8);
        if version != VERSION {
            return Err(bad(&format!("unknown format version {version}")));
        }
        let mut h = Vec::new();
        let hlen = u64::from(word(12));
        if (&mut r).take(hlen).read_to_end(&mut h)? as u64 != hlen {
            return Err(bad("header cut short"));
        }
        crc.update(&fixed);
        crc.update(&h);
        let header: Header = postcard::from_bytes(&h).map_err(|e| bad(&format!("header: {e}")))?;
        Ok(Reader {
            r,
            crc,
            left: header.entries,
            header,
        })
    }

    fn chunk(&mut self, into: &mut Vec<u8>) -> Result<()> {
        let mut len = [0u8; 4];
        read_exact(&mut self.r, &mut len, "record cut short")?;
        self.crc.update(&len);
        let len = u64::from(u32::from_be_bytes(len));
        into.clear();
        // Grows as bytes arrive: a damaged length cannot ask for gigabytes.
        if (&mut self.r).take(len).read_to_end(into)? as u64 != len {
            return Err(bad("record cut short"));
        }
        self.crc.update(into);
        Ok(())
    }

    /// Reads the next record into `k` and `v`; false after the last one,
    /// once the checksum matched and nothing follows it.
    pub(crate) fn next(&mut self, k: &mut Vec<u8>, v: &mut Vec<u8>) -> Result<bool> {
        if self.left == 0 {
            let mut crc = [0u8; 4];
            read_exact(&mut self.r, &mut crc, "checksum cut short")?;
            if self.crc.clone().finalize() != u32::from_be_bytes(crc) {
                return Err(bad("checksum mismatch"));
            }
            if self.r.read(&mut [0u8; 1])? != 0 {
                return Err(bad(&format!(
                    "bytes after the {} records the header counts",
                    self.header.entries
                )));
            }
            return Ok(false);
        }
        self.chunk(k)?;
        self.chunk(v)?;
        let lease = k.len() == lease::PREFIX.len() + 8 && k.starts_with(lease::PREFIX);
        if !lease && parse_alarm_key(k).is_none() && Revision::from_key(k).is_none() {
            return Err(bad("record is neither a revision, a lease nor an alarm"));
        }
        self.left -= 1;
        Ok(true)
    }

    /// Calls `each` with every record, then checks the checksum.
    pub(crate) fn for_each(
        mut self,
        mut each: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<Header> {
        let (mut k, mut v) = (Vec::new(), Vec::new());
        while self.next(&mut k, &mut v)? {
            each(&k, &v)?;
        }
        Ok(self.header)
    }
}

/// Opens snapshot file `p` for reading.
pub(crate) fn open_file(p: &Path) -> Result<Reader<BufReader<File>>> {
    Reader::new(BufReader::with_capacity(BUF, File::open(p)?))
}

/// Checks snapshot file `p` whole (structure and checksum); returns its
/// header.
pub(crate) fn verify(p: &Path) -> Result<Header> {
    open_file(p)?.for_each(|_, _| Ok(()))
}

/// Reads only the header of snapshot file `name`, if there is one; the
/// records and checksum are checked when the snapshot is used.
pub(crate) fn read_header(dir: &Path, name: &str) -> Result<Option<Header>> {
    match File::open(path(dir, name)) {
        Ok(f) => Reader::new(BufReader::new(f)).map(|r| Some(r.header)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Replaces the store's content with snapshot file `p`'s, which the caller
/// has verified, in `tree` (the `mvcc` tree of the caller's write guard).
/// The caller has set the [`INSTALLING`] marker.
pub(crate) fn load_into(store: &Store, tree: &sled::Tree, p: &Path) -> Result<()> {
    let s = &store.shared;
    // Readers wait for the whole install; they must not see a half state.
    let mut st = s.state.write();
    let gate = s.comp.gate.write();
    tree.clear()?;
    // Plain inserts, not sled batches: a crash mid-load leaves the
    // INSTALLING marker, and open loads the file again from scratch, so
    // atomicity adds nothing here. A batch would cost two synced writes
    // and stop every sled reader in the process while it applies.
    let r = open_file(p)?;
    let h = r.header.clone();
    let mut rebuild = Rebuild::new(
        h.revision,
        h.compact,
        h.meta.last_log_id,
        h.meta.last_membership.clone(),
    );
    r.for_each(|k, v| {
        tree.insert(k, v)?;
        rebuild.record(k, v)
    })?;
    tree.insert(META_APPLIED, encode_postcard(&h.meta.last_log_id))?;
    tree.insert(META_MEMBERSHIP, encode_postcard(&h.meta.last_membership))?;
    tree.insert(META_REV, &h.revision.to_be_bytes())?;
    tree.insert(META_COMPACT, &h.compact.to_be_bytes())?;
    tree.insert(META_COMPACT_DONE, &h.compact_done.to_be_bytes())?;
    drop(gate);
    store.reload(&mut st, rebuild.finish(h.compact_done)?);
    drop(st);
    store.notify_replaced();
    Ok(())
}
