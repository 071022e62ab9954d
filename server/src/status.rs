//! Every error a client request can meet, mapped to the `tonic::Status`
//! etcd answers with: the same gRPC code and the same message, because
//! clients match on both (see etcd's `api/v3rpc/rpctypes/error.go`).
//!
//! This is the only place that builds a `Status` from an error. It also
//! holds [`GrpcCompat`], which rewrites the few statuses tonic itself
//! produces into the ones grpc-go (and so etcd) gives for the same fault.

use std::convert::Infallible;

use cairn_raft_storage::Member;
use cairn_raft_storage::{ApplyError, NodeId};
use openraft::error::{CheckIsLeaderError, ClientWriteError, Fatal, RaftError};
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::server::NamedService;
use tonic::{Code, Status};

use crate::cluster::ClusterError;
use crate::peer::{ForwardError, Route, Target};
use crate::read_index::ReadError;
use crate::validate::Invalid;

const EMPTY_KEY: &str = "etcdserver: key is not provided";
const KEY_NOT_FOUND: &str = "etcdserver: key not found";
const VALUE_PROVIDED: &str = "etcdserver: value is provided";
const LEASE_PROVIDED: &str = "etcdserver: lease is provided";
const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
const INVALID_SORT_OPTION: &str = "etcdserver: invalid sort option";
const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
const LEASE_EXISTS: &str = "etcdserver: lease already exists";
const LEASE_TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";
const NO_LEASE: &str =
    "etcdserver: a lease is required (lease 0 would leave a session nobody ends)";
// etcd's lock and election services return their `concurrency` package's
// plain errors, which gRPC sends with code Unknown.
const SESSION_EXPIRED: &str = "mutex: session is expired";
const NOT_LEADER: &str = "election: not leader";
const NO_ELECTION_LEADER: &str = "election: no leader";
const MISSING_LEADER: &str = "\"leader\" field must be provided";
const NO_LEADER: &str = "etcdserver: no leader";
const TIMEOUT: &str = "etcdserver: request timed out";
const STOPPED: &str = "etcdserver: server stopped";
const LEADER_CHANGED: &str = "etcdserver: leader changed";
const MEMBER_EXISTS: &str = "etcdserver: member ID already exist";
const PEER_URL_EXISTS: &str = "etcdserver: Peer URLs already exists";
const UNHEALTHY: &str = "etcdserver: unhealthy cluster";
const NOT_ENOUGH_STARTED: &str =
    "etcdserver: re-configuration failed due to not enough started members";
const BAD_URLS: &str = "etcdserver: given member URLs are invalid";
const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
const MEMBER_NOT_LEARNER: &str = "etcdserver: can only promote a learner member";
const LEARNER_NOT_READY: &str =
    "etcdserver: can only promote a learner member which is in sync with leader";
const TOO_MANY_LEARNERS: &str = "etcdserver: too many learner members in cluster";
const MEMBER_NOT_LEADER: &str = "etcdserver: not leader";
const BAD_TRANSFEREE: &str = "etcdserver: bad leader transferee";
const NOT_FOR_LEARNER: &str = "etcdserver: rpc not supported for learner";
const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";
const CORRUPT: &str = "etcdserver: corrupt cluster";

