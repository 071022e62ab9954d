//! The crate's one error type, and the one place a gRPC [`Status`] becomes
//! an [`Error`].
//!
//! etcd clients tell errors apart by the gRPC code *and* the message, so
//! [`Error::from_status`] matches both against etcd's `rpctypes` (the same
//! strings Cairn sends). A status it does not recognise stays a
//! [`Error::Rpc`], code and message intact.

use std::time::Duration;

use tonic::{Code, Status};

use crate::types::Revision;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, with a variant for each condition a caller
/// can act on.
///
/// Three kinds of variant:
/// - **etcd's errors**, parsed from the gRPC code and message
///   ([`Error::Compacted`], [`Error::NoLeader`], …);
/// - **outcomes of the retry policy**: [`Error::Ambiguous`] (a write may or
///   may not have been applied), [`Error::Unavailable`] and
///   [`Error::Timeout`];
/// - **client-side conditions** (bad endpoints, a watch that was cancelled,
///   an I/O error while writing a snapshot).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- configuration --------------------------------------------------
    /// `Client::connect` was given no endpoint.
    #[error("no endpoints given")]
    NoEndpoints,
    /// An endpoint is not a URL the client can use.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    // ---- outcomes of the retry policy -----------------------------------
    /// A write (Put, Delete, Txn, Compact, a lease or member change…) was
    /// sent, and then the connection broke, the server gave up, or the
    /// deadline passed before an answer came. It may or may not have been
    /// applied: read the state back before deciding to retry. The client
    /// never retries such a write itself (etcd #18424).
    #[error("outcome unknown, the request may or may not have been applied: {status}")]
    Ambiguous {
        /// What ended the attempt.
        status: Status,
    },
    /// No endpoint could serve the request before the deadline; for a
    /// write, none of them received it.
    #[error("no endpoint could serve the request: {status}")]
    Unavailable {
        /// The last error seen.
        status: Status,
    },
    /// A read, or a write known not to have reached any server, did not
    /// complete within the request timeout.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// The client's background task is gone (the runtime is shutting down).
    #[error("the client's background task has stopped")]
    Closed,

    // ---- etcd's errors: reads and revisions ------------------------------
    /// The revision asked for has been compacted away. A watcher getting
    /// this must relist (read at the current revision) and watch again.
    #[error("required revision has been compacted{}", fmt_compact(*.compact_revision))]
    Compacted {
        /// The compact revision, when the server said (a cancelled watch
        /// does; a Range does not).
        compact_revision: Option<Revision>,
    },
    /// The revision asked for is above the store's current revision.
    #[error("required revision is a future revision")]
    FutureRevision,

    // ---- etcd's errors: requests ----------------------------------------
    /// A request without a key.
    #[error("key is not provided")]
    EmptyKey,
    /// A put with `ignore_value` or `ignore_lease` on a key that does not
    /// exist.
    #[error("key not found")]
    KeyNotFound,
    /// A put with `ignore_value` and a value.
    #[error("value is provided")]
    ValueProvided,
    /// A put with `ignore_lease` and a lease.
    #[error("lease is provided")]
    LeaseProvided,
    /// A txn with more operations than the server allows (128 by default).
    #[error("too many operations in txn request")]
    TooManyOps,
    /// A txn that writes one key twice in one branch.
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    /// A request above the server's size limit (1.5 MiB by default).
    #[error("request is too large")]
    RequestTooLarge,
    /// The server is overloaded; nothing was done.
    #[error("too many requests")]
    TooManyRequests,
    /// The NOSPACE alarm is raised: only reads, deletes, compaction and
    /// disarm are accepted until space is freed and the alarm disarmed.
    #[error("database space exceeded")]
    NoSpace,

    // ---- etcd's errors: leases -------------------------------------------
    /// The lease does not exist (expired or revoked).
    #[error("requested lease not found")]
    LeaseNotFound,
    /// A grant with an ID that is in use.
    #[error("lease already exists")]
    LeaseExists,
    /// A grant with a TTL above the server's maximum.
    #[error("too large lease TTL")]
    LeaseTtlTooLarge,

    // ---- etcd's errors: the cluster --------------------------------------
    /// The member answering has no leader.
    #[error("no leader")]
    NoLeader,
    /// The request needs the leader, and this member is not it.
    #[error("not leader")]
    NotLeader,
    /// The server timed out, stopped or saw the leader change while serving
    /// a read; it is retried on another endpoint until the deadline.
    #[error("server unavailable: {status}")]
    ServerUnavailable {
        /// The server's answer.
        status: Status,
    },
    /// A learner does not serve this request.
    #[error("rpc not supported for learner")]
    NotSupportedForLearner,
    /// The cluster refused a membership change for now (with
    /// `--strict-reconfig-check`, members not yet connected long enough).
    #[error("unhealthy cluster")]
    UnhealthyCluster,
    /// A member ID that already exists.
    #[error("member ID already exists")]
    MemberExists,
    /// Peer URLs that another member has.
    #[error("peer URLs already exist")]
    PeerUrlExists,
    /// Peer URLs that are not valid.
    #[error("given member URLs are invalid")]
    BadMemberUrls,
    /// No member has this ID.
    #[error("member not found")]
    MemberNotFound,
    /// Promote of a member that is not a learner.
    #[error("can only promote a learner member")]
    MemberNotLearner,
    /// Promote of a learner that has not caught up with the leader.
    #[error("can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// The cluster has a learner already.
    #[error("too many learner members in cluster")]
    TooManyLearners,
    /// A reconfiguration that would leave too few started members.
    #[error("re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    /// MoveLeader to a member that cannot lead.
    #[error("bad leader transferee")]
    BadLeaderTransferee,
    /// The data of the cluster is corrupt (the CORRUPT alarm).
    #[error("corrupt cluster")]
    Corrupt,

    // ---- etcd's errors: auth (room for the auth issue) --------------------
    /// The user may not do this.
    #[error("permission denied")]
    PermissionDenied,
    /// The auth token is invalid or expired.
    #[error("invalid auth token")]
    InvalidAuthToken,
    /// Wrong user name or password.
    #[error("authentication failed, invalid user ID or password")]
    AuthFailed,

    // ---- lock and election -------------------------------------------------
    /// The session's lease expired while a lock or campaign waited.
    #[error("session is expired")]
    SessionExpired,
    /// Proclaim or resign by a candidate that no longer leads.
    #[error("election: not leader")]
    ElectionNotLeader,
    /// The election has no leader.
    #[error("election: no leader")]
    ElectionNoLeader,

    // ---- watch -------------------------------------------------------------
    /// The server cancelled the watch for a reason other than compaction.
    #[error("watch canceled by the server: {reason}")]
    WatchCanceled {
        /// The server's `cancel_reason`.
        reason: String,
    },

    // ---- everything else ------------------------------------------------
    /// The server does not implement this call (Cairn answers this for
    /// maintenance calls it does not have yet).
    #[error("not implemented by the server: {message}")]
    Unimplemented {
        /// The server's message.
        message: String,
    },
    /// Writing a snapshot to the caller's writer failed.
    #[error("writing the snapshot: {0}")]
    Io(#[from] std::io::Error),
    /// A snapshot stream that ended before `remaining_bytes` reached zero.
    #[error("the snapshot stream ended early")]
    SnapshotTruncated,
    /// Any other gRPC error, with the code and message as received.
    #[error("gRPC error: {0}")]
    Rpc(Status),
}

