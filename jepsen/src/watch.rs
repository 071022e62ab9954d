//! A validator for etcd v3 watch streams.
//!
//! [`check()`] replays one recorded [`Stream`] (the creates a client sent and
//! every response it received) against a [`History`] (the committed writes,
//! the ground truth) and reports every broken guarantee as a [`Violation`].
//! The same check runs against cairn and against real etcd, so it encodes
//! etcd's behaviour, not ours; and it depends on nothing but plain types of
//! its own, so that the server's tests and the Jepsen harness can both feed
//! it (they convert from their gRPC types).
//!
//! # What is checked, and why
//! A watcher must see exactly the history's changes of its keys, filtered
//! by no_put / no_delete, from its start revision on: etcd's clients resume
//! a watch from the last revision they saw, which is only sound if nothing
//! was skipped, nothing came twice and nothing came out of order.
//!
//! - **Lifecycle.** A watcher's first response is its Created response (the
//!   n-th answers the n-th create; a created-and-canceled one is a failed
//!   create); nothing comes after its cancel.
//! - **Each event** is a change in the history, in the watched range, not
//!   filtered, at or after the start revision (start_revision 0: the
//!   Created header's revision + 1), with the exact kv etcd would send
//!   (key, value, create_revision, mod_revision, version, lease; a DELETE
//!   carries only key and mod_revision) and, if asked for, the key's kv at
//!   the previous revision as prev_kv. etcd may leave prev_kv out when that
//!   revision is compacted, so an omission is excused if the history has a
//!   compaction above it.
//! - **The sequence** follows the history: no gap, no duplicate, no
//!   reordering, in (revision, sub-index) order. Each watcher holds a cursor
//!   over its expected events; a delivered event past the cursor skips the
//!   events between (a [`Violation::Gap`] unless they come later, then a
//!   [`Violation::Reordered`]), and one before it is a
//!   [`Violation::Duplicate`].
//! - **Revisions are atomic.** A response (fragments joined) that delivers
//!   a revision delivers all of that revision's events for the watcher;
//!   several revisions in one response are fine.
//! - **Progress** at revision P (a response with no events that neither
//!   creates nor cancels; watch_id -1 means every watcher on the stream)
//!   promises that every event up to P was delivered, and P is not beyond
//!   the history.
//! - **Compaction cancels** are justified: the watcher still needed a
//!   revision below the compact revision, and the history has a compaction
//!   that high.
//!
//! [`check_complete`] adds that the stream ended with every live watcher up
//! to date through a given revision.
//!
//! # Cost
//! One pass over the responses. Each watcher's cursor merges the per-key
//! lists of its keys (narrow ranges) or scans the log from its start (wide
//! ranges), and each expected event is passed once, so a check costs about
//! the events delivered plus, for each watcher, the history it covers.

mod check;
mod expected;
mod history;
mod range;
mod stream;
mod violation;
pub mod wire;

pub use check::{check, check_complete, Report};
pub use history::{Change, EventKind, History, Kv};
pub use stream::{Event, Response, Stream, WatchSpec};
pub use violation::Violation;
