//! Differential testing: one script of KV requests, sent to etcd and to
//! Cairn, with every response compared field by field.
//!
//! A [`Script`] is a list of named steps. [`Script::run`] starts a fresh
//! etcd and a fresh Cairn, sends each step to etcd and then to Cairn, and
//! compares the two [`Reply`]s: the full prost structs, after zeroing the
//! top-level header's `cluster_id`, `member_id` and `raft_term` (identities
//! and terms legitimately differ between two clusters; nested headers are
//! compared as they are). Errors compare by gRPC code and message. Every
//! differing step is reported by name, with both replies.
//!
//! The builders at the bottom keep scripts short: `put("a", "1")`,
//! `prefix("k").limit(2)`, `txn(compares, success, failure)`, and so on.

use std::fmt::Write as _;
use std::time::Duration;

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::response_op::Response as OpResponse;
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest,
    TxnResponse,
};
use cairn_proto::mvccpb::KeyValue;
use tonic::transport::Channel;
use tonic::Code;

use super::{CairnProc, EtcdProc, ServerProc};

/// Bound on one request, so a hung server fails its step instead of the
/// whole test run.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Byte strings longer than this are shown by length only.
const SHOW_BYTES: usize = 48;
/// Txn ops, compares and responses shown before the rest are elided.
const SHOW_OPS: usize = 8;

/// One request of a script.
#[derive(Debug, Clone)]
pub enum Request {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
}

impl From<RangeRequest> for Request {
    fn from(request: RangeRequest) -> Self {
        Self::Range(request)
    }
}

impl From<PutRequest> for Request {
    fn from(request: PutRequest) -> Self {
        Self::Put(request)
    }
}

impl From<DeleteRangeRequest> for Request {
    fn from(request: DeleteRangeRequest) -> Self {
        Self::DeleteRange(request)
    }
}

impl From<TxnRequest> for Request {
    fn from(request: TxnRequest) -> Self {
        Self::Txn(request)
    }
}

impl From<CompactionRequest> for Request {
    fn from(request: CompactionRequest) -> Self {
        Self::Compact(request)
    }
}

impl From<LeaseGrantRequest> for Request {
    fn from(request: LeaseGrantRequest) -> Self {
        Self::LeaseGrant(request)
    }
}

impl From<LeaseRevokeRequest> for Request {
    fn from(request: LeaseRevokeRequest) -> Self {
        Self::LeaseRevoke(request)
    }
}

/// What a server answered, with the top-level header's identities zeroed.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    Error {
        code: Code,
        message: String,
    },
    /// No answer within [`STEP_TIMEOUT`].
    Timeout,
}

impl Reply {
    fn normalized(mut self) -> Self {
        let header = match &mut self {
            Self::Range(r) => &mut r.header,
            Self::Put(r) => &mut r.header,
            Self::DeleteRange(r) => &mut r.header,
            Self::Txn(r) => &mut r.header,
            Self::Compact(r) => &mut r.header,
            Self::LeaseGrant(r) => &mut r.header,
            Self::LeaseRevoke(r) => &mut r.header,
            Self::Error { .. } | Self::Timeout => return self,
        };
        if let Some(header) = header {
            header.cluster_id = 0;
            header.member_id = 0;
            header.raft_term = 0;
        }
        self
    }

