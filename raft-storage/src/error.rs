//! The crate's one error type, and the request errors that apply decides.

use serde::{Deserialize, Serialize};

/// Errors from the store.
///
/// The first group is a caller's mistake that etcd names (the server maps
/// each to etcd's gRPC code and message); the rest are the store failing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The requested revision is below the compact revision.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is above the current revision.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// sled failed; the store cannot go on.
    #[error("sled: {0}")]
    Sled(sled::Error),
    /// A file of the data dir (a snapshot) could not be read or written.
    #[error("io: {0}")]
    Io(std::io::Error),
    /// The data dir holds bytes this version cannot make sense of.
    #[error("corrupt data dir: {0}")]
    Corruption(String),
    /// A backup file is damaged or is not a Cairn backup.
    #[error("bad backup: {0}")]
    BadBackup(String),
}

/// Crate-wide result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why apply refused a request. Deterministic: every member refuses the same
/// entry for the same reason, and a refused entry changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    /// A compaction at or below the current compact revision.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// A compaction above the current revision.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// A put or revoke names a lease that does not exist.
    #[error("requested lease not found")]
    LeaseNotFound,
    /// A grant names a lease that exists.
    #[error("lease already exists")]
    LeaseExists,
    /// A put with ignore_value or ignore_lease on a key that does not exist.
    #[error("key not found")]
    KeyNotFound,
    /// A put, a txn that puts, or a lease grant while the NOSPACE alarm is
    /// active (etcd's capped applier).
    #[error("mvcc: database space exceeded")]
    NoSpace,
}

// Written out rather than `#[from]`, which would also make the cause the
// error's source and print it twice in a `{:#}` chain.
impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Sled(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) => e,
            other => std::io::Error::other(other.to_string()),
        }
    }
}
