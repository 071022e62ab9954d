//! KV requests as builders ([`Get`], [`Put`], [`Delete`]) and their
//! responses.
//!
//! A builder is a plain value: build it, inspect it, then hand it to
//! [`crate::Client::get`], [`crate::Client::put`] or
//! [`crate::Client::delete`], or put it in a [`crate::Txn`]. A `&str`,
//! `String` or `Vec<u8>` converts into a [`Get`] or [`Delete`] of that one
//! key.

use cairn_proto::etcdserverpb as pb;
use pb::range_request::{SortOrder as PbSortOrder, SortTarget as PbSortTarget};

use crate::types::{prefix_end, KeyValue, LeaseId, ResponseHeader, Revision};

/// Which keys a request covers: one key, a prefix, a range or every key from
/// one on. Shared by [`Get`], [`Delete`], [`crate::Compare`] and
/// [`crate::WatchOptions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyRange {
    pub(crate) key: Vec<u8>,
    /// etcd's `range_end`: empty for one key.
    pub(crate) range_end: Vec<u8>,
}

impl KeyRange {
    pub(crate) fn key(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            range_end: Vec::new(),
        }
    }

    pub(crate) fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        let range_end = prefix_end(&key);
        Self { key, range_end }
    }

    /// Every key: both ends `"\0"`.
    pub(crate) fn all() -> Self {
        Self {
            key: vec![0],
            range_end: vec![0],
        }
    }

    pub(crate) fn range(key: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            range_end: end.into(),
        }
    }

    pub(crate) fn from_key(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            range_end: vec![0],
        }
    }
}

/// The order of a [`Get`]'s results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    /// The server's order: by key, ascending.
    #[default]
    None,
    /// Ascending by the sort target.
    Ascend,
    /// Descending by the sort target.
    Descend,
}

/// What a [`Get`] sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    CreateRevision,
    /// The mod revision.
    ModRevision,
    /// The value.
    Value,
}

/// A Range request: which keys, at which revision, and how.
///
/// ```
/// use cairn_client::{Get, Revision, SortOrder, SortTarget};
///
/// let get = Get::prefix("jobs/")
///     .with_limit(100)
///     .with_revision(Revision::new(42))
///     .with_sort(SortTarget::ModRevision, SortOrder::Descend)
///     .with_keys_only();
/// assert_eq!(get.key(), b"jobs/");
/// assert_eq!(get.range_end(), b"jobs0");
///
/// // A string is a Get of that one key.
/// let one: Get = "jobs/1".into();
/// assert!(one.range_end().is_empty());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Get {
    pub(crate) request: pb::RangeRequest,
}

impl Get {
    fn over(range: KeyRange) -> Self {
        Self {
            request: pb::RangeRequest {
                key: range.key,
                range_end: range.range_end,
                ..Default::default()
            },
        }
    }

    /// The (first) key.
    pub fn key(&self) -> &[u8] {
        &self.request.key
    }

    /// etcd's `range_end` (empty for one key, `"\0"` for every key from
    /// [`Get::key`] on).
    pub fn range_end(&self) -> &[u8] {
        &self.request.range_end
    }