fn fmt_compact(revision: Option<Revision>) -> String {
    revision.map_or_else(String::new, |r| format!(" (compact revision {r})"))
}

impl Error {
    /// Parses a gRPC status into etcd's error kind, matching the code and
    /// the message as etcd clients do.
    ///
    /// ```
    /// use cairn_client::Error;
    /// use tonic::Status;
    ///
    /// let status = Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
    /// assert!(matches!(Error::from_status(status), Error::Compacted { compact_revision: None }));
    ///
    /// let status = Status::unavailable("etcdserver: no leader");
    /// assert!(matches!(Error::from_status(status), Error::NoLeader));
    ///
    /// // The same message with another code is not etcd's error.
    /// let status = Status::internal("etcdserver: no leader");
    /// assert!(matches!(Error::from_status(status), Error::Rpc(_)));
    /// ```
    pub fn from_status(status: Status) -> Error {
        use Code::*;
        // Some servers (and proxies) add a "rpc error: code = ... desc = "
        // prefix; etcd's Go client strips it too (rpctypes.ErrorDesc).
        let message = status.message();
        let desc = message
            .rsplit_once("desc = ")
            .map_or(message, |(_, desc)| desc);
        match (status.code(), desc) {
            (OutOfRange, "etcdserver: mvcc: required revision has been compacted") => {
                Error::Compacted {
                    compact_revision: None,
                }
            }
            (OutOfRange, "etcdserver: mvcc: required revision is a future revision") => {
                Error::FutureRevision
            }
            (InvalidArgument, "etcdserver: key is not provided") => Error::EmptyKey,
            (InvalidArgument, "etcdserver: key not found") => Error::KeyNotFound,
            (InvalidArgument, "etcdserver: value is provided") => Error::ValueProvided,
            (InvalidArgument, "etcdserver: lease is provided") => Error::LeaseProvided,
            (InvalidArgument, "etcdserver: too many operations in txn request") => {
                Error::TooManyOps
            }
            (InvalidArgument, "etcdserver: duplicate key given in txn request") => {
                Error::DuplicateKey
            }
            (InvalidArgument, "etcdserver: request is too large") => Error::RequestTooLarge,
            (ResourceExhausted, "etcdserver: too many requests") => Error::TooManyRequests,
            (ResourceExhausted, "etcdserver: mvcc: database space exceeded") => Error::NoSpace,
            (NotFound, "etcdserver: requested lease not found") => Error::LeaseNotFound,
            (FailedPrecondition, "etcdserver: lease already exists") => Error::LeaseExists,
            (OutOfRange, "etcdserver: too large lease TTL") => Error::LeaseTtlTooLarge,
            (Unavailable, "etcdserver: no leader") => Error::NoLeader,
            (FailedPrecondition, "etcdserver: not leader") => Error::NotLeader,
            (Unavailable, "etcdserver: rpc not supported for learner") => {
                Error::NotSupportedForLearner
            }
            (Unavailable, "etcdserver: unhealthy cluster") => Error::UnhealthyCluster,
            (FailedPrecondition, "etcdserver: member ID already exist") => Error::MemberExists,
            (FailedPrecondition, "etcdserver: Peer URLs already exists") => Error::PeerUrlExists,
            (InvalidArgument, "etcdserver: given member URLs are invalid") => Error::BadMemberUrls,
            (NotFound, "etcdserver: member not found") => Error::MemberNotFound,
            (FailedPrecondition, "etcdserver: can only promote a learner member") => {
                Error::MemberNotLearner
            }
            (
                FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader",
            ) => Error::LearnerNotReady,
            (FailedPrecondition, "etcdserver: too many learner members in cluster") => {
                Error::TooManyLearners
            }
            (
                FailedPrecondition | Unknown,
                "etcdserver: re-configuration failed due to not enough started members",
            ) => Error::NotEnoughStartedMembers,
            (FailedPrecondition, "etcdserver: bad leader transferee") => Error::BadLeaderTransferee,
            (DataLoss, "etcdserver: corrupt cluster") => Error::Corrupt,
            (PermissionDenied, "etcdserver: permission denied") => Error::PermissionDenied,
            (Unauthenticated, "etcdserver: invalid auth token") => Error::InvalidAuthToken,
            (InvalidArgument, "etcdserver: authentication failed, invalid user ID or password") => {
                Error::AuthFailed
            }
            // The lock and election services send their Go package's plain
            // errors, which gRPC codes as Unknown.
            (Unknown, "mutex: session is expired" | "session: expired") => Error::SessionExpired,
            (Unknown, "election: not leader") => Error::ElectionNotLeader,
            (Unknown, "election: no leader") => Error::ElectionNoLeader,
            (Unavailable, d)
                if d.starts_with("etcdserver: request timed out")
                    || d == "etcdserver: leader changed"
                    || d == "etcdserver: server stopped"
                    || d == "etcdserver: not capable" =>
            {
                Error::ServerUnavailable { status }
            }
            (Unimplemented, _) => Error::Unimplemented {
                message: message.to_owned(),
            },
            (Unavailable, _) => Error::Unavailable { status },
            _ => Error::Rpc(status),
        }
    }