/// Why a client request failed, before it becomes a [`Status`].
#[derive(Debug)]
pub(crate) enum RequestError {
    /// Refused by the API-layer checks; nothing was proposed.
    Invalid(Invalid),
    /// Bigger than `--max-request-bytes`; nothing was proposed.
    TooLarge,
    /// Apply refused it; nothing changed.
    Apply(ApplyError),
    /// The store failed to answer a read.
    Storage(cairn_raft_storage::Error),
    /// Raft would not take a proposal.
    Write(RaftError<NodeId, ClientWriteError<NodeId, Member>>),
    /// A linearizable read could not pass the read barrier.
    Read(ReadError),
    /// No answer within the request timeout; the outcome is unknown.
    Timeout,
    /// The node is shutting down; the request may or may not be applied.
    Stopped,
    /// Apply answered with a response of another kind than the request:
    /// a bug, reported rather than panicked on.
    UnexpectedResponse(&'static str),
    /// A lease TTL above etcd's maximum.
    LeaseTtlTooLarge,
    /// A lock or campaign without a lease: refused, since a session the
    /// server made up would outlive the client.
    NoLease,
    /// A lock or campaign whose lease expired while it waited.
    SessionExpired,
    /// A proclaim by a leader that no longer leads.
    NotLeader,
    /// An election nobody leads.
    NoElectionLeader,
    /// A proclaim or resign without its leader key.
    MissingLeader,
    /// No member leads, so nothing can be proposed or read linearizably.
    NoLeader,
    /// openraft stopped.
    Fatal(Fatal<NodeId>),
    /// A request for the leader failed on its way there or back.
    Forward(ForwardError),
    /// A membership change or leader transfer was refused.
    Cluster(ClusterError),
    /// A learner does not serve this request.
    NotForLearner,
    /// A CORRUPT alarm is active: no member takes writes.
    Corrupt,
}

impl From<ForwardError> for RequestError {
    fn from(e: ForwardError) -> Self {
        RequestError::Forward(e)
    }
}

impl From<ClusterError> for RequestError {
    fn from(e: ClusterError) -> Self {
        RequestError::Cluster(e)
    }
}

/// Names the kind of a response apply should not have given.
pub(crate) fn unexpected(response: &cairn_raft_storage::Response) -> RequestError {
    use cairn_raft_storage::Response as Applied;
    let kind = match response {
        Applied::Empty => "empty",
        Applied::Put(_) => "put",
        Applied::DeleteRange(_) => "delete range",
        Applied::Txn(_) => "txn",
        Applied::Compaction(_) => "compaction",
        Applied::LeaseGrant(_) => "lease grant",
        Applied::LeaseRevoke(_) => "lease revoke",
        Applied::LeaseCheckpoint(_) => "lease checkpoint",
        Applied::Alarm(_) => "alarm",
        Applied::Rejected(_) => "rejected",
        Applied::Batch(_) => "batch",
    };
    RequestError::UnexpectedResponse(kind)
}

impl From<Invalid> for RequestError {
    fn from(e: Invalid) -> Self {
        RequestError::Invalid(e)
    }
}

impl From<cairn_raft_storage::Error> for RequestError {
    fn from(e: cairn_raft_storage::Error) -> Self {
        RequestError::Storage(e)
    }
}

impl From<RaftError<NodeId, ClientWriteError<NodeId, Member>>> for RequestError {
    fn from(e: RaftError<NodeId, ClientWriteError<NodeId, Member>>) -> Self {
        RequestError::Write(e)
    }
}

impl From<ReadError> for RequestError {
    fn from(e: ReadError) -> Self {
        RequestError::Read(e)
    }
}

fn invalid(e: Invalid) -> Status {
    let message = match e {
        Invalid::EmptyKey => EMPTY_KEY,
        Invalid::ValueProvided => VALUE_PROVIDED,
        Invalid::LeaseProvided => LEASE_PROVIDED,
        Invalid::SortOption => INVALID_SORT_OPTION,
        Invalid::TooManyOps => TOO_MANY_OPS,
        Invalid::DuplicateKey => DUPLICATE_KEY,
        Invalid::EmptyOp => KEY_NOT_FOUND,
    };
    Status::invalid_argument(message)
}

fn apply(e: ApplyError) -> Status {
    match e {
        ApplyError::Compacted => Status::out_of_range(COMPACTED),
        ApplyError::FutureRevision => Status::out_of_range(FUTURE_REV),
        ApplyError::LeaseNotFound => Status::not_found(LEASE_NOT_FOUND),
        ApplyError::LeaseExists => Status::failed_precondition(LEASE_EXISTS),
        ApplyError::KeyNotFound => Status::invalid_argument(KEY_NOT_FOUND),
        ApplyError::NoSpace => Status::resource_exhausted(NO_SPACE),
    }
}

fn storage(e: &cairn_raft_storage::Error) -> Status {
    use cairn_raft_storage::Error;
    match e {
        Error::Compacted => Status::out_of_range(COMPACTED),
        Error::FutureRevision => Status::out_of_range(FUTURE_REV),
        other => Status::internal(format!("etcdserver: storage: {other}")),
    }
}

fn fatal(e: &Fatal<NodeId>) -> Status {
    match e {
        Fatal::Stopped => Status::unavailable(STOPPED),
        Fatal::Panicked => Status::internal("etcdserver: raft: panicked"),
        Fatal::StorageError(e) => Status::internal(format!("etcdserver: raft storage: {e}")),
    }
}

fn read(e: &ReadError) -> Status {
    match e {
        ReadError::Raft(e) => match e.as_ref() {
            RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)) => {
                Status::unavailable(NO_LEADER)
            }
            // Leadership could not be confirmed by a quorum in time: etcd's
            // read index gives up with a timeout in that case too.
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)) => {
                Status::unavailable(TIMEOUT)
            }
            RaftError::Fatal(f) => fatal(f),
        },
        ReadError::Timeout => Status::unavailable(TIMEOUT),
        ReadError::Stopped => Status::unavailable(STOPPED),
        ReadError::Forward(e) => forward(e),
        ReadError::Learner => Status::unavailable(NOT_FOR_LEARNER),
    }
}