    /// The key `key`.
    pub fn one(key: impl Into<Vec<u8>>) -> Self {
        Self::over(KeyRange::key(key))
    }

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self::over(KeyRange::prefix(prefix))
    }

    /// Keys in `[key, end)`.
    pub fn range(key: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        Self::over(KeyRange::range(key, end))
    }

    /// Every key `>= key`.
    pub fn from_key(key: impl Into<Vec<u8>>) -> Self {
        Self::over(KeyRange::from_key(key))
    }

    /// Every key.
    pub fn all() -> Self {
        Self::over(KeyRange::all())
    }

    /// At most `limit` keys (`more` tells whether there were others).
    pub fn with_limit(mut self, limit: i64) -> Self {
        self.request.limit = limit;
        self
    }

    /// Read at `revision` instead of the current one.
    pub fn with_revision(mut self, revision: Revision) -> Self {
        self.request.revision = revision.get();
        self
    }

    /// Sort the results.
    pub fn with_sort(mut self, target: SortTarget, order: SortOrder) -> Self {
        self.request.sort_target = match target {
            SortTarget::Key => PbSortTarget::Key,
            SortTarget::Version => PbSortTarget::Version,
            SortTarget::CreateRevision => PbSortTarget::Create,
            SortTarget::ModRevision => PbSortTarget::Mod,
            SortTarget::Value => PbSortTarget::Value,
        } as i32;
        self.request.sort_order = match order {
            SortOrder::None => PbSortOrder::None,
            SortOrder::Ascend => PbSortOrder::Ascend,
            SortOrder::Descend => PbSortOrder::Descend,
        } as i32;
        self
    }

    /// Serve from the answering member's own state, without confirming
    /// with the leader: faster, possibly stale.
    pub fn with_serializable(mut self) -> Self {
        self.request.serializable = true;
        self
    }

    /// Keys without values.
    pub fn with_keys_only(mut self) -> Self {
        self.request.keys_only = true;
        self
    }

    /// Only the count.
    pub fn with_count_only(mut self) -> Self {
        self.request.count_only = true;
        self
    }

    /// Only keys whose mod revision is `>= revision`.
    pub fn with_min_mod_revision(mut self, revision: Revision) -> Self {
        self.request.min_mod_revision = revision.get();
        self
    }

    /// Only keys whose mod revision is `<= revision`.
    pub fn with_max_mod_revision(mut self, revision: Revision) -> Self {
        self.request.max_mod_revision = revision.get();
        self
    }

    /// Only keys whose create revision is `>= revision`.
    pub fn with_min_create_revision(mut self, revision: Revision) -> Self {
        self.request.min_create_revision = revision.get();
        self
    }

    /// Only keys whose create revision is `<= revision`.
    pub fn with_max_create_revision(mut self, revision: Revision) -> Self {
        self.request.max_create_revision = revision.get();
        self
    }

    /// Whether this is a serializable read.
    pub fn is_serializable(&self) -> bool {
        self.request.serializable
    }

    /// The limit, if one is set.
    pub fn limit(&self) -> Option<i64> {
        (self.request.limit > 0).then_some(self.request.limit)
    }

    /// The revision asked for, if not the current one.
    pub fn revision(&self) -> Option<Revision> {
        (self.request.revision > 0).then_some(Revision::new(self.request.revision))
    }
}

impl From<&str> for Get {
    fn from(key: &str) -> Self {
        Get::one(key)
    }
}

impl From<String> for Get {
    fn from(key: String) -> Self {
        Get::one(key)
    }
}

impl From<Vec<u8>> for Get {
    fn from(key: Vec<u8>) -> Self {
        Get::one(key)
    }
}

impl From<&[u8]> for Get {
    fn from(key: &[u8]) -> Self {
        Get::one(key)
    }
}

/// The answer to a [`Get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResponse {
    /// Who answered; `header.revision` is the store's current revision
    /// (also when reading an older one).
    pub header: ResponseHeader,
    /// The keys found (none for a count-only read).
    pub kvs: Vec<KeyValue>,
    /// Whether the limit cut the result.
    pub more: bool,
    /// How many keys the range holds, regardless of the limit.
    pub count: i64,
}

impl GetResponse {
    pub(crate) fn from_pb(r: pb::RangeResponse) -> Self {
        Self {
            header: ResponseHeader::from_pb(r.header),
            kvs: r.kvs.into_iter().map(KeyValue::from_pb).collect(),
            more: r.more,
            count: r.count,
        }
    }

    /// The first key-value found, if any.
    pub fn first(&self) -> Option<&KeyValue> {
        self.kvs.first()
    }
}

/// A Put request.
///
/// ```
/// use cairn_client::{LeaseId, Put};
///
/// let put = Put::new("config/a", "1").with_lease(LeaseId::new(7)).with_prev_kv();
/// assert_eq!(put.key(), b"config/a");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Put {
    pub(crate) request: pb::PutRequest,
}

impl Put {
    /// Set `key` to `value`.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            request: pb::PutRequest {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            },
        }
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.request.key
    }

    /// Attach the key to `lease`: it is deleted when the lease ends.
    pub fn with_lease(mut self, lease: LeaseId) -> Self {
        self.request.lease = lease.get();
        self
    }

    /// Return the key-value as it was before.
    pub fn with_prev_kv(mut self) -> Self {
        self.request.prev_kv = true;
        self
    }

    /// Keep the current value (only the lease changes); the key must exist.
    pub fn with_ignore_value(mut self) -> Self {
        self.request.ignore_value = true;
        self.request.value.clear();
        self
    }

    /// Keep the current lease; the key must exist.
    pub fn with_ignore_lease(mut self) -> Self {
        self.request.ignore_lease = true;
        self
    }
}

