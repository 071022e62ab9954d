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
//!
//! A leader that is its cluster's only voter skips the barrier
//! ([`Route::reads_alone`]): nobody else can commit, and what it
//! acknowledged it has applied.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cairn_raft_storage::{Member, NodeId};
use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::peer::{Answer, ForwardError, Forwarded, LinearizableError, Route, Target};

/// Why a read could not pass the barrier.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ReadError {
    /// openraft refused: not leader, no quorum, or stopped. Boxed: it is
    /// large, and cloned once per waiter.
    #[error(transparent)]
    Raft(Box<RaftError<NodeId, CheckIsLeaderError<NodeId, Member>>>),
    /// No round finished within the request timeout.
    #[error("read barrier timed out")]
    Timeout,
    /// The barrier's loop is gone: the node is shutting down.
    #[error("read barrier stopped")]
    Stopped,
    /// A learner serves serializable reads only.
    #[error("rpc not supported for learner")]
    Learner,
    /// A follower could not get the read index from the leader.
    #[error(transparent)]
    Forward(Arc<ForwardError>),
}

type Waiter = oneshot::Sender<Result<(), ReadError>>;

/// A handle on the read barrier; cheap to clone. The loop task ends when the
/// last handle is dropped.
#[derive(Clone)]
pub(crate) struct ReadBarrier {
    waiters: mpsc::UnboundedSender<Waiter>,
    timeout: Duration,
    /// True when a read needs no round at all.
    alone: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl ReadBarrier {
    /// Starts the loop task. Each round, and each wait, gives up after
    /// `timeout`.
    ///
    /// On the leader a round is [`Route::linearizable`]. On a
    /// follower it asks the leader for its read index, then waits until
    /// this member has applied that far.
    pub(crate) fn spawn(route: Route, timeout: Duration) -> (Self, JoinHandle<()>) {
        let alone = {
            let route = route.clone();
            move || route.reads_alone()
        };
        Self::spawn_with(timeout, alone, move || {
            let route = route.clone();
            async move { confirm(&route).await }
        })
    }

    /// Starts the loop task with `confirm` as one round of confirmation;
    /// no read waits for one while `alone` says so.
    fn spawn_with<F, Fut>(
        timeout: Duration,
        alone: impl Fn() -> bool + Send + Sync + 'static,
        confirm: F,
    ) -> (Self, JoinHandle<()>)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), ReadError>> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(confirm, rx, timeout));
        (
            ReadBarrier {
                waiters: tx,
                timeout,
                alone: Arc::new(alone),
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
        if (self.alone)() {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.send(tx).map_err(|_| ReadError::Stopped)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ReadError::Stopped),
            Err(_) => Err(ReadError::Timeout),
        }
    }
}

async fn confirm(route: &Route) -> Result<(), ReadError> {
    let forward = |e: ForwardError| ReadError::Forward(Arc::new(e));
    if route.learner() {
        return Err(ReadError::Learner);
    }
    // Test-only: a follower (or a member that knows no leader) serves a
    // "linearizable" read from whatever it has applied, without the read
    // index. The Jepsen harness must catch the stale reads this gives
    // (docs/jepsen.md); never build a release with it.
    #[cfg(feature = "stale-reads")]
    if !matches!(route.target(), Target::Here) {
        return Ok(());
    }
    match route.target() {
        Target::Here => match route.linearizable().await {
            Ok(_read_index) => Ok(()),
            Err(LinearizableError::Raft(e)) => Err(ReadError::Raft(e)),
            Err(LinearizableError::Behind) => Err(ReadError::Timeout),
        },
        Target::There(id, leader) => {
            match route.forward(id, &leader, &Forwarded::ReadIndex).await {
                Ok(Answer::ReadIndex(index)) => route.applied(index).await.map_err(forward),
                Ok(_) => Err(forward(ForwardError::Mismatch)),
                Err(e) => Err(forward(e)),
            }
        }
        Target::Nobody => Err(forward(ForwardError::NoLeader)),
    }
}

