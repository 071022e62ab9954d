//! The value types every API shares: newtypes for etcd's integers, the
//! response header, key-values and events.
//!
//! etcd's sentinels are turned into `Option`s here, once: a `lease` of 0 is
//! `None`, a `prev_kv` that was not asked for is `None`.

use std::fmt;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::mvccpb;

/// A revision of the store: the counter every mutating request raises by
/// exactly one. An empty store is at revision 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision(i64);

impl Revision {
    /// The revision with this number.
    pub const fn new(revision: i64) -> Self {
        Self(revision)
    }

    /// The number, as etcd sends it.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The revision right after this one.
    pub const fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl From<i64> for Revision {
    fn from(revision: i64) -> Self {
        Self(revision)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A lease's ID. Displayed in hex, as etcdctl prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(i64);

impl LeaseId {
    /// The lease with this ID. etcd's 0 means "no lease"; use `Option`
    /// instead of it.
    pub const fn new(id: i64) -> Self {
        Self(id)
    }

    /// The ID as etcd sends it.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// etcd's wire form of an optional lease: 0 for none.
    pub(crate) fn wire(lease: Option<LeaseId>) -> i64 {
        lease.map_or(0, LeaseId::get)
    }

    /// An optional lease from etcd's wire form.
    pub(crate) fn from_wire(id: i64) -> Option<LeaseId> {
        (id != 0).then_some(LeaseId(id))
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A cluster member's ID. Displayed in hex, as etcd prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MemberId(u64);

impl MemberId {
    /// The member with this ID.
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    /// The ID as etcd sends it.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// The header of every response: who answered, and at which revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResponseHeader {
    /// The cluster the answering member belongs to.
    pub cluster_id: u64,
    /// The member that answered.
    pub member_id: MemberId,
    /// The store's current revision when the request was served (also on
    /// a Range at an older revision).
    pub revision: Revision,
    /// The Raft term of the answering member.
    pub raft_term: u64,
}

impl ResponseHeader {
    pub(crate) fn from_pb(header: Option<pb::ResponseHeader>) -> Self {
        let h = header.unwrap_or_default();
        Self {
            cluster_id: h.cluster_id,
            member_id: MemberId(h.member_id),
            revision: Revision(h.revision),
            raft_term: h.raft_term,
        }
    }
}

/// One key's value at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value; empty for a keys-only read.
    pub value: Vec<u8>,
    /// The revision where this key's current generation began.
    pub create_revision: Revision,
    /// The revision of the last change to this key.
    pub mod_revision: Revision,
    /// 1 on create, +1 on each change; a delete resets it.
    pub version: i64,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

impl KeyValue {
    /// The key as UTF-8.
    ///
    /// # Errors
    ///
    /// If the key is not valid UTF-8.
    pub fn key_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.key)
    }

    /// The value as UTF-8.
    ///
    /// # Errors
    ///
    /// If the value is not valid UTF-8.
    pub fn value_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.value)
    }

    pub(crate) fn from_pb(kv: mvccpb::KeyValue) -> Self {
        Self {
            key: kv.key,
            value: kv.value,
            create_revision: Revision(kv.create_revision),
            mod_revision: Revision(kv.mod_revision),
            version: kv.version,
            lease: LeaseId::from_wire(kv.lease),
        }
    }
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The key was created or changed.
    Put,
    /// The key was deleted (its `kv` holds the key and the revision of the
    /// deletion, no value).
    Delete,
}

/// One change seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change; its `mod_revision` is the event's revision.
    pub kv: KeyValue,
    /// The key before the change, when the watch asked for it and there was
    /// one.
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }

    pub(crate) fn from_pb(event: mvccpb::Event) -> Self {
        let kind = match mvccpb::event::EventType::try_from(event.r#type) {
            Ok(mvccpb::event::EventType::Delete) => EventKind::Delete,
            _ => EventKind::Put,
        };
        Self {
            kind,
            kv: KeyValue::from_pb(event.kv.unwrap_or_default()),
            prev_kv: event.prev_kv.map(KeyValue::from_pb),
        }
    }
}

/// The end of the range holding every key that starts with `prefix`: the
/// prefix with its last byte below 0xff raised by one (etcd's `GetPrefixRangeEnd`).
/// A prefix of only 0xff bytes (or an empty one) yields `"\0"`, every key
/// from `prefix` on.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_etcds() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"a", b"b"),
            (b"foo/", b"foo0"),
            (b"a\xff", b"b"),
            (b"\xff\xff", b"\0"),
            (b"", b"\0"),
        ];
        for (prefix, end) in cases {
            assert_eq!(prefix_end(prefix), *end, "prefix {prefix:?}");
        }
    }

    #[test]
    fn sentinels_become_options() {
        assert_eq!(LeaseId::from_wire(0), None);
        assert_eq!(LeaseId::from_wire(7), Some(LeaseId::new(7)));
        assert_eq!(LeaseId::wire(None), 0);
        assert_eq!(LeaseId::new(255).to_string(), "ff");
    }
}
