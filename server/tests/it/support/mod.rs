//! Test support: real server processes on loopback ports, and etcdctl.
//!
//! - [`CairnProc`] runs the `cairn` binary this package builds, and
//!   [`EtcdProc`] runs Debian's etcd 3.4 (`/usr/bin/etcd`) as the reference,
//!   each with its own temporary data dir and free ports on 127.0.0.1. Both
//!   wait until a Range answers before returning, and are killed with SIGKILL
//!   when dropped.
//! - [`Etcdctl`] runs the real etcdctl 3.4 (`/usr/bin/etcdctl`), or 3.5
//!   (`/opt/etcd-3.5/etcdctl`, for flags 3.4 lacks), against an
//!   endpoint.
//! - [`diff`] sends one script of requests to both servers and compares
//!   the responses field by field; [`watch_diff`] does the same for watch
//!   streams.
//! - [`recorder`] records writes and raw watch streams for the watch
//!   validator.
//! - [`cluster`] runs N members of either flavour as one cluster, each on
//!   its own 127.0.0.x address, and changes its membership; [`writer`] is a
//!   client that writes through it, failing over between members.
//! - [`partition`] cuts members apart with nftables.
//!
//! Missing etcd binaries fail the test with a pointer to `scripts/test.sh`,
//! which installs them: a compatibility test that skips itself cannot fail.

pub mod cluster;
pub mod diff;
mod etcdctl;
pub mod partition;
mod process;
pub mod recorder;
pub mod watch_diff;
pub mod writer;

pub use self::etcdctl::{Etcdctl, Kv};
pub use self::process::{CairnProc, EtcdProc, ServerProc};
