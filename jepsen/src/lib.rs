//! cairn-jepsen: consistency checkers for Cairn, and later the
//! fault-injection harness that drives them.
//!
//! # Layout
//! - [`watch`]: checks a recorded watch stream against the history of
//!   committed writes (order, gaps, duplicates, atomic revisions, filters,
//!   prev_kv, progress and compaction promises).
//! - `error`: the crate's [`Error`].
//!
//! # Invariants
//! - The checkers know nothing of tonic, prost or etcd's types: they take
//!   plain types of their own, which callers fill from the wire, so that
//!   the same check runs against cairn and against etcd.

mod error;
mod escaped;
pub mod watch;

pub use error::{Error, Result};