    fn code(&self) -> Option<Code> {
        match self {
            Self::Error { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// How a step's two replies must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Agreement {
    /// Every field, or the code and message of an error.
    Exact,
    /// Both fail with the same gRPC code; messages may differ. For errors
    /// raised by the gRPC layer itself, whose wording is the library's.
    Code,
}

struct Step {
    name: String,
    request: Request,
    agreement: Agreement,
}

/// A named sequence of requests, run against etcd and Cairn.
#[derive(Default)]
pub struct Script {
    steps: Vec<Step>,
}

impl Script {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a step whose replies must be equal in every field.
    pub fn step(&mut self, name: impl Into<String>, request: impl Into<Request>) {
        self.push(name.into(), request.into(), Agreement::Exact);
    }

    /// Adds a step that must fail on both with the same gRPC code.
    pub fn step_same_code(&mut self, name: impl Into<String>, request: impl Into<Request>) {
        self.push(name.into(), request.into(), Agreement::Code);
    }

    fn push(&mut self, name: String, request: Request, agreement: Agreement) {
        assert!(
            self.steps.iter().all(|step| step.name != name),
            "duplicate step name {name:?}"
        );
        self.steps.push(Step {
            name,
            request,
            agreement,
        });
    }

    /// Runs the script against a fresh etcd and a fresh Cairn.
    ///
    /// # Panics
    ///
    /// If any step's replies differ (listing every such step), or if etcd
    /// times out (a broken script, not a difference).
    pub async fn run(self) {
        let (etcd, cairn) = tokio::join!(EtcdProc::start(), CairnProc::start());
        let mut etcd = Clients::new(&etcd);
        let mut cairn = Clients::new(&cairn);
        let mut report = String::new();
        let mut differing = 0;
        for (index, step) in self.steps.iter().enumerate() {
            let expected = etcd.send(&step.request).await;
            assert_ne!(
                expected,
                Reply::Timeout,
                "step {index} {:?}: etcd did not answer",
                step.name
            );
            let actual = cairn.send(&step.request).await;
            if agree(step.agreement, &expected, &actual) {
                continue;
            }
            differing += 1;
            let _ = write!(
                report,
                "\n#{index} {:?} ({:?})\n  request: {}\n  etcd:    {}\n  cairn:   {}\n",
                step.name,
                step.agreement,
                show_request(&step.request),
                show_reply(&expected),
                show_reply(&actual),
            );
            if show_reply(&expected) == show_reply(&actual) {
                let _ = write!(
                    report,
                    "  (they differ in bytes not shown)\n  etcd:  {expected:?}\n  cairn: {actual:?}\n"
                );
            }
        }
        assert!(
            differing == 0,
            "{differing} of {} steps differ between etcd and Cairn (the first difference may \
             cause later ones):{report}",
            self.steps.len()
        );
    }
}

fn agree(agreement: Agreement, expected: &Reply, actual: &Reply) -> bool {
    match agreement {
        Agreement::Exact => expected == actual,
        Agreement::Code => expected.code().is_some() && expected.code() == actual.code(),
    }
}

/// The two clients a script needs, on one server.
pub struct Clients {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
}

impl Clients {
    pub fn new(node: &impl ServerProc) -> Self {
        Self {
            kv: node.kv(),
            lease: node.lease(),
        }
    }

    /// Sends one request; errors and timeouts become replies.
    pub async fn send(&mut self, request: &Request) -> Reply {
        let call = async {
            match request.clone() {
                Request::Range(r) => self.kv.range(r).await.map(|r| Reply::Range(r.into_inner())),
                Request::Put(r) => self.kv.put(r).await.map(|r| Reply::Put(r.into_inner())),
                Request::DeleteRange(r) => self
                    .kv
                    .delete_range(r)
                    .await
                    .map(|r| Reply::DeleteRange(r.into_inner())),
                Request::Txn(r) => self.kv.txn(r).await.map(|r| Reply::Txn(r.into_inner())),
                Request::Compact(r) => self
                    .kv
                    .compact(r)
                    .await
                    .map(|r| Reply::Compact(r.into_inner())),
                Request::LeaseGrant(r) => self
                    .lease
                    .lease_grant(r)
                    .await
                    .map(|r| Reply::LeaseGrant(r.into_inner())),
                Request::LeaseRevoke(r) => self
                    .lease
                    .lease_revoke(r)
                    .await
                    .map(|r| Reply::LeaseRevoke(r.into_inner())),
            }
        };
        match tokio::time::timeout(STEP_TIMEOUT, call).await {
            Err(_elapsed) => Reply::Timeout,
            Ok(Ok(reply)) => reply.normalized(),
            Ok(Err(status)) => Reply::Error {
                code: status.code(),
                message: status.message().to_owned(),
            },
        }
    }
}

// ---- Rendering: every field, with byte strings as escaped text. ----

fn bytes(b: &[u8]) -> String {
    if b.len() > SHOW_BYTES {
        format!("<{} bytes>", b.len())
    } else {
        format!("\"{}\"", b.escape_ascii())
    }
}

fn header(h: &Option<ResponseHeader>) -> String {
    match h {
        None => "header:None".to_owned(),
        Some(h) => format!(
            "header{{cluster:{} member:{} rev:{} term:{}}}",
            h.cluster_id, h.member_id, h.revision, h.raft_term
        ),
    }
}

fn kv(kv: &KeyValue) -> String {
    format!(
        "{{{}={} create:{} mod:{} ver:{} lease:{}}}",
        bytes(&kv.key),
        bytes(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease
    )
}

fn kvs(kvs: &[KeyValue]) -> String {
    let items: Vec<String> = kvs.iter().map(kv).collect();
    format!("[{}]", items.join(" "))
}

fn show_range(r: &RangeResponse) -> String {
    format!(
        "Range{{{} kvs:{} more:{} count:{}}}",
        header(&r.header),
        kvs(&r.kvs),
        r.more,
        r.count
    )
}

fn show_put(r: &PutResponse) -> String {
    let prev = r.prev_kv.as_ref().map_or("None".to_owned(), kv);
    format!("Put{{{} prev_kv:{prev}}}", header(&r.header))
}

fn show_delete(r: &DeleteRangeResponse) -> String {
    format!(
        "Delete{{{} deleted:{} prev_kvs:{}}}",
        header(&r.header),
        r.deleted,
        kvs(&r.prev_kvs)
    )
}

fn show_txn(r: &TxnResponse) -> String {
    let mut responses: Vec<String> = r
        .responses
        .iter()
        .take(SHOW_OPS)
        .map(show_op_response)
        .collect();
    if r.responses.len() > SHOW_OPS {
        responses.push(format!("<{} more>", r.responses.len() - SHOW_OPS));
    }
    format!(
        "Txn{{{} succeeded:{} responses:[{}]}}",
        header(&r.header),
        r.succeeded,
        responses.join(", ")
    )
}

fn show_op_response(r: &ResponseOp) -> String {
    match &r.response {
        None => "None".to_owned(),
        Some(OpResponse::ResponseRange(r)) => show_range(r),
        Some(OpResponse::ResponsePut(r)) => show_put(r),
        Some(OpResponse::ResponseDeleteRange(r)) => show_delete(r),
        Some(OpResponse::ResponseTxn(r)) => show_txn(r),
    }
}

fn show_reply(reply: &Reply) -> String {
    match reply {
        Reply::Range(r) => show_range(r),
        Reply::Put(r) => show_put(r),
        Reply::DeleteRange(r) => show_delete(r),
        Reply::Txn(r) => show_txn(r),
        Reply::Compact(r) => format!("Compact{{{}}}", header(&r.header)),
        Reply::LeaseGrant(r) => format!(
            "LeaseGrant{{{} id:{} ttl:{} error:{:?}}}",
            header(&r.header),
            r.id,
            r.ttl,
            r.error
        ),
        Reply::LeaseRevoke(r) => format!("LeaseRevoke{{{}}}", header(&r.header)),
        Reply::Error { code, message } => format!("Error({code:?}, {message:?})"),
        Reply::Timeout => format!("no answer within {STEP_TIMEOUT:?}"),
    }
}

fn show_request(request: &Request) -> String {
    match request {
        Request::Range(r) => show_range_request(r),
        Request::Put(r) => show_put_request(r),
        Request::DeleteRange(r) => show_delete_request(r),
        Request::Txn(r) => show_txn_request(r),
        Request::Compact(r) => format!("Compact{{rev:{} physical:{}}}", r.revision, r.physical),
        Request::LeaseGrant(r) => format!("LeaseGrant{{id:{} ttl:{}}}", r.id, r.ttl),
        Request::LeaseRevoke(r) => format!("LeaseRevoke{{id:{}}}", r.id),
    }
}

fn show_range_request(r: &RangeRequest) -> String {
    // Only what differs from the default, to keep long scripts readable.
    let mut out = format!("Range{{{}..{}", bytes(&r.key), bytes(&r.range_end));
    let numbers = [
        ("limit", r.limit),
        ("rev", r.revision),
        ("sort_order", i64::from(r.sort_order)),
        ("sort_target", i64::from(r.sort_target)),
        ("min_mod", r.min_mod_revision),
        ("max_mod", r.max_mod_revision),
        ("min_create", r.min_create_revision),
        ("max_create", r.max_create_revision),
    ];
    for (name, value) in numbers {
        if value != 0 {
            let _ = write!(out, " {name}:{value}");
        }
    }
    for (name, set) in [
        ("serializable", r.serializable),
        ("keys_only", r.keys_only),
        ("count_only", r.count_only),
    ] {
        if set {
            let _ = write!(out, " {name}");
        }
    }
    out + "}"
}

fn show_put_request(r: &PutRequest) -> String {
    let mut out = format!("Put{{{}={}", bytes(&r.key), bytes(&r.value));
    if r.lease != 0 {
        let _ = write!(out, " lease:{}", r.lease);
    }
    for (name, set) in [
        ("prev_kv", r.prev_kv),
        ("ignore_value", r.ignore_value),
        ("ignore_lease", r.ignore_lease),
    ] {
        if set {
            let _ = write!(out, " {name}");
        }
    }
    out + "}"
}

fn show_delete_request(r: &DeleteRangeRequest) -> String {
    let prev = if r.prev_kv { " prev_kv" } else { "" };
    format!("Delete{{{}..{}{prev}}}", bytes(&r.key), bytes(&r.range_end))
}

fn show_txn_request(r: &TxnRequest) -> String {
    let ops = |ops: &[RequestOp]| {
        if ops.len() > SHOW_OPS {
            return format!("<{} ops>", ops.len());
        }
        let shown: Vec<String> = ops
            .iter()
            .map(|op| match &op.request {
                None => "None".to_owned(),
                Some(Op::RequestRange(r)) => show_range_request(r),
                Some(Op::RequestPut(r)) => show_put_request(r),
                Some(Op::RequestDeleteRange(r)) => show_delete_request(r),
                Some(Op::RequestTxn(r)) => show_txn_request(r),
            })
            .collect();
        format!("[{}]", shown.join(", "))
    };
    let compares = if r.compare.len() > SHOW_OPS {
        format!("<{} compares>", r.compare.len())
    } else {
        let shown: Vec<String> = r.compare.iter().map(show_compare).collect();
        format!("[{}]", shown.join(", "))
    };
    format!(
        "Txn{{if {compares} then {} else {}}}",
        ops(&r.success),
        ops(&r.failure)
    )
}

fn show_compare(c: &Compare) -> String {
    let target = CompareTarget::try_from(c.target).map_or(format!("target#{}", c.target), |t| {
        t.as_str_name().to_lowercase()
    });
    let result = match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => "=".to_owned(),
        Ok(CompareResult::Greater) => ">".to_owned(),
        Ok(CompareResult::Less) => "<".to_owned(),
        Ok(CompareResult::NotEqual) => "!=".to_owned(),
        Err(_) => format!("result#{}", c.result),
    };
    let operand = match &c.target_union {
        None => "None".to_owned(),
        Some(TargetUnion::Version(v)) => format!("version:{v}"),
        Some(TargetUnion::CreateRevision(v)) => format!("create:{v}"),
        Some(TargetUnion::ModRevision(v)) => format!("mod:{v}"),
        Some(TargetUnion::Value(v)) => bytes(v),
        Some(TargetUnion::Lease(v)) => format!("lease:{v}"),
    };
    let end = if c.range_end.is_empty() {
        String::new()
    } else {
        format!("..{}", bytes(&c.range_end))
    };
    format!("{target}({}{end}) {result} {operand}", bytes(&c.key))
}

// ---- Builders. ----

/// A Range of one key.
pub fn key(key: &str) -> RangeRequest {
    span(key, "")
}

/// A Range of `[key, range_end)`, with etcd's conventions for `range_end`.
pub fn span(key: &str, range_end: &str) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        ..RangeRequest::default()
    }
}

/// A Range of every key starting with `prefix` (non-empty, not ending in
/// 0xff): `range_end` is `prefix` with its last byte incremented.
pub fn prefix(prefix: &str) -> RangeRequest {
    RangeRequest {
        key: prefix.into(),
        range_end: prefix_end(prefix),
        ..RangeRequest::default()
    }
}

fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    let last = end.last_mut().expect("a non-empty prefix");
    *last += 1;
    end
}

