//! The crate's one error type.

use crate::escaped::Escaped;
use crate::watch::Violation;

/// How many violations [`Error::Violations`] prints before it summarises the
/// rest; a broken stream can produce thousands, and a test log needs the
/// first few.
const SHOWN: usize = 20;

/// Errors from the checkers.
///
/// The first group is a recorded history that cannot have come from etcd: the
/// harness recorded it wrongly, so nothing can be checked against it. The last
/// variant is a checked stream that broke etcd's watch guarantees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A commit's revision is not above the history's current revision.
    #[error("commit at revision {revision}, but the history is already at {current}")]
    StaleRevision {
        /// The revision the commit named.
        revision: i64,
        /// The history's revision before the commit.
        current: i64,
    },
    /// One commit changes the same key twice, which etcd refuses ("duplicate
    /// key given in txn request").
    #[error("revision {revision}: key {} changed twice in one txn", Escaped(.key))]
    DuplicateKey {
        /// The commit's revision.
        revision: i64,
        /// The key named twice.
        key: Vec<u8>,
    },
    /// A change names the empty key, which etcd refuses.
    #[error("revision {revision}: empty key")]
    EmptyKey {
        /// The commit's revision.
        revision: i64,
    },
    /// A commit that changes nothing (no changes, or only deletes of absent
    /// keys); etcd does not give such a txn a revision.
    #[error("revision {revision}: the commit changes nothing")]
    NoChange {
        /// The commit's revision.
        revision: i64,
    },
    /// A compaction outside `1..=` the history's revision; etcd refuses a
    /// compaction at a future revision.
    #[error("compaction at {revision}, outside 1..={current}")]
    BadCompaction {
        /// The compaction's revision.
        revision: i64,
        /// The history's revision.
        current: i64,
    },
    /// A watch stream broke etcd's guarantees; see
    /// [`Report::ensure`](crate::watch::Report::ensure).
    #[error("{}", list(.0))]
    Violations(Vec<Violation>),
}

/// Crate-wide result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One violation a line, numbered, at most [`SHOWN`] of them.
fn list(violations: &[Violation]) -> String {
    use std::fmt::Write as _;
    let mut out = format!("{} watch violation(s):", violations.len());
    for (n, v) in violations.iter().take(SHOWN).enumerate() {
        // Writing to a String cannot fail.
        let _ = write!(out, "\n  {}. {v}", n + 1);
    }
    if violations.len() > SHOWN {
        let _ = write!(out, "\n  … and {} more", violations.len() - SHOWN);
    }
    out
}
