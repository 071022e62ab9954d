//! cairn-client: an async Rust client for Cairn and any etcd v3 endpoint.
//!
//! It speaks only etcd's v3 gRPC API (`cairn-proto`), so it works the same
//! against Cairn and etcd, and knows nothing of openraft or sled.
//!
//! ```no_run
//! # async fn run() -> cairn_client::Result<()> {
//! use cairn_client::{Client, Compare, CompareOp, ConnectOptions, Get, Put, Txn, WatchOptions};
//! use futures::StreamExt;
//!
//! let client = Client::connect(["127.0.0.1:2379"], ConnectOptions::default()).await?;
//! let put = client.put(Put::new("config/mode", "fast")).await?;
//! let got = client.get(Get::prefix("config/")).await?;
//! assert_eq!(got.kvs.len(), 1);
//!
//! // Compare-and-swap: only if nobody changed it since.
//! let swapped = client
//!     .txn(
//!         Txn::new()
//!             .when([Compare::mod_revision("config/mode", CompareOp::Equal, put.header.revision)])
//!             .and_then([Put::new("config/mode", "safe").into()]),
//!     )
//!     .await?;
//! assert!(swapped.succeeded);
//!
//! let mut watcher = client.watch(WatchOptions::prefix("config/")).await?;
//! while let Some(response) = watcher.next().await {
//!     for event in response?.events {
//!         println!("{:?} {:?}", event.kind, event.kv.key_str());
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - `client`: [`Client`], connecting, and the KV calls (get, put, delete,
//!   txn, compact, [`Client::get_pages`]).
//! - `transport`: endpoints, round-robin balancing, failover and **the
//!   retry policy** (below).
//! - `kv`, `txn`: the request builders ([`Get`], [`Put`], [`Delete`],
//!   [`Txn`], [`Compare`]) and responses.
//! - `watch`: [`Watcher`]s multiplexed on one stream that resumes after
//!   failures.
//! - `lease`: leases and [`LeaseKeepAlive`].
//! - `cluster`: membership and [`Maintenance`].
//! - `concurrency`: [`Session`], locks and elections.
//! - `error`: [`Error`], parsed from gRPC statuses in one place.
//! - `types`: [`Revision`], [`LeaseId`], [`MemberId`], [`KeyValue`],
//!   [`Event`], [`ResponseHeader`].
//!
//! # The retry policy
//!
//! - **Reads** (Get, read-only Txn, TimeToLive, MemberList, Status…) are
//!   retried on another endpoint while they fail with Unavailable, until
//!   the request timeout.
//! - **Writes** (Put, Delete, Txn that writes, Compact, lease and member
//!   changes) are sent again only when the attempt provably never reached a
//!   server: the connection could not be made, HTTP/2 refused the stream,
//!   or the member refused it before processing ("no leader", "leader
//!   changed", "too many requests", a learner).
//! - **A Txn is never retried blindly** (etcd #18424): one that writes is a
//!   write.
//! - **An unknown outcome is its own error**, [`Error::Ambiguous`]: the
//!   write may or may not have been applied; read before retrying.
//!
//! # Invariants
//!
//! - Each gRPC status becomes an [`Error`] in `error.rs` only.
//! - A write is never sent twice unless the first attempt provably did not
//!   reach a server.
//! - A watcher never yields an event twice, nor events out of revision
//!   order, across any number of reconnects.
//! - No lock is held across an `.await`.

#![warn(missing_docs)]

mod client;
mod cluster;
mod concurrency;
mod error;
mod kv;
mod lease;
mod options;
mod transport;
mod txn;
mod types;
mod watch;

pub use crate::client::Client;
pub use crate::cluster::{
    Alarm, AlarmKind, HashKv, Maintenance, Member, MemberAddResponse, MemberListResponse, Status,
};
pub use crate::concurrency::{LeaderKey, LockKey, Session};
pub use crate::error::{Error, Result};
pub use crate::kv::{
    CompactResponse, Delete, DeleteResponse, Get, GetResponse, Put, PutResponse, SortOrder,
    SortTarget,
};
pub use crate::lease::{
    KeepAliveState, LeaseGrantResponse, LeaseKeepAlive, LeaseLost, LeaseTimeToLive,
};
pub use crate::options::ConnectOptions;
pub use crate::txn::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse, TxnResponse};
pub use crate::types::{Event, EventKind, KeyValue, LeaseId, MemberId, ResponseHeader, Revision};
pub use crate::watch::{WatchOptions, WatchResponse, Watcher};