/// A Range of every key: `"\0".."\0"`.
pub fn all_keys() -> RangeRequest {
    span("\0", "\0")
}

pub fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..PutRequest::default()
    }
}

/// A DeleteRange of one key.
pub fn del(key: &str) -> DeleteRangeRequest {
    del_span(key, "")
}

pub fn del_span(key: &str, range_end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        ..DeleteRangeRequest::default()
    }
}

pub fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}

pub fn compact(revision: i64) -> CompactionRequest {
    CompactionRequest {
        revision,
        physical: false,
    }
}

/// Wraps a request as a txn op: `put("a", "1").op()`.
pub trait IntoOp {
    fn op(self) -> RequestOp;
}

impl IntoOp for RangeRequest {
    fn op(self) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestRange(self)),
        }
    }
}

impl IntoOp for PutRequest {
    fn op(self) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestPut(self)),
        }
    }
}

impl IntoOp for DeleteRangeRequest {
    fn op(self) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestDeleteRange(self)),
        }
    }
}

impl IntoOp for TxnRequest {
    fn op(self) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestTxn(self)),
        }
    }
}

/// A compare's relation, as in etcdctl's syntax.
#[derive(Debug, Clone, Copy)]
pub enum Cmp {
    Eq,
    Ne,
    Gt,
    Lt,
}

