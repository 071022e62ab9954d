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
use std::path::Path;

use cairn_proto::mvccpb::KeyValue;
use openraft::{CommittedLeaderId, LogId, Membership, SnapshotMeta, StoredMembership, Vote};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::lease;
use crate::mvcc::{parse_alarm_key, Store};
use crate::revision::Revision;
use crate::snapshot::{self, Decoded};
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
    /// the current revision, while writes go on above it.
    ///
    /// # Errors
    /// Storage errors.
    pub fn backup(&self) -> Result<Vec<u8>> {
        let (_, snap) = snapshot::build(self)?;
        Ok(wrap(&snap))
    }
}

/// Wraps snapshot bytes into the backup format.
fn wrap(snap: &[u8]) -> Vec<u8> {
    let body = PREFIX_LEN + snap.len();
    let padded = body.div_ceil(BLOCK) * BLOCK;
    let mut out = Vec::with_capacity(padded + DIGEST_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&(snap.len() as u64).to_be_bytes());
    out.extend_from_slice(snap);
    out.resize(padded, 0);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// Checks the size and the trailing digest, as `etcdctl snapshot save`
/// does, then the prefix; returns the snapshot inside.
fn unwrap(bytes: &[u8]) -> Result<&[u8]> {
    if bytes.len() < BLOCK + DIGEST_LEN || bytes.len() % BLOCK != DIGEST_LEN {
        return Err(bad(&format!(
            "size {} is not a multiple of {BLOCK} plus a {DIGEST_LEN}-byte digest",
            bytes.len()
        )));
    }
    let (data, digest) = bytes.split_at(bytes.len() - DIGEST_LEN);
    if Sha256::digest(data).as_slice() != digest {
        return Err(bad("SHA-256 digest mismatch"));
    }
    if &data[..8] != MAGIC {
        return Err(bad("not a Cairn backup (an etcd bbolt snapshot?)"));
    }
    let version = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
    if version != VERSION {
        return Err(bad(&format!("unknown format version {version}")));
    }
    let len = u64::from_be_bytes(data[12..20].try_into().expect("invariant: 8 bytes"));
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_add(PREFIX_LEN))
        .filter(|&e| e <= data.len())
        .ok_or_else(|| bad("snapshot length beyond the file"))?;
    if data[end..].iter().any(|&b| b != 0) {
        return Err(bad("padding is not zero"));
    }
    Ok(&data[PREFIX_LEN..end])
}

/// Verifies a backup with no server: the digest, the snapshot's checksum
/// and structure, and its internal consistency (every record at or below
/// the backup's revision, in order, its `mod_revision` its own, versions
/// and create revisions sane, every live key's lease present).
///
/// # Errors
/// [`Error::BadBackup`] naming the first problem found.
pub fn verify(bytes: &[u8]) -> Result<BackupInfo> {
    let snap = unwrap(bytes)?;
    let d = Decoded::new(snap).map_err(as_backup)?;
    let h = &d.header;
    if h.compact > h.revision || h.compact_done > h.compact {
        return Err(bad(&format!(
            "compact revision {} (done {}) above revision {}",
            h.compact, h.compact_done, h.revision
        )));
    }
    let mut hasher = crc32fast::Hasher::new();
    let (mut revisions, mut last) = (0u64, None::<Revision>);
    let mut live: HashMap<Vec<u8>, i64> = HashMap::new();
    let mut leases = BTreeSet::new();
    let mut alarms = Vec::new();
    for r in d.records() {
        let (k, v) = r.map_err(as_backup)?;
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
        size: bytes.len() as u64,
    })
}

/// Restores a backup into `dir` (a member's storage directory, which must
/// not hold a database) as member `me` of a new cluster of `members`, all
/// voters. Every member of the new cluster is restored from the same backup.
///
/// # Errors
/// [`Error::BadBackup`] for a backup that does not verify or a `dir` that
/// already holds a database; storage errors otherwise.
pub fn restore(
    bytes: &[u8],
    dir: &Path,
    members: BTreeMap<NodeId, Member>,
    me: NodeId,
) -> Result<BackupInfo> {
    let info = verify(bytes)?;
    if !members.contains_key(&me) {
        return Err(bad("the restored member is not in the new cluster"));
    }
    if crate::engine::holds_database(dir) {
        return Err(bad(&format!("{} already holds a database", dir.display())));
    }
    let d = Decoded::new(unwrap(bytes)?)?;
    let mut header = d.header.clone();
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
    let snap = snapshot::encode(&header, d.body);
    let opened = open(&Options::new(dir))?;
    opened.state_machine.install_bytes(&snap)?;
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

    #[test]
    fn a_backup_has_etcds_shape_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let o = store_with_data(dir.path());
        let b = o.store.backup().unwrap();
        assert_eq!(b.len() % BLOCK, DIGEST_LEN);
        let info = verify(&b).unwrap();
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
        let b = o.store.backup().unwrap();
        let mut flipped = b.clone();
        flipped[100] ^= 1;
        assert!(verify(&flipped).unwrap_err().to_string().contains("digest"));
        assert!(verify(&b[..b.len() - 1])
            .unwrap_err()
            .to_string()
            .contains("size"));
        // A record changed and the digest recomputed: the crc catches it.
        let mut forged = b[..b.len() - DIGEST_LEN].to_vec();
        forged[PREFIX_LEN + 60] ^= 1;
        let digest = Sha256::digest(&forged);
        forged.extend_from_slice(&digest);
        assert!(verify(&forged).is_err());
    }

    #[test]
    fn restore_keeps_revisions_and_leases_and_refuses_a_used_dir() {
        let src = tempfile::tempdir().unwrap();
        let b = store_with_data(src.path()).store.backup().unwrap();
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
