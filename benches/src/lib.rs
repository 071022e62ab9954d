//! cairn-benches: `cairn-bench`, a load generator for any etcd v3
//! endpoint (the workloads of etcd's benchmark tool), and criterion
//! micro-benches of the hot paths (`benches/`).
//!
//! - [`load`]: connections, keys, pacing and the worker loop.
//! - [`workload`]: put, range, txn-put, txn-mixed, watch, watch-latency,
//!   lease-keepalive.
//! - [`report`]: throughput, histogram and percentiles, as text or JSON.

pub mod load;
pub mod report;
pub mod workload;
