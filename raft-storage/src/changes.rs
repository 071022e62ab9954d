//! What the store tells the world about its changes: the [`Observer`] hook
//! the watch hub hangs on the store, and the history pages it reads back.
//!
//! The store knows nothing of watchers. It hands every apply call's events
//! to one observer, after they are visible to reads, and answers history
//! reads by revision; the watch hub (in the server) decorates the store
//! with everything else.

use cairn_proto::mvccpb::Event;

/// Told of every change the store makes, in revision order.
///
/// Both calls come from the apply path, one at a time: they must be quick
/// and must never block on a client.
pub trait Observer: Send + Sync {
    /// An apply call's changes, called once they are visible to reads.
    fn applied(&self, changes: Changes);

    /// A snapshot replaced the store's contents: the store is now at
    /// `revision`, compacted at `compact`, and earlier events may be
    /// missing from what was published.
    fn replaced(&self, revision: i64, compact: i64);
}

/// The changes of one apply call.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// Every change, ordered by revision then sub revision. Each event's
    /// `kv.mod_revision` is its revision; a delete's kv holds only `key`
    /// and `mod_revision`.
    pub events: Vec<Event>,
    /// The current revision after the call.
    pub revision: i64,
    /// The compact revision after the call.
    pub compact: i64,
}

/// A page of history read back from the store.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    /// The changes the page covers that the caller's filter kept, in
    /// revision order.
    pub events: Vec<Event>,
    /// The first revision the page did not cover.
    pub next: i64,
}
