//! Backups: the byte stream etcd's Snapshot RPC sends, which `cairnctl
//! snapshot save`, `etcdctl snapshot save` and the scheduled backups write
//! to files, and its offline verification and restore.
//!
//! # Format
//! ```text
//! b"CAIRNBAK" | version u32 BE | snapshot_len u64 BE
//! | a Raft snapshot (see `snapshot`: records, leases, alarms, crc32)
//! | zero padding to a multiple of 512
//! | SHA-256 of every byte before it (32 bytes)
//! ```
//! etcdctl's `snapshot save` accepts a stream whose size is a multiple of
//! 512 plus 32 and whose last 32 bytes are the SHA-256 of the rest; the
//! content is Cairn's own (etcd's is a bbolt file).
//!
//! # Restore
//! A backup restores into a fresh data dir as an installed snapshot whose
//! membership is the new cluster's, with the backup's last log id kept
//! (so every restored member starts from the same state and log position)
//! and a vote in that log id's term, so new entries get later terms. Keys,
//! revisions, the compact revision, leases and alarms are kept as they were.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use cairn_proto::mvccpb::KeyValue;
use openraft::{CommittedLeaderId, LogId, Membership, SnapshotMeta, StoredMembership, Vote};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::lease;
use crate::mvcc::{parse_alarm_key, Store};
use crate::revision::Revision;
use crate::snapshot;
use crate::storage::{open, Options};
use crate::typ::{Member, NodeId};

const MAGIC: &[u8; 8] = b"CAIRNBAK";
const VERSION: u32 = 1;
const PREFIX_LEN: usize = 20;
/// etcd's snapshot files are bbolt pages: a multiple of 512 bytes.
pub const BLOCK: usize = 512;
/// The trailing SHA-256.
pub const DIGEST_LEN: usize = 32;

/// What a verified backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The store's revision when the backup was taken.
    pub revision: i64,
    /// Its compact revision.
    pub compact_revision: i64,
    /// Keys live at `revision`.
    pub keys: u64,
    /// Change records (every kept revision of every key).
    pub revisions: u64,
    /// Leases.
    pub leases: u64,
    /// Active alarms, as (member id, `AlarmType` as i32).
    pub alarms: Vec<(u64, i32)>,
    /// The last log index applied when it was taken.
    pub applied_index: u64,
    /// The members of the cluster it was taken from.
    pub members: BTreeMap<NodeId, Member>,
    /// A crc32 of every record, in order: equal for equal content.
    pub hash: u32,
    /// The backup's size in bytes, digest included.
    pub size: u64,
}

fn bad(what: &str) -> Error {
    Error::BadBackup(what.to_owned())
}

/// A damaged snapshot inside a backup is a bad backup, not a bad data dir.
fn as_backup(e: Error) -> Error {
    match e {
        Error::Corruption(what) => Error::BadBackup(what),
        other => other,
    }
}

impl Store {
    /// Takes a backup of the store as it is now: a consistent snapshot at
    /// the current revision, while writes go on above it. The snapshot is
    /// built into a scratch file in the data dir's `snap/`, unlinked once
    /// open, and read from there, so memory use does not grow with the
    /// store.
    ///
    /// # Errors
    /// Storage and IO errors.
    pub fn backup(&self) -> Result<Backup> {
        let snap_dir = snapshot::snap_dir(&self.shared.engine.dir);
        let tmp = snapshot::scratch(&snap_dir, "backup")?;
        let built = snapshot::build(self, &tmp);
        let opened = built.and_then(|_| Ok(File::open(&tmp)?));
        let _ = fs::remove_file(&tmp);
        let f = opened?;
        let snap_len = f.metadata()?.len();
        let body = PREFIX_LEN as u64 + snap_len;
        let pad = body.div_ceil(BLOCK as u64) * BLOCK as u64 - body;
        let mut prefix = [0u8; PREFIX_LEN];
        prefix[..8].copy_from_slice(MAGIC);
        prefix[8..12].copy_from_slice(&VERSION.to_be_bytes());
        prefix[12..].copy_from_slice(&snap_len.to_be_bytes());
        Ok(Backup {
            inner: Cursor::new(prefix)
                .chain(BufReader::with_capacity(256 << 10, f).take(snap_len))
                .chain(io::repeat(0).take(pad)),
            sha: Sha256::new(),
            digest: None,
            len: body + pad + DIGEST_LEN as u64,
        })
    }
}

