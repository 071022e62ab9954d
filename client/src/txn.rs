//! Transactions: [`Txn`] (compare, then, else), [`Compare`], [`TxnOp`] and
//! the response.
//!
//! Every compare is decided against the state before the txn; if all hold,
//! the `then` ops run in order, otherwise the `else` ops. A txn is one
//! revision, whatever it changes.
//!
//! **Retries:** a txn that writes (in any branch, nested ones included) is
//! never sent twice unless the first attempt provably never reached a
//! server; an attempt whose outcome is unknown ends in
//! [`crate::Error::Ambiguous`]. A read-only txn is retried like a read.

use cairn_proto::etcdserverpb as pb;
use pb::compare::{CompareResult, CompareTarget, TargetUnion};

use crate::kv::{Delete, DeleteResponse, Get, GetResponse, KeyRange, Put, PutResponse};
use crate::types::{LeaseId, ResponseHeader, Revision};

/// How a [`Compare`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `>`
    Greater,
    /// `<`
    Less,
}

impl CompareOp {
    fn wire(self) -> i32 {
        (match self {
            CompareOp::Equal => CompareResult::Equal,
            CompareOp::NotEqual => CompareResult::NotEqual,
            CompareOp::Greater => CompareResult::Greater,
            CompareOp::Less => CompareResult::Less,
        }) as i32
    }
}

/// One condition of a [`Txn`], on a key (or, with
/// [`Compare::with_prefix`]/[`Compare::with_range_end`], on every key of a
/// range).
///
/// A key that does not exist has version, create and mod revision 0, so
/// `Compare::create_revision("k", CompareOp::Equal, Revision::new(0))` means
/// "k does not exist".
///
/// ```
/// use cairn_client::{Compare, CompareOp, Revision};
///
/// let absent = Compare::create_revision("lock", CompareOp::Equal, Revision::new(0));
/// let unchanged = Compare::mod_revision("config", CompareOp::Equal, Revision::new(17));
/// let is_on = Compare::value("flag", CompareOp::Equal, "on");
/// let none_left = Compare::version("jobs/", CompareOp::Equal, 0).with_prefix();
/// # let _ = (absent, unchanged, is_on, none_left);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub(crate) compare: pb::Compare,
}

impl Compare {
    fn new(
        key: impl Into<Vec<u8>>,
        op: CompareOp,
        target: CompareTarget,
        value: TargetUnion,
    ) -> Self {
        Self {
            compare: pb::Compare {
                result: op.wire(),
                target: target as i32,
                key: key.into(),
                range_end: Vec::new(),
                target_union: Some(value),
            },
        }
    }

    /// The key's version.
    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: i64) -> Self {
        Self::new(
            key,
            op,
            CompareTarget::Version,
            TargetUnion::Version(version),
        )
    }

    /// The key's create revision.
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: Revision) -> Self {
        Self::new(
            key,
            op,
            CompareTarget::Create,
            TargetUnion::CreateRevision(revision.get()),
        )
    }

    /// The key's mod revision.
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: Revision) -> Self {
        Self::new(
            key,
            op,
            CompareTarget::Mod,
            TargetUnion::ModRevision(revision.get()),
        )
    }

    /// The key's value.
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Self::new(
            key,
            op,
            CompareTarget::Value,
            TargetUnion::Value(value.into()),
        )
    }

    /// The key's lease (`None`: no lease).
    pub fn lease(key: impl Into<Vec<u8>>, op: CompareOp, lease: Option<LeaseId>) -> Self {
        Self::new(
            key,
            op,
            CompareTarget::Lease,
            TargetUnion::Lease(LeaseId::wire(lease)),
        )
    }

    /// Compare every key starting with this compare's key instead.
    pub fn with_prefix(mut self) -> Self {
        let range = KeyRange::prefix(std::mem::take(&mut self.compare.key));
        self.compare.key = range.key;
        self.compare.range_end = range.range_end;
        self
    }

    /// Compare every key in `[key, end)` instead.
    pub fn with_range_end(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.compare.range_end = end.into();
        self
    }
}

/// One operation of a [`Txn`] branch.
#[derive(Debug, Clone, PartialEq)]
pub enum TxnOp {
    /// A Range.
    Get(Get),
    /// A Put.
    Put(Put),
    /// A DeleteRange.
    Delete(Delete),
    /// A nested txn.
    Txn(Txn),
}

impl TxnOp {
    fn into_pb(self) -> pb::RequestOp {
        use pb::request_op::Request;
        let request = match self {
            TxnOp::Get(get) => Request::RequestRange(get.request),
            TxnOp::Put(put) => Request::RequestPut(put.request),
            TxnOp::Delete(delete) => Request::RequestDeleteRange(delete.request),
            TxnOp::Txn(txn) => Request::RequestTxn(txn.request),
        };
        pb::RequestOp {
            request: Some(request),
        }
    }
}

