//! Leases as replicated state: which leases exist, their TTLs, and which
//! keys each one holds.
//!
//! Grant, revoke and checkpoint are log entries like any write, so every
//! member holds the same leases. Expiry is not here: apply never reads the
//! clock. The leader decides that a lease expired and proposes its revoke.
//!
//! # On-disk layout (tree `mvcc`)
//!
//! ```text
//! b"l/" | id i64 BE  -> postcard(Stored)   one per lease
//! ```
//!
//! Which keys a lease holds is not stored: it is each live key's `lease`
//! field, read back when the index is rebuilt.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The prefix of lease records in the `mvcc` tree.
pub(crate) const PREFIX: &[u8] = b"l/";

/// A lease as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    ttl: i64,
    remaining: i64,
}

/// A lease, as readers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease ID.
    pub id: i64,
    /// The TTL it was granted with, in seconds.
    pub ttl: i64,
    /// The remaining TTL last checkpointed through Raft, in seconds; 0 when
    /// never checkpointed.
    pub remaining_ttl: i64,
    /// The keys attached to it, in order.
    pub keys: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    stored: Stored,
    keys: BTreeSet<Vec<u8>>,
}

/// Every lease, and the lease each key is attached to.
#[derive(Debug, Clone, Default)]
pub(crate) struct Leases {
    leases: BTreeMap<i64, Entry>,
    /// Key → lease, for keys with a lease.
    attached: HashMap<Vec<u8>, i64>,
}

/// The `mvcc` tree key of lease `id`.
pub(crate) fn record_key(id: i64) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn encode(stored: Stored) -> Vec<u8> {
    crate::mvcc::encode_postcard(&stored)
}

impl Leases {
    pub(crate) fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// Creates lease `id`; returns the record to write. The caller checked
    /// that it does not exist.
    pub(crate) fn grant(&mut self, id: i64, ttl: i64) -> (Vec<u8>, Vec<u8>) {
        let stored = Stored { ttl, remaining: 0 };
        self.leases.insert(
            id,
            Entry {
                stored,
                keys: BTreeSet::new(),
            },
        );
        (record_key(id), encode(stored))
    }

    /// Removes lease `id` and returns its keys in order (the caller deletes
    /// them), or None if it does not exist.
    pub(crate) fn revoke(&mut self, id: i64) -> Option<Vec<Vec<u8>>> {
        let entry = self.leases.remove(&id)?;
        for key in &entry.keys {
            self.attached.remove(key);
        }
        Some(entry.keys.into_iter().collect())
    }

    /// Records a checkpoint of lease `id`'s remaining TTL; returns the
    /// record to write, or None if the lease is gone.
    pub(crate) fn checkpoint(&mut self, id: i64, remaining: i64) -> Option<(Vec<u8>, Vec<u8>)> {
        let entry = self.leases.get_mut(&id)?;
        entry.stored.remaining = remaining;
        Some((record_key(id), encode(entry.stored)))
    }

    /// Attaches `key` to `lease` (0: to none), detaching it from the lease
    /// it had. The caller checked that `lease` exists.
    pub(crate) fn attach(&mut self, key: &[u8], lease: i64) {
        if self.attached.get(key) == Some(&lease) {
            return;
        }
        self.detach(key);
        if lease != 0 {
            if let Some(entry) = self.leases.get_mut(&lease) {
                entry.keys.insert(key.to_vec());
                self.attached.insert(key.to_vec(), lease);
            }
        }
    }

    /// Detaches a deleted `key` from its lease, if any.
    pub(crate) fn detach(&mut self, key: &[u8]) {
        if let Some(old) = self.attached.remove(key) {
            if let Some(entry) = self.leases.get_mut(&old) {
                entry.keys.remove(key);
            }
        }
    }

    /// Rebuild step: a lease record read back from disk.
    pub(crate) fn restore(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let id = key
            .strip_prefix(PREFIX)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(i64::from_be_bytes)
            .ok_or_else(|| Error::Corruption(format!("bad lease key {key:?}")))?;
        let stored: Stored = postcard::from_bytes(value)
            .map_err(|e| Error::Corruption(format!("lease {id:x}: {e}")))?;
        self.leases.insert(
            id,
            Entry {
                stored,
                keys: BTreeSet::new(),
            },
        );
        Ok(())
    }

    /// Rebuild step: a live key's lease, from its newest value.
    pub(crate) fn restore_key(&mut self, key: &[u8], lease: i64) -> Result<()> {
        if !self.contains(lease) {
            return Err(Error::Corruption(format!(
                "key {:?} is attached to lease {lease:x}, which does not exist",
                String::from_utf8_lossy(key)
            )));
        }
        self.attach(key, lease);
        Ok(())
    }

    /// Every lease record, for a snapshot.
    pub(crate) fn records(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.leases
            .iter()
            .map(|(id, e)| (record_key(*id), encode(e.stored)))
            .collect()
    }

    /// Lease `id` as readers see it.
    pub(crate) fn get(&self, id: i64) -> Option<Lease> {
        self.leases.get(&id).map(|e| Lease {
            id,
            ttl: e.stored.ttl,
            remaining_ttl: e.stored.remaining,
            keys: e.keys.iter().cloned().collect(),
        })
    }

    /// Every lease ID, ascending.
    pub(crate) fn ids(&self) -> Vec<i64> {
        self.leases.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_their_lease() {
        let mut l = Leases::default();
        l.grant(1, 10);
        l.grant(2, 20);
        l.attach(b"a", 1);
        l.attach(b"b", 1);
        l.attach(b"a", 2); // moves
        assert_eq!(l.get(1).unwrap().keys, vec![b"b".to_vec()]);
        assert_eq!(l.get(2).unwrap().keys, vec![b"a".to_vec()]);
        l.attach(b"b", 0); // a put without a lease detaches
        assert!(l.get(1).unwrap().keys.is_empty());
        l.detach(b"a");
        assert!(l.get(2).unwrap().keys.is_empty());
        l.attach(b"c", 2);
        assert_eq!(l.revoke(2), Some(vec![b"c".to_vec()]));
        assert_eq!(l.revoke(2), None);
        assert_eq!(l.ids(), vec![1]);
        // A revoked lease's keys are forgotten, so a new put starts clean.
        l.attach(b"c", 1);
        assert_eq!(l.get(1).unwrap().keys, vec![b"c".to_vec()]);
    }

    #[test]
    fn records_round_trip() {
        let mut l = Leases::default();
        l.grant(-5, 10);
        l.grant(7, 60);
        l.checkpoint(7, 42).unwrap();
        assert!(l.checkpoint(8, 1).is_none());
        let mut back = Leases::default();
        for (k, v) in l.records() {
            back.restore(&k, &v).unwrap();
        }
        assert_eq!(back.ids(), vec![-5, 7]);
        assert_eq!(back.get(7).unwrap().remaining_ttl, 42);
        assert!(back.restore(b"l/x", b"").is_err());
        assert!(back.restore_key(b"k", 99).is_err());
    }
}