/// A backup being taken: reads as the backup's bytes, digest last.
pub struct Backup {
    #[allow(clippy::type_complexity)]
    inner: io::Chain<
        io::Chain<Cursor<[u8; PREFIX_LEN]>, io::Take<BufReader<File>>>,
        io::Take<io::Repeat>,
    >,
    sha: Sha256,
    /// The digest, and how much of it was read, once the rest is read.
    digest: Option<([u8; DIGEST_LEN], usize)>,
    len: u64,
}

impl Backup {
    /// The backup's size in bytes, digest included.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Never: a backup holds at least its prefix and digest.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl std::fmt::Debug for Backup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backup").field("len", &self.len).finish()
    }
}

impl Read for Backup {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.digest.is_none() {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() {
                self.sha.update(&buf[..n]);
                return Ok(n);
            }
            self.digest = Some((self.sha.finalize_reset().into(), 0));
        }
        let (digest, at) = self.digest.as_mut().expect("invariant: set above");
        let n = buf.len().min(DIGEST_LEN - *at);
        buf[..n].copy_from_slice(&digest[*at..*at + n]);
        *at += n;
        Ok(n)
    }
}

/// Reads exactly `buf.len()` bytes of a backup.
fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => bad("cut short"),
        _ => Error::Io(e),
    })
}

/// Checks that the SHA-256 of the first `data` bytes of `f` is the digest
/// that follows them.
fn check_digest(f: &mut File, data: u64) -> Result<()> {
    f.seek(SeekFrom::Start(0))?;
    let mut sha = Sha256::new();
    let mut r = BufReader::with_capacity(256 << 10, &mut *f).take(data);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
    }
    let mut digest = [0u8; DIGEST_LEN];
    read_exact(r.get_mut(), &mut digest)?;
    if sha.finalize().as_slice() != digest {
        return Err(bad("SHA-256 digest mismatch"));
    }
    Ok(())
}

/// Checks the size and, if `digest`, the trailing digest of backup file
/// `f`, as `etcdctl snapshot save` does, then the prefix; returns the
/// snapshot's length. `f` is left where the snapshot begins.
fn unwrap(f: &mut File, digest: bool) -> Result<u64> {
    let size = f.metadata()?.len();
    if size < (BLOCK + DIGEST_LEN) as u64 || size % BLOCK as u64 != DIGEST_LEN as u64 {
        return Err(bad(&format!(
            "size {size} is not a multiple of {BLOCK} plus a {DIGEST_LEN}-byte digest"
        )));
    }
    let data = size - DIGEST_LEN as u64;
    if digest {
        check_digest(f, data)?;
    }
    f.seek(SeekFrom::Start(0))?;
    let mut prefix = [0u8; PREFIX_LEN];
    read_exact(f, &mut prefix)?;
    if &prefix[..8] != MAGIC {
        return Err(bad("not a Cairn backup (an etcd bbolt snapshot?)"));
    }
    let version = u32::from_be_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
    if version != VERSION {
        return Err(bad(&format!("unknown format version {version}")));
    }
    let len = u64::from_be_bytes(prefix[12..20].try_into().expect("invariant: 8 bytes"));
    let end = len
        .checked_add(PREFIX_LEN as u64)
        .filter(|&e| e <= data)
        .ok_or_else(|| bad("snapshot length beyond the file"))?;
    let mut padding = Vec::new();
    f.seek(SeekFrom::Start(end))?;
    (&mut *f).take(data - end).read_to_end(&mut padding)?;
    if padding.iter().any(|&b| b != 0) {
        return Err(bad("padding is not zero"));
    }
    f.seek(SeekFrom::Start(PREFIX_LEN as u64))?;
    Ok(len)
}

