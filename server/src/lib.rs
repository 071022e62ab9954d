//! The Cairn node: one member of an etcd-v3-compatible, Raft-replicated
//! key-value store.
//!
//! The server is a library the `cairn` binary wraps: [`Node::start`] takes
//! a [`Config`] (etcd's flags), opens the storage of
//! `cairn-raft-storage`, runs openraft on it and serves etcd's gRPC API;
//! [`Node::shutdown`] stops it and releases the data dir. Tests and embedders
//! start nodes in-process the same way, usually with
//! [`Config::default_for_tests`] on port 0.
//!
//! # Module map
//!
//! - `config`: the flags ([`Config`]), their value types and cross-checks.
//! - `member`: the member and cluster ids, derived at bootstrap and kept in
//!   `<data-dir>/member/id`.
//! - `node`: the wiring function and shutdown ([`Node`]).
//! - `peer`: the peer transport (Cairn's private `cairnpeer` protocol):
//!   openraft's network, the peer service, forwarding to the leader.
//! - `cluster`: membership changes, the Cluster service, and the steward
//!   (pre-vote, publishing, removal, auto promotion).
//! - `maintenance`: the Maintenance service (Status, alarms, hashes,
//!   defragment, snapshots, MoveLeader).
//! - `quota`: the backend quota and the alarms that refuse writes.
//! - `restore`: a backup restored into a new data dir ([`restore`]).
//! - `tracked`: knowing when every storage handle is gone.
//! - `kv`: the KV service.
//! - `concurrency`: the Lock and Election services, on leases, revisions
//!   and internal watchers.
//! - `lease`: the Lease service and the lessor, which expires leases
//!   through Raft on the leader.
//! - `watch`: the Watch service and the watch hub that decorates the store.
//! - `backups`: scheduled backups (`--backup-dir`), written atomically.
//! - `corruption`: the periodic HashKV comparison that raises CORRUPT.
//! - `compactor`: auto compaction, proposed through Raft by the leader.
//! - `validate`: etcd's API-layer request checks, as pure functions.
//! - `propose`: proposing through Raft with the size limit and timeout.
//! - `read_index`: the read barrier for linearizable reads.
//! - `header`: the top-level response header.
//! - `status`: every request error mapped to etcd's gRPC code and message.
//! - `error`: why a node could not start ([`Error`]).
//!
//! # Invariants
//!
//! - **The server is a library the `cairn` binary wraps.** `main.rs` parses
//!   flags, sets up logging and waits for a signal; nothing else.
//! - **Every error is mapped to a `Status` in `status.rs`**, with etcd's
//!   exact code and message; no handler builds a `Status` itself.
//! - **Linearizable reads pass the read barrier before touching the store.**
//!   Only `serializable` ranges read the store directly.
//! - **Every mutating request, and every txn, goes through Raft.** The server
//!   never writes the store itself.
//! - **Headers:** the server fills `cluster_id`, `member_id` and `raft_term`
//!   of the top-level header only; `revision` is the store's.
//! - **A restart on an existing data dir ignores the bootstrap flags.**

#![warn(missing_docs)]

mod backups;
mod cluster;
mod compactor;
mod concurrency;
mod config;
mod corruption;
mod error;
mod header;
mod kv;
mod lease;
mod maintenance;
mod member;
mod node;
mod peer;
mod propose;
mod quota;
mod read_index;
mod restore;
mod status;
mod tracked;
mod validate;
mod watch;

pub use crate::config::{
    AutoCompaction, AutoCompactionMode, ClusterState, Config, ConfigError, DurationError,
    InitialCluster, InitialClusterError, LogLevel, Retention, Scheme, Url, UrlError,
    DEFAULT_LEASE_CHECKPOINT_INTERVAL, DEFAULT_QUOTA_BACKEND_BYTES,
    DEFAULT_SNAPSHOT_CATCHUP_ENTRIES, DEFAULT_SNAPSHOT_COUNT,
    DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL,
};
pub use crate::error::{Error, Result};
pub use crate::member::MemberIds;
pub use crate::node::Node;
pub use crate::restore::restore;