fn forward(e: &ForwardError) -> Status {
    match e {
        ForwardError::NoLeader => Status::unavailable(NO_LEADER),
        ForwardError::Relayed(r) => r.clone().into(),
        // Never delivered: nothing happened, and a retry is safe.
        ForwardError::Peer(p) if p.undelivered() => Status::unavailable(LEADER_CHANGED),
        // Maybe delivered: the outcome is unknown, as after a timeout.
        ForwardError::Peer(_) | ForwardError::Behind => Status::unavailable(TIMEOUT),
        ForwardError::Mismatch => Status::internal(format!("etcdserver: internal error: {e}")),
    }
}

fn cluster(e: &ClusterError) -> Status {
    match e {
        ClusterError::MemberExists => Status::failed_precondition(MEMBER_EXISTS),
        ClusterError::PeerUrlExists => Status::failed_precondition(PEER_URL_EXISTS),
        // etcd maps this one through its client-side error, so gRPC sends
        // it as Unknown.
        ClusterError::NotEnoughStarted => Status::unknown(NOT_ENOUGH_STARTED),
        ClusterError::Unhealthy => Status::unavailable(UNHEALTHY),
        ClusterError::BadUrls => Status::invalid_argument(BAD_URLS),
        ClusterError::MemberNotFound => Status::not_found(MEMBER_NOT_FOUND),
        ClusterError::NotLearner => Status::failed_precondition(MEMBER_NOT_LEARNER),
        ClusterError::LearnerNotReady => Status::failed_precondition(LEARNER_NOT_READY),
        ClusterError::TooManyLearners => Status::failed_precondition(TOO_MANY_LEARNERS),
        ClusterError::NotLeader => Status::failed_precondition(MEMBER_NOT_LEADER),
        ClusterError::BadTransferee => Status::failed_precondition(BAD_TRANSFEREE),
        ClusterError::LeaderChanged => Status::unavailable(LEADER_CHANGED),
        ClusterError::Raft(reason) => Status::unavailable(format!("etcdserver: raft: {reason}")),
    }
}

fn write(e: &RaftError<NodeId, ClientWriteError<NodeId, Member>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Status::unavailable(NO_LEADER),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Status::internal(format!("etcdserver: raft: {e}"))
        }
        RaftError::Fatal(f) => fatal(f),
    }
}

