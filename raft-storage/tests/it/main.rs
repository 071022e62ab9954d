//! cairn-raft-storage's integration tests: openraft's conformance suite,
//! etcd semantics against a model, and crash recovery.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.

mod conformance;
mod crash;
mod model;
mod semantics;
mod support;