impl From<Get> for TxnOp {
    fn from(get: Get) -> Self {
        TxnOp::Get(get)
    }
}

impl From<Put> for TxnOp {
    fn from(put: Put) -> Self {
        TxnOp::Put(put)
    }
}

impl From<Delete> for TxnOp {
    fn from(delete: Delete) -> Self {
        TxnOp::Delete(delete)
    }
}

impl From<Txn> for TxnOp {
    fn from(txn: Txn) -> Self {
        TxnOp::Txn(txn)
    }
}

/// A transaction: if every compare holds, the `then` ops, else the `else`
/// ops.
///
/// ```
/// use cairn_client::{Compare, CompareOp, Get, Put, Revision, Txn};
///
/// // Create "leader" only if nobody holds it; either way, read it back.
/// let txn = Txn::new()
///     .when([Compare::create_revision("leader", CompareOp::Equal, Revision::new(0))])
///     .and_then([Put::new("leader", "me").into(), Get::one("leader").into()])
///     .or_else([Get::one("leader").into()]);
/// assert!(!txn.is_read_only());
///
/// // Branches nest.
/// let nested = Txn::new().and_then([txn.into()]);
/// assert!(!nested.is_read_only());
/// assert!(Txn::new().and_then([Get::one("x").into()]).is_read_only());
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Txn {
    pub(crate) request: pb::TxnRequest,
}

impl Txn {
    /// An empty txn: no compares (so the `then` branch runs), no ops.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds compares; all must hold for the `then` branch.
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.request
            .compare
            .extend(compares.into_iter().map(|c| c.compare));
        self
    }

    /// Adds ops to the branch run when every compare holds.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.request
            .success
            .extend(ops.into_iter().map(TxnOp::into_pb));
        self
    }

    /// Adds ops to the branch run when a compare fails.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.request
            .failure
            .extend(ops.into_iter().map(TxnOp::into_pb));
        self
    }

    /// Whether no branch (nested ones included) writes: such a txn is
    /// retried like a read.
    pub fn is_read_only(&self) -> bool {
        fn read_only(request: &pb::TxnRequest) -> bool {
            use pb::request_op::Request;
            request
                .success
                .iter()
                .chain(&request.failure)
                .all(|op| match &op.request {
                    Some(Request::RequestRange(_)) | None => true,
                    Some(Request::RequestTxn(txn)) => read_only(txn),
                    Some(Request::RequestPut(_) | Request::RequestDeleteRange(_)) => false,
                })
        }
        read_only(&self.request)
    }

    /// Whether every read in it is serializable (so it needs no leader).
    pub(crate) fn is_serializable(&self) -> bool {
        fn serializable(request: &pb::TxnRequest) -> bool {
            use pb::request_op::Request;
            request
                .success
                .iter()
                .chain(&request.failure)
                .all(|op| match &op.request {
                    Some(Request::RequestRange(r)) => r.serializable,
                    Some(Request::RequestTxn(txn)) => serializable(txn),
                    _ => true,
                })
        }
        self.is_read_only() && self.request.compare.is_empty() && serializable(&self.request)
    }
}

/// The answer of one [`TxnOp`], in op order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOpResponse {
    /// A Range's answer.
    Get(GetResponse),
    /// A Put's answer.
    Put(PutResponse),
    /// A DeleteRange's answer.
    Delete(DeleteResponse),
    /// A nested txn's answer.
    Txn(TxnResponse),
}

/// The answer to a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    /// `header.revision` is the txn's revision if it wrote, else the
    /// current one.
    pub header: ResponseHeader,
    /// Whether every compare held (the `then` branch ran).
    pub succeeded: bool,
    /// The answers of the branch that ran, in op order.
    pub responses: Vec<TxnOpResponse>,
}

impl TxnResponse {
    pub(crate) fn from_pb(r: pb::TxnResponse) -> Self {
        use pb::response_op::Response;
        let responses = r
            .responses
            .into_iter()
            .filter_map(|op| op.response)
            .map(|response| match response {
                Response::ResponseRange(r) => TxnOpResponse::Get(GetResponse::from_pb(r)),
                Response::ResponsePut(r) => TxnOpResponse::Put(PutResponse::from_pb(r)),
                Response::ResponseDeleteRange(r) => {
                    TxnOpResponse::Delete(DeleteResponse::from_pb(r))
                }
                Response::ResponseTxn(r) => TxnOpResponse::Txn(TxnResponse::from_pb(r)),
            })
            .collect();
        Self {
            header: ResponseHeader::from_pb(r.header),
            succeeded: r.succeeded,
            responses,
        }
    }
}
