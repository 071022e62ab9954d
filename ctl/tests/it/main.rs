//! cairnctl's integration tests: the `cairnctl` binary (and etcdctl 3.5)
//! against Cairn members started in-process on 127.0.0.61 and up.
//!
//! - `golden`: the output formats and the error messages, exactly.
//! - `backup`: the backup-and-restore runbook, end to end, on 3 members.
//! - `quota`: NOSPACE, then recovery by compact, defrag and disarm.
//! - `corrupt`: the periodic corruption check raises CORRUPT.
//! - `txn`: txn scripts, from stdin and with `-i`, print what etcdctl 3.5
//!   prints on etcd 3.5.
//! - `lease`: keep-alive keeps a lease past its TTL until killed.
//! - `runbooks`: rolling restart under a writer, growing 3 → 5, recovery
//!   from one survivor, each through cairnctl as docs/operations.md says.

mod backup;
mod corrupt;
mod golden;
mod lease;
mod quota;
mod runbooks;
mod support;
mod txn;
