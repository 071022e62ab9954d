//! The ground truth: every committed write, in revision order and by key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::escaped::Escaped;
use crate::{Error, Result};

/// A key-value pair as etcd's `mvccpb.KeyValue` carries it.
///
/// `lease` 0 means no lease, as on the wire: the checker compares what was
/// delivered, so it keeps etcd's encoding rather than an `Option`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Kv {
    /// The key.
    pub key: Vec<u8>,
    /// The value; empty in a DELETE event.
    pub value: Vec<u8>,
    /// The revision of the put that started the key's current life; 0 in a
    /// DELETE event.
    pub create_revision: i64,
    /// The revision of the change this kv records.
    pub mod_revision: i64,
    /// 1 on the put that creates the key, then +1 a put; 0 in a DELETE
    /// event.
    pub version: i64,
    /// The lease the key is attached to, 0 for none.
    pub lease: i64,
}

impl Kv {
    /// The kv of a DELETE event: etcd fills in only the key and the delete's
    /// revision.
    pub fn tombstone(key: impl Into<Vec<u8>>, revision: i64) -> Self {
        Kv {
            key: key.into(),
            mod_revision: revision,
            ..Kv::default()
        }
    }
}

impl fmt::Display for Kv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={} (create {}, mod {}, version {}, lease {})",
            Escaped(&self.key),
            Escaped(&self.value),
            self.create_revision,
            self.mod_revision,
            self.version,
            self.lease
        )
    }
}

/// The type of a watch event, etcd's `mvccpb.Event.EventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A put created or updated the key.
    Put,
    /// A delete removed a live key.
    Delete,
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventKind::Put => "PUT",
            EventKind::Delete => "DELETE",
        })
    }
}

/// One change of a committed write, in the order the txn made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Creates or updates `key`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
        /// The lease to attach, 0 for none.
        lease: i64,
    },
    /// Deletes `key`; a delete of an absent key is not a change and is
    /// skipped.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl Change {
    /// A put without a lease.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Change::Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
        }
    }

    /// A delete of one key.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Change::Delete { key: key.into() }
    }

    fn key(&self) -> &[u8] {
        match self {
            Change::Put { key, .. } | Change::Delete { key } => key,
        }
    }
}

/// One change as a watcher must see it: the event and the key's kv before.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    /// The revision of the write; the record's place in the log breaks ties.
    pub(crate) revision: i64,
    pub(crate) kind: EventKind,
    /// The event's kv (a tombstone for a delete).
    pub(crate) kv: Kv,
    /// The key's kv at `revision - 1`, which is what `prev_kv` must carry:
    /// a txn changes a key at most once, so the kv just before the change is
    /// the kv at the previous revision.
    pub(crate) prev: Option<Kv>,
}