async fn run<F, Fut>(mut confirm: F, mut rx: mpsc::UnboundedReceiver<Waiter>, timeout: Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), ReadError>>,
{
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
        let result = tokio::time::timeout(timeout, confirm())
            .await
            .unwrap_or(Err(ReadError::Timeout));
        for waiter in batch.drain(..) {
            // A waiter that gave up is no error.
            let _ = waiter.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::sync::Semaphore;

    use super::*;

    type Round = futures::future::BoxFuture<'static, Result<(), ReadError>>;

    /// A confirmation that counts its rounds and only finishes when the test
    /// adds a permit.
    fn gated() -> (Arc<AtomicUsize>, Arc<Semaphore>, impl FnMut() -> Round) {
        let rounds = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Semaphore::new(0));
        let (r, g) = (rounds.clone(), gate.clone());
        let confirm = move || {
            let (r, g) = (r.clone(), g.clone());
            let fut: Round = Box::pin(async move {
                r.fetch_add(1, Ordering::SeqCst);
                g.acquire().await.map_err(|_| ReadError::Stopped)?.forget();
                Ok(())
            });
            fut
        };
        (rounds, gate, confirm)
    }

    async fn until(rounds: &AtomicUsize, n: usize) {
        while rounds.load(Ordering::SeqCst) < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn queued_reads_share_a_round_and_late_reads_wait_for_the_next() {
        let (rounds, gate, confirm) = gated();
        let (barrier, _task) = ReadBarrier::spawn_with(Duration::from_secs(60), || false, confirm);

        // The first read starts round 1.
        let first = tokio::spawn({
            let b = barrier.clone();
            async move { b.wait().await }
        });
        until(&rounds, 1).await;

        // These arrive while round 1 is in flight: they must not be answered
        // by it.
        let late: Vec<_> = (0..5)
            .map(|_| {
                let b = barrier.clone();
                tokio::spawn(async move { b.wait().await })
            })
            .collect();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(1);
        first.await.expect("no panic").expect("round 1 succeeds");
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            late.iter().all(|h| !h.is_finished()),
            "late reads waited for round 2"
        );

        // One more round answers all five.
        until(&rounds, 2).await;
        gate.add_permits(1);
        for h in late {
            h.await.expect("no panic").expect("round 2 succeeds");
        }
        assert_eq!(rounds.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_sole_voter_reads_without_a_round_and_others_with_one() {
        let (rounds, gate, confirm) = gated();
        let alone = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let is_alone = alone.clone();
        let (barrier, _task) = ReadBarrier::spawn_with(
            Duration::from_secs(60),
            move || is_alone.load(Ordering::SeqCst),
            confirm,
        );
        barrier.wait().await.expect("no round needed");
        assert_eq!(rounds.load(Ordering::SeqCst), 0);

        // A second voter (say): the next read waits for a round again.
        alone.store(false, Ordering::SeqCst);
        let read = tokio::spawn({
            let b = barrier.clone();
            async move { b.wait().await }
        });
        until(&rounds, 1).await;
        assert!(!read.is_finished());
        gate.add_permits(1);
        read.await.expect("no panic").expect("the round succeeds");
    }

    #[tokio::test]
    async fn errors_reach_every_waiter() {
        let (barrier, _task) = ReadBarrier::spawn_with(
            Duration::from_secs(60),
            || false,
            || async { Err(ReadError::Stopped) },
        );
        let results = futures::future::join_all((0..3).map(|_| barrier.wait())).await;
        assert!(results.iter().all(|r| matches!(r, Err(ReadError::Stopped))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_round_times_out() {
        let (barrier, _task) = ReadBarrier::spawn_with(
            Duration::from_millis(100),
            || false,
            futures::future::pending::<Result<(), ReadError>>,
        );
        assert!(matches!(barrier.wait().await, Err(ReadError::Timeout)));
    }
}
