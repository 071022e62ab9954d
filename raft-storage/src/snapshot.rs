//! Raft snapshots of the MVCC store: build, encode, verify, install.
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
//! current revision R under the state lock, then holds the compaction gate
//! (shared) while it copies every record up to R. Writes go on above R.
//!
//! # Installing
//! The received bytes are verified and saved as `snap/installing`; a
//! marker in the `raft` tree (flushed) says an install is under way; the
//! `mvcc` tree is replaced and flushed; only then does the file become
//! `snap/current` and the marker go. [`crate::open`] redoes an interrupted
//! install from whichever file it left.
//!
//! # Durability of `current`
//! `snap/current` never describes more than the store holds on disk: a
//! build flushes the store before it saves the file, and an install renames
//! the file only after the loaded state is flushed. A build never replaces
//! a newer snapshot (one with a greater last log id), and builds and
//! installs take turns on the file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use openraft::SnapshotMeta;

use crate::typ::Member;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lease;
use crate::mvcc::{
    alarm_key, encode_postcard, parse_alarm_key, Store, META_APPLIED, META_COMPACT,
    META_COMPACT_DONE, META_MEMBERSHIP, META_REV,
};
use crate::revision::{self, Revision};
use crate::typ::NodeId;

const MAGIC: &[u8; 8] = b"CAIRNSNP";
const VERSION: u32 = 1;
/// The `raft` tree key that marks an install in progress.
pub(crate) const INSTALLING: &[u8] = b"installing";
const LOAD_BATCH: usize = 4096;

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

fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join("snap").join(name)
}

/// Renames the [`RECEIVED`] snapshot to [`CURRENT`].
pub(crate) fn promote(dir: &Path) -> Result<()> {
    fs::rename(path(dir, RECEIVED), path(dir, CURRENT))?;
    // Durability: the rename is on disk before the install is called done.
    fs::File::open(dir.join("snap"))?.sync_all()?;
    Ok(())
}

/// Builds a snapshot of `store` as it is now.
pub(crate) fn build(store: &Store) -> Result<(Header, Vec<u8>)> {
    let s = &store.shared;
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
    let mut body = Vec::new();
    let mut entries = 0u64;
    let end = Revision::lower_bound(revision + 1);
    for item in backend.mvcc.range(vec![revision::PREFIX]..end) {
        let (k, v) = item?;
        put_chunk(&mut body, &k);
        put_chunk(&mut body, &v);
        entries += 1;
    }
    for (k, v) in &leases {
        put_chunk(&mut body, k);
        put_chunk(&mut body, v);
        entries += 1;
    }
    for k in &alarms {
        put_chunk(&mut body, k);
        put_chunk(&mut body, &[]);
        entries += 1;
    }
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
        entries,
    };
    let bytes = encode(&header, &body);
    Ok((header, bytes))
}