/// Opens backup file `p`: checks it as [`unwrap`] does (the digest if
/// `digest`) and returns a reader of the snapshot inside.
fn open_snapshot(p: &Path, digest: bool) -> Result<snapshot::Reader<io::Take<BufReader<File>>>> {
    let mut f = File::open(p)?;
    let len = unwrap(&mut f, digest)?;
    snapshot::Reader::new(BufReader::with_capacity(256 << 10, f).take(len)).map_err(as_backup)
}

/// Verifies backup file `p` with no server: the digest, the snapshot's
/// checksum and structure, and its internal consistency (every record at
/// or below the backup's revision, in order, its `mod_revision` its own,
/// versions and create revisions sane, every live key's lease present).
/// The file is read twice (the digest, then the records), never held in
/// memory.
///
/// # Errors
/// [`Error::BadBackup`] naming the problem: damage (the digest, the
/// snapshot's structure or checksum) before any content problem, since
/// damaged bytes read as nonsense; IO errors.
pub fn verify(p: &Path) -> Result<BackupInfo> {
    let r = open_snapshot(p, true)?;
    let h = r.header.clone();
    let mut hasher = crc32fast::Hasher::new();
    let (mut revisions, mut last) = (0u64, None::<Revision>);
    let mut live: HashMap<Vec<u8>, i64> = HashMap::new();
    let mut leases = BTreeSet::new();
    let mut alarms = Vec::new();
    let mut check = |k: &[u8], v: &[u8]| -> Result<()> {
        hasher.update(k);
        hasher.update(v);
        if let Some((rev, tombstone)) = Revision::from_key(k) {
            if last.is_some_and(|l| rev <= l) {
                return Err(bad(&format!(
                    "revision {}.{} out of order",
                    rev.main, rev.sub
                )));
            }
            last = Some(rev);
            if rev.main > h.revision {
                return Err(bad(&format!(
                    "revision {} above the backup's revision {}",
                    rev.main, h.revision
                )));
            }
            let kv = KeyValue::decode(v)
                .map_err(|e| bad(&format!("revision {}.{}: {e}", rev.main, rev.sub)))?;
            if kv.mod_revision != rev.main {
                return Err(bad(&format!(
                    "revision {} holds a value with mod_revision {}",
                    rev.main, kv.mod_revision
                )));
            }
            if tombstone {
                live.remove(&kv.key);
            } else {
                if kv.version < 1 || kv.create_revision < 1 || kv.create_revision > rev.main {
                    return Err(bad(&format!(
                        "revision {}: version {} created at {}",
                        rev.main, kv.version, kv.create_revision
                    )));
                }
                live.insert(kv.key, kv.lease);
            }
            revisions += 1;
        } else if let Some(alarm) = parse_alarm_key(k) {
            alarms.push(alarm);
        } else {
            let id = k
                .strip_prefix(lease::PREFIX)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(i64::from_be_bytes)
                .ok_or_else(|| bad("bad lease record"))?;
            leases.insert(id);
        }
        Ok(())
    };
    // The first content problem, reported once the checksum has passed.
    let mut problem = None;
    r.for_each(|k, v| {
        if problem.is_none() {
            problem = check(k, v).err();
        }
        Ok(())
    })
    .map_err(as_backup)?;
    if let Some(e) = problem {
        return Err(e);
    }
    if h.compact > h.revision || h.compact_done > h.compact {
        return Err(bad(&format!(
            "compact revision {} (done {}) above revision {}",
            h.compact, h.compact_done, h.revision
        )));
    }
    if let Some((key, lease)) = live.iter().find(|(_, l)| **l != 0 && !leases.contains(*l)) {
        return Err(bad(&format!(
            "key {:?} is attached to lease {lease:x}, which is missing",
            String::from_utf8_lossy(key)
        )));
    }
    Ok(BackupInfo {
        revision: h.revision,
        compact_revision: h.compact,
        keys: live.len() as u64,
        revisions,
        leases: leases.len() as u64,
        alarms,
        applied_index: h.meta.last_log_id.map_or(0, |l| l.index),
        members: h
            .meta
            .last_membership
            .membership()
            .nodes()
            .map(|(id, m)| (*id, m.clone()))
            .collect(),
        hash: hasher.finalize(),
        size: fs::metadata(p)?.len(),
    })
}

