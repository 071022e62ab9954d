//! cairn-jepsen: a Jepsen-style fault-injection harness for Cairn, and the
//! consistency checkers it runs.
//!
//! # Layout
//! - [`run`]: the runner behind `cairn-jepsen run`: a cluster of `cairn`
//!   processes on 127.0.0.61+, concurrent clients recording a
//!   [`history`], a seeded nemesis (kill, pause, nftables partitions,
//!   membership changes, storage failpoints),
//!   healing, recovery, the checks, and a results dir.
//! - [`history`]: ops with real times; a timeout is indeterminate.
//! - [`linear`]: a WGL/Porcupine-style linearizability search, per key.
//! - [`elle`]: strict serializability of list-append txns, by
//!   dependency cycles (Elle-style) with revisions as commit order.
//! - [`checks`]: global checks: lost writes, revisions going backwards,
//!   one value with two revisions.
//! - [`watch`]: checks a recorded watch stream against the history of
//!   committed writes (order, gaps, duplicates, atomic revisions, filters,
//!   prev_kv, progress and compaction promises).
//! - [`watchers`]: the watch workload's check: a reference watch agreeing
//!   with the clients' history, then every watcher's segments and stitched
//!   stream through [`watch`].
//! - [`leases`]: the lease workload's history and check (no key gone while
//!   its lease was protected by a keepalive, none outliving it).
//! - [`locks`]: the lock workload's check (no two confirmed holds overlap;
//!   fencing tokens rise).
//! - [`rng`]: the seeded generator behind every random choice.
//! - `error`: the crate's [`Error`].
//!
//! # Invariants
//! - The checkers know nothing of tonic, prost or etcd's types: they take
//!   plain types of their own, which callers fill from the wire, so that
//!   the same check runs against cairn and against etcd.
//! - The same seed gives the same fault schedule.
//! - The runner leaves nothing behind: member processes are killed and its
//!   nft table is deleted on exit, on panic and on SIGINT/SIGTERM.

pub mod checks;
pub mod elle;
mod error;
mod escaped;
pub mod history;
pub mod leases;
pub mod linear;
pub mod locks;
pub mod rng;
pub mod run;
pub mod watch;
pub mod watchers;

pub use error::{Error, Result};