impl Cmp {
    fn result(self) -> CompareResult {
        match self {
            Self::Eq => CompareResult::Equal,
            Self::Ne => CompareResult::NotEqual,
            Self::Gt => CompareResult::Greater,
            Self::Lt => CompareResult::Less,
        }
    }
}

fn compare(key: &str, cmp: Cmp, target: CompareTarget, operand: TargetUnion) -> Compare {
    Compare {
        result: cmp.result().into(),
        target: target.into(),
        key: key.into(),
        target_union: Some(operand),
        range_end: Vec::new(),
    }
}

pub fn version(key: &str, cmp: Cmp, version: i64) -> Compare {
    compare(
        key,
        cmp,
        CompareTarget::Version,
        TargetUnion::Version(version),
    )
}

pub fn create(key: &str, cmp: Cmp, revision: i64) -> Compare {
    compare(
        key,
        cmp,
        CompareTarget::Create,
        TargetUnion::CreateRevision(revision),
    )
}

pub fn modified(key: &str, cmp: Cmp, revision: i64) -> Compare {
    compare(
        key,
        cmp,
        CompareTarget::Mod,
        TargetUnion::ModRevision(revision),
    )
}

pub fn value(key: &str, cmp: Cmp, value: &str) -> Compare {
    compare(
        key,
        cmp,
        CompareTarget::Value,
        TargetUnion::Value(value.into()),
    )
}

