//! Crash points for fault injection (feature `failpoints`, test-only).
//!
//! Each point is a `fail` failpoint that, when its action fires (for
//! example `FAILPOINTS='raft-storage::after-apply=200*off->return'`: the
//! 201st pass), aborts the process: no destructor runs and nothing more is
//! flushed, as with kill -9 at that line. Without the feature a point is
//! nothing. The binary arms them at startup with `fail::FailScenario`.

/// Before an append's flush.
pub(crate) const BEFORE_LOG_FLUSH: &str = "raft-storage::before-log-flush";
/// After the fsync, before the appends are acknowledged to openraft.
pub(crate) const AFTER_LOG_FLUSH: &str = "raft-storage::after-log-flush";
/// Before a batch of committed entries is applied.
pub(crate) const BEFORE_APPLY: &str = "raft-storage::before-apply";
/// After a batch is applied (written to sled, not flushed), before its
/// responses go back to openraft.
pub(crate) const AFTER_APPLY: &str = "raft-storage::after-apply";

/// Aborts the process if the failpoint `name` fires.
#[cfg(feature = "failpoints")]
pub(crate) fn point(name: &'static str) {
    if fail::eval(name, |_| ()).is_some() {
        tracing::error!(failpoint = name, "failpoint fired: aborting");
        std::process::abort();
    }
}

/// Nothing, without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn point(_name: &'static str) {}