/// Restores backup file `p` into `dir` (a member's storage directory,
/// which must not hold a database) as member `me` of a new cluster of
/// `members`, all voters. Every member of the new cluster is restored from
/// the same backup. The records stream from the file into the store.
///
/// # Errors
/// [`Error::BadBackup`] for a backup that does not verify or a `dir` that
/// already holds a database; storage errors otherwise.
pub fn restore(
    p: &Path,
    dir: &Path,
    members: BTreeMap<NodeId, Member>,
    me: NodeId,
) -> Result<BackupInfo> {
    let info = verify(p)?;
    if !members.contains_key(&me) {
        return Err(bad("the restored member is not in the new cluster"));
    }
    if crate::engine::holds_database(dir) {
        return Err(bad(&format!("{} already holds a database", dir.display())));
    }
    // The digest was checked just now; the copy below checks the
    // snapshot's checksum again as it reads.
    let r = open_snapshot(p, false)?;
    let mut header = r.header.clone();
    let last = header
        .meta
        .last_log_id
        .unwrap_or_else(|| LogId::new(CommittedLeaderId::new(1, 0), 1));
    let voters: BTreeSet<NodeId> = members.keys().copied().collect();
    header.meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), Membership::new(vec![voters], members)),
        snapshot_id: format!("restored-{}-{}", last.index, header.revision),
    };
    let opened = open(&Options::new(dir))?;
    let received = snapshot::path(dir, snapshot::RECEIVED);
    fs::create_dir_all(snapshot::snap_dir(dir))?;
    let out = BufWriter::with_capacity(256 << 10, File::create(&received)?);
    let mut w = snapshot::Writer::new(out, &header)?;
    r.for_each(|k, v| w.record(k, v)).map_err(as_backup)?;
    let f = w.finish()?.into_inner().map_err(|e| e.into_error())?;
    // Durability: the snapshot is whole on disk before it is installed.
    f.sync_all()?;
    opened.state_machine.install_file(snapshot::RECEIVED)?;
    opened
        .log_store
        .set_vote(&Vote::new(last.leader_id.term, me))?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use cairn_proto::etcdserverpb::{LeaseGrantRequest, PutRequest, RangeRequest};
    use openraft::{Entry, EntryPayload};

    use super::*;
    use crate::typ::Request;

    fn store_with_data(dir: &Path) -> crate::Opened {
        let o = open(&Options::new(dir)).unwrap();
        let mut reqs = vec![Request::LeaseGrant(LeaseGrantRequest { ttl: 100, id: 7 })];
        for i in 0..20 {
            reqs.push(Request::Put(PutRequest {
                key: format!("k{}", i % 5).into_bytes(),
                value: format!("v{i}").into_bytes(),
                lease: if i == 19 { 7 } else { 0 },
                ..Default::default()
            }));
        }
        let entries = reqs
            .into_iter()
            .enumerate()
            .map(|(i, r)| Entry {
                log_id: LogId::new(CommittedLeaderId::new(3, 1), i as u64 + 1),
                payload: EntryPayload::Normal(r),
            })
            .collect();
        o.store.apply(entries).unwrap();
        o
    }

    /// Takes a backup into memory (tests only).
    fn take(store: &Store) -> Vec<u8> {
        let mut backup = store.backup().unwrap();
        let mut bytes = Vec::new();
        backup.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len() as u64, backup.len());
        bytes
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn a_backup_has_etcds_shape_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let o = store_with_data(dir.path());
        let b = take(&o.store);
        assert_eq!(b.len() % BLOCK, DIGEST_LEN);
        let info = verify(&write(dir.path(), "b", &b)).unwrap();
        assert_eq!(info.revision, 21);
        assert_eq!(info.keys, 5);
        assert_eq!(info.revisions, 20);
        assert_eq!(info.leases, 1);
        assert_eq!(info.applied_index, 21);
    }

    #[test]
    fn verify_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let o = store_with_data(dir.path());
        let b = take(&o.store);
        let check = |bytes: &[u8]| verify(&write(dir.path(), "x", bytes));
        assert!(check(&b).is_ok());
        let mut flipped = b.clone();
        flipped[100] ^= 1;
        assert!(check(&flipped).unwrap_err().to_string().contains("digest"));
        assert!(check(&b[..b.len() - 1])
            .unwrap_err()
            .to_string()
            .contains("size"));
        // A record changed and the digest recomputed: the crc catches it.
        let mut forged = b[..b.len() - DIGEST_LEN].to_vec();
        forged[PREFIX_LEN + 60] ^= 1;
        let digest = Sha256::digest(&forged);
        forged.extend_from_slice(&digest);
        let err = check(&forged).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
    }

    /// Wraps snapshot bytes in a backup's envelope (prefix, zero padding
    /// to a block, SHA-256), as `Store::backup` does.
    fn envelope(snap: &[u8]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&VERSION.to_be_bytes());
        b.extend_from_slice(&(snap.len() as u64).to_be_bytes());
        b.extend_from_slice(snap);
        b.resize(b.len().div_ceil(BLOCK) * BLOCK, 0);
        let digest = Sha256::digest(&b);
        b.extend_from_slice(&digest);
        b
    }

    /// A backup whose content is wrong fails verify with what is wrong:
    /// two revisions swapped, or a key's lease record left out. One whose
    /// checksum is wrong as well is reported as damaged, although its
    /// first wrong record comes before the checksum.
    #[test]
    fn verify_reports_damage_before_content_problems() {
        let dir = tempfile::tempdir().unwrap();
        let b = take(&store_with_data(dir.path()).store);
        let mut r = open_snapshot(&write(dir.path(), "whole", &b), true).unwrap();
        let header = r.header.clone();
        let (mut k, mut v, mut records) = (Vec::new(), Vec::new(), Vec::new());
        while r.next(&mut k, &mut v).unwrap() {
            records.push((k.clone(), v.clone()));
        }
        let rewrite = |records: &[(Vec<u8>, Vec<u8>)]| {
            let mut header = header.clone();
            header.entries = records.len() as u64;
            let mut w = snapshot::Writer::new(Vec::new(), &header).unwrap();
            for (k, v) in records {
                w.record(k, v).unwrap();
            }
            w.finish().unwrap()
        };
        let check = |snap: &[u8]| verify(&write(dir.path(), "x", &envelope(snap)));
        assert!(check(&rewrite(&records)).is_ok());

        let mut swapped = records.clone();
        swapped.swap(0, 1);
        let snap = rewrite(&swapped);
        let err = check(&snap).unwrap_err().to_string();
        assert!(err.contains("out of order"), "{err}");
        let mut damaged = snap.clone();
        *damaged.last_mut().unwrap() ^= 1;
        let err = check(&damaged).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");

        let no_lease: Vec<_> = records
            .into_iter()
            .filter(|(k, _)| !k.starts_with(lease::PREFIX))
            .collect();
        let err = check(&rewrite(&no_lease)).unwrap_err().to_string();
        assert!(err.contains("lease 7, which is missing"), "{err}");
    }

    #[test]
    fn restore_keeps_revisions_and_leases_and_refuses_a_used_dir() {
        let src = tempfile::tempdir().unwrap();
        let b = take(&store_with_data(src.path()).store);
        let b = write(src.path(), "b", &b);
        let dst = tempfile::tempdir().unwrap();
        let member = Member {
            name: "a".into(),
            peer_urls: vec!["http://127.0.0.1:2380".into()],
            client_urls: Vec::new(),
        };
        let members = BTreeMap::from([(9, member)]);
        restore(&b, dst.path(), members.clone(), 9).unwrap();
        {
            let o = open(&Options::new(dst.path())).unwrap();
            assert_eq!(o.store.revision(), 21);
            let all = RangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            };
            let r = o.store.range(&all).unwrap();
            assert_eq!(r.count, 5);
            assert_eq!(r.kvs[4].mod_revision, 21);
            assert_eq!(r.kvs[4].lease, 7);
            assert_eq!(o.store.lease(7).unwrap().keys.len(), 1);
            let (_, m) = o.store.applied_state();
            assert_eq!(m.membership().voter_ids().collect::<Vec<_>>(), vec![9]);
        }
        assert!(restore(&b, dst.path(), members, 9).is_err());
    }
}
