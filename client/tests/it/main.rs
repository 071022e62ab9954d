//! Integration tests: every scenario runs against a Cairn cluster
//! (in-process members) and against real etcd 3.4 (processes), through the
//! public API only. See `support` for the clusters.

mod cluster;
mod concurrency;
mod failover;
mod kv;
mod lease;
mod support;
mod watch;