pub fn lease(key: &str, cmp: Cmp, lease: i64) -> Compare {
    compare(key, cmp, CompareTarget::Lease, TargetUnion::Lease(lease))
}

/// `compare` over every key in `[compare.key, range_end)`.
pub fn over(compare: Compare, range_end: &str) -> Compare {
    Compare {
        range_end: range_end.into(),
        ..compare
    }
}

/// Builder-style options of a Range: `prefix("k").rev(5).limit(2)`.
pub trait RangeOptions: Sized {
    fn limit(self, limit: i64) -> Self;
    fn rev(self, revision: i64) -> Self;
    fn sort(self, target: SortTarget, order: SortOrder) -> Self;
    fn serializable(self) -> Self;
    fn keys_only(self) -> Self;
    fn count_only(self) -> Self;
    fn min_mod(self, revision: i64) -> Self;
    fn max_mod(self, revision: i64) -> Self;
    fn min_create(self, revision: i64) -> Self;
    fn max_create(self, revision: i64) -> Self;
}

impl RangeOptions for RangeRequest {
    fn limit(self, limit: i64) -> Self {
        Self { limit, ..self }
    }

    fn rev(self, revision: i64) -> Self {
        Self { revision, ..self }
    }

    fn sort(self, target: SortTarget, order: SortOrder) -> Self {
        Self {
            sort_target: target.into(),
            sort_order: order.into(),
            ..self
        }
    }