impl From<RequestError> for Status {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Invalid(e) => invalid(e),
            RequestError::TooLarge => Status::invalid_argument(REQUEST_TOO_LARGE),
            RequestError::Apply(e) => apply(e),
            RequestError::Storage(e) => storage(&e),
            RequestError::Write(e) => write(&e),
            RequestError::Read(e) => read(&e),
            RequestError::Timeout => Status::unavailable(TIMEOUT),
            RequestError::Stopped => Status::unavailable(STOPPED),
            RequestError::LeaseTtlTooLarge => Status::out_of_range(LEASE_TTL_TOO_LARGE),
            RequestError::NoLease => Status::invalid_argument(NO_LEASE),
            RequestError::SessionExpired => Status::unknown(SESSION_EXPIRED),
            RequestError::NotLeader => Status::unknown(NOT_LEADER),
            RequestError::NoElectionLeader => Status::unknown(NO_ELECTION_LEADER),
            RequestError::MissingLeader => Status::unknown(MISSING_LEADER),
            RequestError::NoLeader => Status::unavailable(NO_LEADER),
            RequestError::Fatal(f) => fatal(&f),
            RequestError::Forward(e) => forward(&e),
            RequestError::Cluster(e) => cluster(&e),
            RequestError::NotForLearner => Status::unavailable(NOT_FOR_LEARNER),
            RequestError::Corrupt => Status::data_loss(CORRUPT),
            RequestError::UnexpectedResponse(kind) => Status::internal(format!(
                "etcdserver: internal error: apply answered with a {kind} response"
            )),
        }
    }
}

/// Wraps a gRPC service so that the statuses tonic produces before a
/// handler runs read as grpc-go's: a request above the decoding limit is
/// `ResourceExhausted "grpc: received message larger than max (N vs. M)"`
/// in etcd, where tonic says `OutOfRange "Error, decoded message length too
/// large: ..."`.
///
/// Only trailers-only responses (every unary error) are rewritten, since
/// that is where tonic puts a request it could not decode.
///
/// It also applies etcd's interceptor checks, which look only at the
/// method and the metadata: a learner serves nothing but `Status` and
/// (serializable) `Range`, and a request with `hasleader: true` gets
/// "no leader" while there is none.
#[derive(Clone)]
pub(crate) struct GrpcCompat<S> {
    inner: S,
    route: Route,
}

impl<S> GrpcCompat<S> {
    pub(crate) fn new(inner: S, route: Route) -> Self {
        GrpcCompat { inner, route }
    }

    /// The status etcd's interceptors answer `request` with, if any.
    fn intercept<B>(&self, request: &http::Request<B>) -> Option<Status> {
        let path = request.uri().path();
        // Linearizable ranges are refused by the read barrier.
        let learner_ok = matches!(
            path,
            "/etcdserverpb.KV/Range"
                | "/etcdserverpb.Maintenance/Status"
                | "/etcdserverpb.Maintenance/Snapshot"
        );
        if !learner_ok && self.route.learner() {
            return Some(RequestError::NotForLearner.into());
        }
        let wants_leader = request
            .headers()
            .get("hasleader")
            .is_some_and(|v| v.as_bytes() == b"true");
        if wants_leader && matches!(self.route.target(), Target::Nobody) {
            return Some(RequestError::NoLeader.into());
        }
        None
    }
}

impl<S: NamedService> NamedService for GrpcCompat<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for GrpcCompat<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some(status) = self.intercept(&request) {
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            rewrite_tonic_status(response.headers_mut());
            Ok(response)
        })
    }
}

/// Rewrites a status tonic wrote into `headers` into grpc-go's; leaves
/// every other header map alone.
fn rewrite_tonic_status(headers: &mut http::HeaderMap) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if status.code() != Code::OutOfRange {
        return;
    }
    let Some((found, limit)) = decode_limit(status.message()) else {
        return;
    };
    let etcd = Status::resource_exhausted(format!(
        "grpc: received message larger than max ({found} vs. {limit})"
    ));
    // Only fails for messages that cannot be a header value; this one can.
    let _ = etcd.add_header(headers);
}