fn put_chunk(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

pub(crate) fn encode(header: &Header, body: &[u8]) -> Vec<u8> {
    let h = encode_postcard(header);
    let mut out = Vec::with_capacity(16 + h.len() + body.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// A verified snapshot: its header and its records.
pub(crate) struct Decoded<'a> {
    pub header: Header,
    pub(crate) body: &'a [u8],
}

fn bad(what: &str) -> Error {
    Error::Corruption(format!("snapshot: {what}"))
}

/// Parses magic, version and header from the start of a snapshot; returns
/// the header and where the records begin.
fn parse_header(prefix: &[u8]) -> Result<(Header, usize)> {
    if prefix.len() < 16 || &prefix[..8] != MAGIC {
        return Err(bad("not a Cairn snapshot"));
    }
    let word = |at: usize| {
        u32::from_be_bytes([prefix[at], prefix[at + 1], prefix[at + 2], prefix[at + 3]])
    };
    let version = word(8);
    if version != VERSION {
        return Err(bad(&format!("unknown format version {version}")));
    }
    let hlen = word(12) as usize;
    let h = prefix
        .get(16..16 + hlen)
        .ok_or_else(|| bad("header cut short"))?;
    let header = postcard::from_bytes(h).map_err(|e| bad(&format!("header: {e}")))?;
    Ok((header, 16 + hlen))
}

/// Reads only the header of snapshot file `name`, if there is one; the
/// records and checksum are checked when the snapshot is used.
pub(crate) fn read_header(dir: &Path, name: &str) -> Result<Option<Header>> {
    use std::io::Read;
    let mut f = match fs::File::open(path(dir, name)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut fixed = [0u8; 16];
    f.read_exact(&mut fixed)
        .map_err(|_| bad("not a Cairn snapshot"))?;
    let hlen = u32::from_be_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]) as usize;
    let mut prefix = fixed.to_vec();
    prefix.resize(16 + hlen, 0);
    f.read_exact(&mut prefix[16..])
        .map_err(|_| bad("header cut short"))?;
    parse_header(&prefix).map(|(h, _)| Some(h))
}

impl<'a> Decoded<'a> {
    /// Checks magic, version, checksum and structure.
    pub fn new(bytes: &'a [u8]) -> Result<Decoded<'a>> {
        if bytes.len() < 20 {
            return Err(bad("not a Cairn snapshot"));
        }
        let (data, crc) = bytes.split_at(bytes.len() - 4);
        let crc = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32fast::hash(data) != crc {
            return Err(bad("checksum mismatch"));
        }
        let (header, start) = parse_header(data)?;
        let d = Decoded {
            header,
            body: &data[start..],
        };
        let mut n = 0u64;
        for r in d.records() {
            let (k, _) = r?;
            let lease = k.len() == lease::PREFIX.len() + 8 && k.starts_with(lease::PREFIX);
            let alarm = parse_alarm_key(k).is_some();
            if !lease && !alarm && Revision::from_key(k).is_none() {
                return Err(bad("record is neither a revision, a lease nor an alarm"));
            }
            n += 1;
        }
        if n != d.header.entries {
            return Err(bad(&format!(
                "{} records, header says {}",
                n, d.header.entries
            )));
        }
        Ok(d)
    }

    /// The (sled key, value) records.
    pub fn records(&self) -> impl Iterator<Item = Result<(&'a [u8], &'a [u8])>> + 'a {
        let mut rest = self.body;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let mut take = || -> Result<&'a [u8]> {
                let short = || bad("record cut short");
                let len = rest.get(..4).ok_or_else(short)?;
                let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
                let b = rest.get(4..4 + len).ok_or_else(short)?;
                rest = &rest[4 + len..];
                Ok(b)
            };
            let r = take().and_then(|k| Ok((k, take()?)));
            if r.is_err() {
                rest = &[];
            }
            Some(r)
        })
    }
}

/// Writes `bytes` as snapshot file `name`: to a temporary file, synced,
/// then renamed over the old one.
pub(crate) fn save(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = path(dir, name);
    let snap_dir = path
        .parent()
        .expect("invariant: snapshot paths have a parent");
    fs::create_dir_all(snap_dir)?;
    let tmp = snap_dir.join(format!("{name}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    // Durability: the snapshot is on disk before it replaces the old one.
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    fs::File::open(snap_dir)?.sync_all()?;
    Ok(())
}

/// Reads snapshot file `name`, if there is one.
pub(crate) fn load(dir: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    match fs::read(path(dir, name)) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Replaces the store's content with the snapshot's, in `tree` (the `mvcc`
/// tree of the caller's write guard). The caller has saved the snapshot
/// file as [`RECEIVED`] and set the [`INSTALLING`] marker.
pub(crate) fn load_into(store: &Store, tree: &sled::Tree, snap: &Decoded<'_>) -> Result<()> {
    let s = &store.shared;
    // Readers wait for the whole install; they must not see a half state.
    let mut st = s.state.write();
    let gate = s.comp.gate.write();
    tree.clear()?;
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for r in snap.records() {
        let (k, v) = r?;
        batch.insert(k, v);
        n += 1;
        if n % LOAD_BATCH == 0 {
            tree.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    let h = &snap.header;
    batch.insert(META_APPLIED, encode_postcard(&h.meta.last_log_id));
    batch.insert(META_MEMBERSHIP, encode_postcard(&h.meta.last_membership));
    batch.insert(META_REV, &h.revision.to_be_bytes());
    batch.insert(META_COMPACT, &h.compact.to_be_bytes());
    batch.insert(META_COMPACT_DONE, &h.compact_done.to_be_bytes());
    tree.apply_batch(batch)?;
    drop(gate);
    store.reload(&mut st, tree)?;
    drop(st);
    store.notify_replaced();
    Ok(())
}
