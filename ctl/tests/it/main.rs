//! cairnctl's integration tests: the `cairnctl` binary (and etcdctl 3.5)
//! against Cairn members started in-process on 127.0.0.61 and up.
//!
//! - `golden`: the output formats and the error messages, exactly.
//! - `backup`: the backup-and-restore runbook, end to end, on 3 members.
//! - `quota`: NOSPACE, then recovery by compact, defrag and disarm.
//! - `corrupt`: the periodic corruption check raises CORRUPT.

mod backup;
mod corrupt;
mod golden;
mod quota;
mod support;