/// The ground truth of a watch check: every committed write, with the
/// revisions etcd gave them, and every compaction.
///
/// Worked example (etcd's bookkeeping, which [`History::commit`] repeats):
///
/// ```text
/// rev 2  put a=x      a: create 2, mod 2, version 1
/// rev 3  put a=y      a: create 2, mod 3, version 2
/// rev 4  delete a     DELETE event, kv = {key a, mod 4}; a is absent
/// rev 5  put a=z      a: create 5, mod 5, version 1  (a new life)
/// ```
///
/// Internally the changes sit in one log in (revision, sub-index) order, so a
/// change's index in the log is its place in the order watchers must follow;
/// a per-key index of log positions finds a key's changes without a scan.
#[derive(Debug, Clone)]
pub struct History {
    /// The store's revision: 1 when empty, then the last commit's.
    revision: i64,
    /// The highest compaction recorded.
    compacted: Option<i64>,
    log: Vec<Record>,
    /// For each key ever changed, its positions in `log`, ascending.
    keys: BTreeMap<Vec<u8>, Vec<usize>>,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl History {
    /// An empty store, at revision 1 as etcd starts.
    pub fn new() -> Self {
        History {
            revision: 1,
            compacted: None,
            log: Vec::new(),
            keys: BTreeMap::new(),
        }
    }

    /// Records one committed write txn at `revision`, its changes in the
    /// order the txn made them (their sub-index order).
    ///
    /// Revisions need only rise: a harness that lost track of some writes
    /// can still record the rest, and any event at a missing revision is
    /// reported as not in the history.
    ///
    /// # Errors
    /// Nothing is recorded if `revision` is not above [`History::revision`]
    /// ([`Error::StaleRevision`]), a key is empty ([`Error::EmptyKey`]) or
    /// named twice ([`Error::DuplicateKey`]), or nothing would change
    /// ([`Error::NoChange`]): etcd gives no revision to such a txn.
    pub fn commit(
        &mut self,
        revision: i64,
        changes: impl IntoIterator<Item = Change>,
    ) -> Result<()> {
        if revision <= self.revision {
            return Err(Error::StaleRevision {
                revision,
                current: self.revision,
            });
        }
        let changes: Vec<Change> = changes.into_iter().collect();
        let mut seen = BTreeSet::new();
        let mut changes_something = false;
        for change in &changes {
            let key = change.key();
            if key.is_empty() {
                return Err(Error::EmptyKey { revision });
            }
            if !seen.insert(key) {
                return Err(Error::DuplicateKey {
                    revision,
                    key: key.to_vec(),
                });
            }
            changes_something |= match change {
                Change::Put { .. } => true,
                Change::Delete { key } => self.live(key).is_some(),
            };
        }
        if !changes_something {
            return Err(Error::NoChange { revision });
        }
        for change in changes {
            let (key, kind, kv, prev) = match change {
                Change::Put { key, value, lease } => {
                    let prev = self.live(&key).cloned();
                    let kv = Kv {
                        key: key.clone(),
                        value,
                        create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                        mod_revision: revision,
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                        lease,
                    };
                    (key, EventKind::Put, kv, prev)
                }
                Change::Delete { key } => {
                    let Some(prev) = self.live(&key).cloned() else {
                        continue;
                    };
                    let kv = Kv::tombstone(key.clone(), revision);
                    (key, EventKind::Delete, kv, Some(prev))
                }
            };
            self.keys.entry(key).or_default().push(self.log.len());
            self.log.push(Record {
                revision,
                kind,
                kv,
                prev,
            });
        }
        self.revision = revision;
        Ok(())
    }

    /// Records a compaction at `revision`. Only the highest one matters to
    /// the checks, so the order of calls does not.
    ///
    /// # Errors
    /// [`Error::BadCompaction`] if `revision` is not in
    /// `1..=`[`History::revision`]; nothing is recorded.
    pub fn compact(&mut self, revision: i64) -> Result<()> {
        if revision < 1 || revision > self.revision {
            return Err(Error::BadCompaction {
                revision,
                current: self.revision,
            });
        }
        self.compacted = Some(self.compacted.map_or(revision, |c| c.max(revision)));
        Ok(())
    }

    /// The store's revision: 1 for an empty store, else the last commit's.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The highest compaction recorded, if any.
    pub fn compacted(&self) -> Option<i64> {
        self.compacted
    }

    /// The kv of `key` as of `revision`, `None` if the key was absent then.
    pub fn get(&self, key: &[u8], revision: i64) -> Option<Kv> {
        let positions = self.keys.get(key)?;
        let after = positions.partition_point(|&i| self.log[i].revision <= revision);
        let record = &self.log[positions[after.checked_sub(1)?]];
        (record.kind == EventKind::Put).then(|| record.kv.clone())
    }

    /// The kv of `key` now, if it is live.
    fn live(&self, key: &[u8]) -> Option<&Kv> {
        let &last = self.keys.get(key)?.last()?;
        let record = &self.log[last];
        (record.kind == EventKind::Put).then_some(&record.kv)
    }

    /// Every change, in (revision, sub-index) order.
    pub(crate) fn log(&self) -> &[Record] {
        &self.log
    }

    /// The log position of the change of `key` at `revision`, if any.
    pub(crate) fn find(&self, key: &[u8], revision: i64) -> Option<usize> {
        let positions = self.keys.get(key)?;
        let at = positions
            .binary_search_by_key(&revision, |&i| self.log[i].revision)
            .ok()?;
        Some(positions[at])
    }

    /// The per-key index: each key ever changed with its log positions.
    pub(crate) fn keys(&self) -> &BTreeMap<Vec<u8>, Vec<usize>> {
        &self.keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, create: i64, modr: i64, version: i64, lease: i64) -> Kv {
        Kv {
            key: key.into(),
            value: value.into(),
            create_revision: create,
            mod_revision: modr,
            version,
            lease,
        }
    }

    /// Put, update, delete and re-create `a`, with `b` alongside in a txn.
    fn history() -> History {
        let mut h = History::new();
        h.commit(2, [Change::put("a", "1")]).unwrap();
        h.commit(
            3,
            [
                Change::put("a", "2"),
                Change::Put {
                    key: b"b".to_vec(),
                    value: b"1".to_vec(),
                    lease: 7,
                },
            ],
        )
        .unwrap();
        // The delete of the absent `c` is no change and gets no record.
        h.commit(5, [Change::delete("a"), Change::delete("c")])
            .unwrap();
        h.commit(6, [Change::put("a", "3")]).unwrap();
        h.commit(7, [Change::put("a", "4"), Change::put("b", "2")])
            .unwrap();
        h
    }

    #[test]
    fn bookkeeping_through_delete_and_recreate() {
        let h = history();
        assert_eq!(h.revision(), 7);
        for (key, revision, want) in [
            ("a", 1, None),
            ("a", 2, Some(kv("a", "1", 2, 2, 1, 0))),
            ("a", 3, Some(kv("a", "2", 2, 3, 2, 0))),
            ("a", 4, Some(kv("a", "2", 2, 3, 2, 0))),
            ("a", 5, None),
            ("a", 6, Some(kv("a", "3", 6, 6, 1, 0))),
            ("a", 7, Some(kv("a", "4", 6, 7, 2, 0))),
            ("a", 100, Some(kv("a", "4", 6, 7, 2, 0))),
            ("b", 2, None),
            ("b", 3, Some(kv("b", "1", 3, 3, 1, 7))),
            ("b", 7, Some(kv("b", "2", 3, 7, 2, 0))),
            ("c", 7, None),
        ] {
            assert_eq!(h.get(key.as_bytes(), revision), want, "{key}@{revision}");
        }
    }

    #[test]
    fn log_order_tombstones_and_prev() {
        let h = history();
        let got: Vec<_> = h
            .log()
            .iter()
            .map(|r| (r.revision, r.kind, r.kv.key.clone(), r.prev.is_some()))
            .collect();
        let want: Vec<(i64, EventKind, Vec<u8>, bool)> = vec![
            (2, EventKind::Put, b"a".to_vec(), false),
            (3, EventKind::Put, b"a".to_vec(), true),
            (3, EventKind::Put, b"b".to_vec(), false),
            (5, EventKind::Delete, b"a".to_vec(), true),
            (6, EventKind::Put, b"a".to_vec(), false),
            (7, EventKind::Put, b"a".to_vec(), true),
            (7, EventKind::Put, b"b".to_vec(), true),
        ];
        assert_eq!(got, want);
        assert_eq!(h.log()[3].kv, Kv::tombstone("a", 5));
        assert_eq!(h.log()[3].prev, Some(kv("a", "2", 2, 3, 2, 0)));
        assert_eq!(h.find(b"a", 5), Some(3));
        assert_eq!(h.find(b"a", 4), None);
        assert_eq!(h.find(b"c", 5), None);
    }

    #[test]
    fn refuses_what_etcd_would_not_commit() {
        for (name, revision, changes, want) in [
            (
                "same revision",
                7,
                vec![Change::put("x", "1")],
                Error::StaleRevision {
                    revision: 7,
                    current: 7,
                },
            ),
            (
                "older revision",
                3,
                vec![Change::put("x", "1")],
                Error::StaleRevision {
                    revision: 3,
                    current: 7,
                },
            ),
            (
                "empty key",
                8,
                vec![Change::put("", "1")],
                Error::EmptyKey { revision: 8 },
            ),
            (
                "key twice",
                8,
                vec![Change::put("x", "1"), Change::delete("x")],
                Error::DuplicateKey {
                    revision: 8,
                    key: b"x".to_vec(),
                },
            ),
            ("no changes", 8, vec![], Error::NoChange { revision: 8 }),
            (
                "delete of absent keys",
                8,
                vec![Change::delete("c"), Change::delete("z")],
                Error::NoChange { revision: 8 },
            ),
        ] {
            let mut h = history();
            assert_eq!(h.commit(revision, changes), Err(want), "{name}");
            assert_eq!(h.revision(), 7, "{name}: nothing recorded");
            assert_eq!(h.log().len(), 7, "{name}: nothing recorded");
        }
    }

    #[test]
    fn compactions() {
        let mut h = history();
        assert_eq!(h.compacted(), None);
        for (revision, ok, compacted) in [
            (0, false, None),
            (8, false, None),
            (4, true, Some(4)),
            (3, true, Some(4)),
            (7, true, Some(7)),
        ] {
            let got = h.compact(revision);
            assert_eq!(got.is_ok(), ok, "compact({revision}): {got:?}");
            assert_eq!(h.compacted(), compacted, "after compact({revision})");
        }
    }
}
