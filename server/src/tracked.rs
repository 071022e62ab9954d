//! Knowing when the storage is closed, so that a node can be started again
//! on the same data dir in the same process.
//!
//! sled holds a lock on its directory until the last handle on it is
//! dropped. After `Raft::shutdown` returns, the log store is gone (it lived
//! in the raft core task), but the state machine lives in openraft's state
//! machine worker task, which quits on its own a moment later, and the gRPC
//! services hold read handles until their connections close. Each of those
//! holders keeps a [`Tracker`]; [`Released::wait`] resolves once all of them
//! have been dropped. This is mini-redis's shutdown pattern: wait until every
//! sender of a channel is gone.

use cairn_raft_storage::{NodeId, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{LogId, OptionalSend, Snapshot, SnapshotMeta, StorageError, StoredMembership};
use tokio::sync::mpsc;

/// Held by everything that keeps a handle on the storage. Never sends.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    _tx: mpsc::Sender<()>,
}

/// Resolves once every [`Tracker`] is dropped.
#[derive(Debug)]
pub(crate) struct Released {
    rx: mpsc::Receiver<()>,
}

/// A tracker and the handle that waits for all its clones to go.
pub(crate) fn tracker() -> (Tracker, Released) {
    let (tx, rx) = mpsc::channel(1);
    (Tracker { _tx: tx }, Released { rx })
}

impl Released {
    /// Waits until every [`Tracker`] clone has been dropped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is lost if the future is dropped.
    pub(crate) async fn wait(&mut self) {
        // No tracker ever sends, so `recv` only returns once all senders are
        // gone.
        while self.rx.recv().await.is_some() {}
    }
}

/// A state machine that holds a [`Tracker`] for as long as it lives, and
/// otherwise does exactly what the wrapped one does.
pub(crate) struct TrackedStateMachine<S> {
    inner: S,
    _tracker: Tracker,
}

impl<S> TrackedStateMachine<S> {
    pub(crate) fn new(inner: S, tracker: Tracker) -> Self {
        TrackedStateMachine {
            inner,
            _tracker: tracker,
        }
    }
}

impl<S: RaftStateMachine<TypeConfig>> RaftStateMachine<TypeConfig> for TrackedStateMachine<S> {
    type SnapshotBuilder = S::SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, cairn_raft_storage::Member>,
        ),
        StorageError<NodeId>,
    > {
        self.inner.applied_state().await
    }

    async fn apply<I>(
        &mut self,
        entries: I,
    ) -> Result<Vec<cairn_raft_storage::Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.inner.apply(entries).await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.inner.get_snapshot_builder().await
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<cairn_raft_storage::SnapshotFile>, StorageError<NodeId>> {
        self.inner.begin_receiving_snapshot().await
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, cairn_raft_storage::Member>,
        snapshot: Box<cairn_raft_storage::SnapshotFile>,
    ) -> Result<(), StorageError<NodeId>> {
        self.inner.install_snapshot(meta, snapshot).await
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        self.inner.get_current_snapshot().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn released_after_last_clone_drops() {
        let (tracker, mut released) = tracker();
        let clone = tracker.clone();
        drop(tracker);
        let waiter = tokio::spawn(async move { released.wait().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(clone);
        waiter.await.expect("waiter does not panic");
    }
}
