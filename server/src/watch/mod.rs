//! Watch: etcd's watch streams, decorating the MVCC store.
//!
//! - `group`: watch spans and the index of watchers by span.
//! - `hub`: the [`Hub`]: synced and unsynced watchers, publishing from the
//!   store's observer hook, catch-up from history, progress.
//! - `service`: the gRPC Watch service over the hub.

mod group;
mod hub;
mod service;

pub(crate) use hub::{Hub, Out, Spec, StreamId};
pub(crate) use service::WatchService;