    /// Whether the server refused the request before doing anything with
    /// it, so that sending it again elsewhere is safe even for a write.
    ///
    /// - "no leader": etcd sends it from its `hasleader` interceptor, and
    ///   Cairn also when openraft refused a proposal or there was no leader
    ///   to forward to, each before anything was proposed;
    /// - "too many requests", "not capable": checked before proposing;
    /// - "rpc not supported for learner": the learner interceptor;
    /// - "leader changed": etcd sends it only for reads and lease lookups
    ///   (`ErrLeaderChanged`), never after proposing a write; Cairn sends it
    ///   when a follower could not deliver a request to the leader, or when
    ///   openraft refused a membership change because leadership moved.
    ///
    /// "Request timed out" and "server stopped" are not on this list: etcd
    /// sends them after proposing.
    pub(crate) fn refused_before_processing(&self) -> bool {
        match self {
            Error::NoLeader | Error::TooManyRequests | Error::NotSupportedForLearner => true,
            Error::ServerUnavailable { status } => matches!(
                status.message(),
                "etcdserver: not capable" | "etcdserver: leader changed"
            ),
            _ => false,
        }
    }

    /// Whether a read failing this way may succeed on another endpoint or
    /// a little later.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::NoLeader
                | Error::TooManyRequests
                | Error::NotSupportedForLearner
                | Error::ServerUnavailable { .. }
                | Error::Unavailable { .. }
        )
    }

    /// The gRPC status behind this error, if it came from one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Ambiguous { status }
            | Error::Unavailable { status }
            | Error::ServerUnavailable { status }
            | Error::Rpc(status) => Some(status),
            _ => None,
        }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Error::from_status(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// etcd's rpctypes, code and message, each parsed to its kind.
    #[test]
    fn etcd_errors_parse_by_code_and_message() {
        use Code::*;
        type Case = (Code, &'static str, fn(&Error) -> bool);
        let cases: Vec<Case> = vec![
            (
                OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
                |e| matches!(e, Error::Compacted { compact_revision: None }),
            ),
            (
                OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
                |e| matches!(e, Error::FutureRevision),
            ),
            (NotFound, "etcdserver: requested lease not found", |e| {
                matches!(e, Error::LeaseNotFound)
            }),
            (Unavailable, "etcdserver: no leader", |e| {
                matches!(e, Error::NoLeader)
            }),
            (
                ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
                |e| matches!(e, Error::NoSpace),
            ),
            (
                InvalidArgument,
                "etcdserver: too many operations in txn request",
                |e| matches!(e, Error::TooManyOps),
            ),
            (
                InvalidArgument,
                "etcdserver: duplicate key given in txn request",
                |e| matches!(e, Error::DuplicateKey),
            ),
            (InvalidArgument, "etcdserver: key is not provided", |e| {
                matches!(e, Error::EmptyKey)
            }),
            (InvalidArgument, "etcdserver: request is too large", |e| {
                matches!(e, Error::RequestTooLarge)
            }),
            (FailedPrecondition, "etcdserver: lease already exists", |e| {
                matches!(e, Error::LeaseExists)
            }),
            (Unavailable, "etcdserver: request timed out", |e| {
                matches!(e, Error::ServerUnavailable { .. })
            }),
            (
                Unavailable,
                "etcdserver: request timed out, possibly due to previous leader failure",
                |e| matches!(e, Error::ServerUnavailable { .. }),
            ),
            (Unavailable, "etcdserver: leader changed", |e| {
                matches!(e, Error::ServerUnavailable { .. })
            }),
            (NotFound, "etcdserver: member not found", |e| {
                matches!(e, Error::MemberNotFound)
            }),
            (
                FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader",
                |e| matches!(e, Error::LearnerNotReady),
            ),
            (Unknown, "election: not leader", |e| {
                matches!(e, Error::ElectionNotLeader)
            }),
            (Unknown, "mutex: session is expired", |e| {
                matches!(e, Error::SessionExpired)
            }),
            (
                Unimplemented,
                "etcdserver: snapshot is not implemented yet",
                |e| matches!(e, Error::Unimplemented { .. }),
            ),
            (Unavailable, "tcp connect error", |e| {
                matches!(e, Error::Unavailable { .. })
            }),
            // Right message, wrong code: not etcd's error.
            (Internal, "etcdserver: no leader", |e| matches!(e, Error::Rpc(_))),
            (
                Unknown,
                "rpc error: code = OutOfRange desc = etcdserver: mvcc: required revision is a future revision",
                |e| matches!(e, Error::Rpc(_)),
            ),
            (
                OutOfRange,
                "rpc error: code = OutOfRange desc = etcdserver: mvcc: required revision is a future revision",
                |e| matches!(e, Error::FutureRevision),
            ),
        ];
        for (code, message, is_expected) in cases {
            let error = Error::from_status(Status::new(code, message));
            assert!(
                is_expected(&error),
                "{code:?} {message:?} parsed as {error:?}"
            );
        }
    }

    #[test]
    fn only_refusals_are_safe_to_resend() {
        let safe = [
            Status::unavailable("etcdserver: no leader"),
            Status::resource_exhausted("etcdserver: too many requests"),
            Status::unavailable("etcdserver: rpc not supported for learner"),
            Status::unavailable("etcdserver: not capable"),
            Status::unavailable("etcdserver: leader changed"),
        ];
        for status in safe {
            assert!(Error::from_status(status).refused_before_processing());
        }
        let unsafe_ = [
            Status::unavailable("etcdserver: request timed out"),
            Status::unavailable("etcdserver: server stopped"),
            Status::unavailable("error trying to connect"),
            Status::cancelled("timeout expired"),
        ];
        for status in unsafe_ {
            assert!(!Error::from_status(status).refused_before_processing());
        }
    }
}
