//! cairn-raft-storage: openraft's log storage, on a write-ahead log of its
//! own, and an MVCC state machine on sled.
//!
//! # Layout
//! - [`typ`]: the openraft type configuration; entries carry etcd's request
//!   messages.
//! - `revision`: revisions and their byte encoding.
//! - `index`: the in-memory key index (generations, tombstones).
//! - `lease`: leases as replicated state (grant, revoke, checkpoint, the
//!   keys each one holds); expiry is the server's, through Raft.
//! - `mvcc`: the [`Store`]: apply, range, compaction, history reads.
//! - `changes`: the [`Observer`] hook that the watch hub hangs on the
//!   store, told of every apply call's events.
//! - `wal`: the Raft log's write-ahead log (segments, `fdatasync`).
//! - `log_store`: [`LogStore`], openraft's log storage on `wal`.
//! - `state_machine`, `snapshot`: [`StateMachine`] and its snapshots.
//! - `storage`: [`open`] a data dir.
//! - `backup`: backups (the Snapshot RPC's stream): take, [`verify`] and
//!   [`restore`], the last two with no server.
//! - `crash`: crash points before and after apply and an append's sync
//!   (feature `failpoints`, test-only; nothing without it).
//!
//! # Invariants
//! - This crate knows nothing of tonic or the network; it sees only the
//!   etcd message types of `cairn-proto` (built without its gRPC feature).
//! - An append or a vote is acknowledged only after its `fdatasync`.
//! - Each `Store::apply` is crash-atomic (a redo record, or a sled batch
//!   when large) and includes the applied log id (the state machine splits
//!   a long call into such parts).
//! - The revision rises by exactly 1 per txn that changes anything.
//! - Apply is deterministic and never reads the clock.
//! - The observer hears of a revision only after reads can see it.
//! - Every change at or above the compact revision stays on disk, so the
//!   history a watcher replays from there has no gaps.
//! - Log purge never outruns what is durable in the state machine.

mod backup;
mod changes;
mod crash;
mod defrag;
mod engine;
mod error;
mod index;
mod lease;
mod log_store;
mod mvcc;
mod revision;
mod snapshot;
mod state_machine;
mod storage;
pub mod typ;
mod wal;

pub use backup::{restore, verify, Backup, BackupInfo};
pub use changes::{Changes, HistoryPage, Observer};
pub use defrag::Defragmented;
pub use error::{ApplyError, Error, Result};
pub use lease::Lease;
pub use log_store::LogStore;
pub use mvcc::{read_only_ranges, Store};
pub use state_machine::StateMachine;
pub use storage::{open, Opened, Options, DEFAULT_CACHE_BYTES};
pub use typ::{Member, NodeId, Raft, Request, Response, SnapshotFile, TypeConfig};