/// The sizes in tonic's "decoded message length too large" message.
fn decode_limit(message: &str) -> Option<(u64, u64)> {
    let rest = message.strip_prefix("Error, decoded message length too large: found ")?;
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    Some((found.parse().ok()?, limit.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use openraft::error::ForwardToLeader;

    use super::*;

    #[test]
    fn etcd_codes_and_messages() {
        let cases: Vec<(RequestError, Code, &str)> = vec![
            (Invalid::EmptyKey.into(), Code::InvalidArgument, EMPTY_KEY),
            (
                Invalid::ValueProvided.into(),
                Code::InvalidArgument,
                VALUE_PROVIDED,
            ),
            (
                Invalid::LeaseProvided.into(),
                Code::InvalidArgument,
                LEASE_PROVIDED,
            ),
            (
                Invalid::SortOption.into(),
                Code::InvalidArgument,
                INVALID_SORT_OPTION,
            ),
            (
                Invalid::TooManyOps.into(),
                Code::InvalidArgument,
                TOO_MANY_OPS,
            ),
            (
                Invalid::DuplicateKey.into(),
                Code::InvalidArgument,
                DUPLICATE_KEY,
            ),
            (
                Invalid::EmptyOp.into(),
                Code::InvalidArgument,
                KEY_NOT_FOUND,
            ),
            (
                RequestError::TooLarge,
                Code::InvalidArgument,
                REQUEST_TOO_LARGE,
            ),
            (
                RequestError::Apply(ApplyError::Compacted),
                Code::OutOfRange,
                COMPACTED,
            ),
            (
                RequestError::Apply(ApplyError::FutureRevision),
                Code::OutOfRange,
                FUTURE_REV,
            ),
            (
                RequestError::Apply(ApplyError::LeaseNotFound),
                Code::NotFound,
                LEASE_NOT_FOUND,
            ),
            (
                RequestError::Apply(ApplyError::KeyNotFound),
                Code::InvalidArgument,
                KEY_NOT_FOUND,
            ),
            (
                cairn_raft_storage::Error::Compacted.into(),
                Code::OutOfRange,
                COMPACTED,
            ),
            (
                cairn_raft_storage::Error::FutureRevision.into(),
                Code::OutOfRange,
                FUTURE_REV,
            ),
            (
                RequestError::Write(RaftError::APIError(ClientWriteError::ForwardToLeader(
                    ForwardToLeader::empty(),
                ))),
                Code::Unavailable,
                NO_LEADER,
            ),
            (
                RequestError::Write(RaftError::Fatal(Fatal::Stopped)),
                Code::Unavailable,
                STOPPED,
            ),
            (
                ReadError::Raft(Box::new(RaftError::APIError(
                    CheckIsLeaderError::ForwardToLeader(ForwardToLeader::empty()),
                )))
                .into(),
                Code::Unavailable,
                NO_LEADER,
            ),
            (ReadError::Timeout.into(), Code::Unavailable, TIMEOUT),
            (ReadError::Stopped.into(), Code::Unavailable, STOPPED),
            (RequestError::Timeout, Code::Unavailable, TIMEOUT),
        ];
        for (error, code, message) in cases {
            let name = format!("{error:?}");
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{name}");
            assert_eq!(status.message(), message, "{name}");
        }
    }

    #[test]
    fn failures_are_internal_and_readable() {
        let status = Status::from(RequestError::Storage(
            cairn_raft_storage::Error::Corruption("bad key".into()),
        ));
        assert_eq!(status.code(), Code::Internal);
        assert!(status.message().contains("bad key"), "{}", status.message());
    }

    #[test]
    fn tonic_decode_limit_reads_as_grpc_go() {
        let mut headers = http::HeaderMap::new();
        Status::out_of_range(
            "Error, decoded message length too large: found 2621450 bytes, the limit is: 2097152 bytes",
        )
        .add_header(&mut headers)
        .expect("valid header");
        rewrite_tonic_status(&mut headers);
        let status = Status::from_header_map(&headers).expect("a status");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "grpc: received message larger than max (2621450 vs. 2097152)"
        );

        // Our own OutOfRange statuses stay as they are.
        let mut headers = http::HeaderMap::new();
        Status::from(RequestError::Apply(ApplyError::Compacted))
            .add_header(&mut headers)
            .expect("valid header");
        rewrite_tonic_status(&mut headers);
        let status = Status::from_header_map(&headers).expect("a status");
        assert_eq!(
            (status.code(), status.message()),
            (Code::OutOfRange, COMPACTED)
        );
    }
}