/// The answer to a [`Put`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResponse {
    /// `header.revision` is the revision of this put.
    pub header: ResponseHeader,
    /// The key-value before the put, if asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

impl PutResponse {
    pub(crate) fn from_pb(r: pb::PutResponse) -> Self {
        Self {
            header: ResponseHeader::from_pb(r.header),
            prev_kv: r.prev_kv.map(KeyValue::from_pb),
        }
    }
}

/// A DeleteRange request.
///
/// ```
/// use cairn_client::Delete;
///
/// let delete = Delete::prefix("sessions/").with_prev_kv();
/// assert_eq!(delete.range_end(), b"sessions0");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Delete {
    pub(crate) request: pb::DeleteRangeRequest,
}

impl Delete {
    fn over(range: KeyRange) -> Self {
        Self {
            request: pb::DeleteRangeRequest {
                key: range.key,
                range_end: range.range_end,
                prev_kv: false,
            },
        }
    }

    /// The key `key`.
    pub fn one(key: impl Into<Vec<u8>>) -> Self {
        Self::over(KeyRange::key(key))
    }

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self::over(KeyRange::prefix(prefix))
    }

    /// Keys in `[key, end)`.
    pub fn range(key: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        Self::over(KeyRange::range(key, end))
    }

    /// Every key `>= key`.
    pub fn from_key(key: impl Into<Vec<u8>>) -> Self {
        Self::over(KeyRange::from_key(key))
    }

    /// Every key.
    pub fn all() -> Self {
        Self::over(KeyRange::all())
    }

    /// Return the deleted key-values.
    pub fn with_prev_kv(mut self) -> Self {
        self.request.prev_kv = true;
        self
    }

    /// The first key.
    pub fn key(&self) -> &[u8] {
        &self.request.key
    }

    /// etcd's `range_end`.
    pub fn range_end(&self) -> &[u8] {
        &self.request.range_end
    }
}

impl From<&str> for Delete {
    fn from(key: &str) -> Self {
        Delete::one(key)
    }
}

impl From<String> for Delete {
    fn from(key: String) -> Self {
        Delete::one(key)
    }
}

impl From<Vec<u8>> for Delete {
    fn from(key: Vec<u8>) -> Self {
        Delete::one(key)
    }
}

/// The answer to a [`Delete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteResponse {
    /// `header.revision` is the revision of the delete (unchanged if
    /// nothing was deleted).
    pub header: ResponseHeader,
    /// How many keys were deleted.
    pub deleted: i64,
    /// The deleted key-values, if asked for.
    pub prev_kvs: Vec<KeyValue>,
}

impl DeleteResponse {
    pub(crate) fn from_pb(r: pb::DeleteRangeResponse) -> Self {
        Self {
            header: ResponseHeader::from_pb(r.header),
            deleted: r.deleted,
            prev_kvs: r.prev_kvs.into_iter().map(KeyValue::from_pb).collect(),
        }
    }
}

/// The answer to a compaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactResponse {
    /// Who answered.
    pub header: ResponseHeader,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_use_etcds_encoding() {
        let cases = [
            (Get::one("a"), (&b"a"[..], &b""[..])),
            (Get::prefix("a/"), (b"a/", b"a0")),
            (Get::from_key("k"), (b"k", b"\0")),
            (Get::all(), (b"\0", b"\0")),
            (Get::range("a", "c"), (b"a", b"c")),
        ];
        for (get, (key, end)) in cases {
            assert_eq!((get.key(), get.range_end()), (key, end));
        }
    }

    #[test]
    fn builder_options_land_in_the_request() {
        let get = Get::prefix("p")
            .with_limit(5)
            .with_revision(Revision::new(9))
            .with_sort(SortTarget::Value, SortOrder::Descend)
            .with_serializable()
            .with_keys_only()
            .with_count_only()
            .with_min_mod_revision(Revision::new(1))
            .with_max_mod_revision(Revision::new(2))
            .with_min_create_revision(Revision::new(3))
            .with_max_create_revision(Revision::new(4));
        let r = &get.request;
        assert_eq!(
            (r.limit, r.revision, r.sort_target, r.sort_order),
            (
                5,
                9,
                PbSortTarget::Value as i32,
                PbSortOrder::Descend as i32
            )
        );
        assert!(r.serializable && r.keys_only && r.count_only);
        assert_eq!(
            (
                r.min_mod_revision,
                r.max_mod_revision,
                r.min_create_revision,
                r.max_create_revision
            ),
            (1, 2, 3, 4)
        );
    }
}
