//! The read barrier: linearizable reads pass it before touching the store.
//!
//! Passing it means "this member was leader, and its state machine had
//! applied everything committed, at some instant after the read arrived".
//! openraft's `ensure_linearizable` establishes that with one round of
//! heartbeats to a quorum, so concurrent reads share one call: a single loop
//! task takes every waiter queued so far, confirms once, and wakes them all.
//!
//! A read that arrives while a confirmation is in flight waits for the next
//! round, never the current one: the round in flight may have started (and
//! its leadership check been answered) before the read arrived, and would
//! then not prove anything about it.

use std::time::Duration;

use cairn_raft_storage::{NodeId, Raft};
use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::BasicNode;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Why a read could not pass the barrier.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ReadError {
    /// openraft refused: not leader, no quorum, or stopped.
    #[error(transparent)]
    Raft(#[from] RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>),
    /// No round finished within the request timeout.
    #[error("read barrier timed out")]
    Timeout,
    /// The barrier's loop is gone: the node is shutting down.
    #[error("read barrier stopped")]
    Stopped,
}

type Waiter = oneshot::Sender<Result<(), ReadError>>;

/// A handle on the read barrier; cheap to clone. The loop task ends when the
/// last handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct ReadBarrier {
    waiters: mpsc::UnboundedSender<Waiter>,
    timeout: Duration,
}

impl ReadBarrier {
    /// Starts the loop task. Each round, and each wait, gives up after
    /// `timeout`.
    pub(crate) fn spawn(raft: Raft, timeout: Duration) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(raft, rx, timeout));
        (
            ReadBarrier {
                waiters: tx,
                timeout,
            },
            task,
        )
    }

    /// Waits until a leadership confirmation that started after this call
    /// has succeeded and the state machine has caught up with it.
    ///
    /// # Errors
    ///
    /// [`ReadError`] when this member cannot confirm it is leader in time.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped waiter is skipped by the loop.
    pub(crate) async fn wait(&self) -> Result<(), ReadError> {
        let (tx, rx) = oneshot::channel();
        self.waiters.send(tx).map_err(|_| ReadError::Stopped)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ReadError::Stopped),
            Err(_) => Err(ReadError::Timeout),
        }
    }
}

async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<Waiter>, timeout: Duration) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        // Everything queued now arrived before this round starts, so one
        // confirmation serves them all.
        batch.push(first);
        while let Ok(next) = rx.try_recv() {
            batch.push(next);
        }
        batch.retain(|w: &Waiter| !w.is_closed());
        if batch.is_empty() {
            continue;
        }
        let result = match tokio::time::timeout(timeout, raft.ensure_linearizable()).await {
            Ok(Ok(_read_log_id)) => Ok(()),
            Ok(Err(e)) => Err(ReadError::Raft(e)),
            Err(_) => Err(ReadError::Timeout),
        };
        for waiter in batch.drain(..) {
            // A waiter that gave up is no error.
            let _ = waiter.send(result.clone());
        }
    }
}