    fn serializable(self) -> Self {
        Self {
            serializable: true,
            ..self
        }
    }

    fn keys_only(self) -> Self {
        Self {
            keys_only: true,
            ..self
        }
    }

    fn count_only(self) -> Self {
        Self {
            count_only: true,
            ..self
        }
    }

    fn min_mod(self, revision: i64) -> Self {
        Self {
            min_mod_revision: revision,
            ..self
        }
    }

    fn max_mod(self, revision: i64) -> Self {
        Self {
            max_mod_revision: revision,
            ..self
        }
    }

    fn min_create(self, revision: i64) -> Self {
        Self {
            min_create_revision: revision,
            ..self
        }
    }

    fn max_create(self, revision: i64) -> Self {
        Self {
            max_create_revision: revision,
            ..self
        }
    }
}

/// Builder-style options of a Put: `put("a", "1").prev_kv()`.
pub trait PutOptions: Sized {
    fn prev_kv(self) -> Self;
    fn with_lease(self, lease: i64) -> Self;
    fn ignore_value(self) -> Self;
    fn ignore_lease(self) -> Self;
}

impl PutOptions for PutRequest {
    fn prev_kv(self) -> Self {
        Self {
            prev_kv: true,
            ..self
        }
    }

    fn with_lease(self, lease: i64) -> Self {
        Self { lease, ..self }
    }

    fn ignore_value(self) -> Self {
        Self {
            ignore_value: true,
            ..self
        }
    }

    fn ignore_lease(self) -> Self {
        Self {
            ignore_lease: true,
            ..self
        }
    }
}

/// Builder-style options of a DeleteRange: `del("a").prev_kvs()`.
pub trait DeleteOptions: Sized {
    fn prev_kvs(self) -> Self;
}

impl DeleteOptions for DeleteRangeRequest {
    fn prev_kvs(self) -> Self {
        Self {
            prev_kv: true,
            ..self
        }
    }
}

/// `compact(5).physical()`.
pub trait CompactOptions: Sized {
    fn physical(self) -> Self;
}

impl CompactOptions for CompactionRequest {
    fn physical(self) -> Self {
        Self {
            physical: true,
            ..self
        }
    }
}

pub fn grant(id: i64, ttl: i64) -> LeaseGrantRequest {
    LeaseGrantRequest { ttl, id }
}

pub fn revoke(id: i64) -> LeaseRevokeRequest {
    LeaseRevokeRequest { id }
}
