//! Auto compaction (`--auto-compaction-mode`, `--auto-compaction-retention`).
//!
//! The decision is a pure state machine ([`Policy::tick`]) fed with the
//! time and the current revision; a loop task feeds it and proposes the
//! compactions it asks for through Raft, like any client's Compact. Only the
//! leader proposes; a follower's samples are kept so it is ready if it
//! becomes leader.
//!
//! As etcd:
//! - **revision mode** keeps the last `retention` revisions: every 5 minutes
//!   it compacts at `current - retention`, if that moved;
//! - **periodic mode** keeps `retention` of time: it samples the revision
//!   every tenth of min(retention, 1 h), and at most once per
//!   min(retention, 1 h) compacts at the newest revision that is at least
//!   `retention` old.
//!
//! The first look comes one interval after start.

use std::collections::VecDeque;
use std::time::Duration;

use cairn_proto::etcdserverpb::CompactionRequest;
use cairn_raft_storage::{ApplyError, Raft, Request, Store};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::AutoCompaction;
use crate::propose::Proposer;
use crate::status::RequestError;

/// How often revision mode looks (etcd's fixed 5 minutes).
const REVISION_CHECK: Duration = Duration::from_secs(300);

/// The compaction decisions, free of clocks and IO.
#[derive(Debug)]
pub(crate) struct Policy {
    mode: AutoCompaction,
    /// Periodic mode: (when, revision) samples, oldest first.
    samples: VecDeque<(Instant, i64)>,
    /// The last revision compacted at (or asked for).
    last: i64,
    /// When that was; periodic mode compacts at most once per
    /// min(window, 1 h), as etcd.
    last_at: Option<Instant>,
}

impl Policy {
    pub(crate) fn new(mode: AutoCompaction) -> Self {
        Policy {
            mode,
            samples: VecDeque::new(),
            last: 0,
            last_at: None,
        }
    }

    /// How long to wait between ticks.
    pub(crate) fn interval(&self) -> Duration {
        match self.mode {
            AutoCompaction::Revision(_) => REVISION_CHECK,
            AutoCompaction::Periodic(p) => {
                (p.min(Duration::from_secs(3600)) / 10).max(Duration::from_millis(100))
            }
        }
    }

    /// Takes a look at `now`, with the store at `current`; returns the
    /// revision to compact at, if any. Only a leader compacts, but every
    /// member keeps sampling, so a new leader can start at once.
    pub(crate) fn tick(&mut self, now: Instant, current: i64, is_leader: bool) -> Option<i64> {
        let target = match self.mode {
            AutoCompaction::Revision(keep) => current - i64::try_from(keep).unwrap_or(i64::MAX),
            AutoCompaction::Periodic(window) => {
                self.samples.push_back((now, current));
                // The newest sample at least `window` old is the target; the
                // ones before it are no longer needed.
                let old_enough = self
                    .samples
                    .iter()
                    .rposition(|(t, _)| now.duration_since(*t) >= window)?;
                self.samples.drain(..old_enough);
                let every = window.min(Duration::from_secs(3600));
                if self.last_at.is_some_and(|t| now.duration_since(t) < every) {
                    return None;
                }
                self.samples[0].1
            }
        };
        if !is_leader || target <= self.last || target <= 0 {
            return None;
        }
        self.last = target;
        self.last_at = Some(now);
        Some(target)
    }
}

/// Starts the loop task; it ends when the node's Raft shuts down.
pub(crate) fn spawn(
    mode: AutoCompaction,
    raft: Raft,
    store: Store,
    proposer: Proposer,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut policy = Policy::new(mode);
        // The first look is one interval in, as etcd's.
        let every = policy.interval();
        let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut metrics = raft.metrics();
        loop {
            ticks.tick().await;
            if metrics.has_changed().is_err() {
                return; // Raft stopped.
            }
            let is_leader = {
                let m = metrics.borrow_and_update();
                m.current_leader == Some(m.id)
            };
            let Some(rev) = policy.tick(Instant::now(), store.revision(), is_leader) else {
                continue;
            };
            let req = CompactionRequest {
                revision: rev,
                physical: false,
            };
            match proposer.propose(Request::Compaction(req)).await {
                Ok(_) => tracing::info!(revision = rev, "auto compaction"),
                // Someone compacted further already: nothing to do.
                Err(RequestError::Apply(ApplyError::Compacted)) => {}
                Err(e) => tracing::warn!(revision = rev, error = ?e, "auto compaction failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_mode_keeps_the_last_n() {
        let t = Instant::now();
        let mut p = Policy::new(AutoCompaction::Revision(10));
        let table = [
            (5, None),
            (10, None),
            (11, Some(1)),
            (11, None),
            (30, Some(20)),
            (25, None),
        ];
        for (current, want) in table {
            assert_eq!(p.tick(t, current, true), want, "at revision {current}");
        }
    }

    #[test]
    fn periodic_mode_compacts_what_is_a_window_old() {
        let t0 = Instant::now();
        let min = Duration::from_secs(60);
        let mut p = Policy::new(AutoCompaction::Periodic(10 * min));
        assert_eq!(p.interval(), min);
        // (minutes since start, current revision, expected compaction)
        let table = [
            (0, 100, None),
            (5, 150, None),
            (9, 190, None),
            (10, 200, Some(100)),
            (11, 210, None),
            // Due (150 is 10 minutes old), but the last compaction was only
            // 5 minutes ago: etcd compacts once per window (capped at 1 h).
            (15, 260, None),
            (40, 300, Some(260)),
        ];
        for (m, current, want) in table {
            assert_eq!(p.tick(t0 + m * min, current, true), want, "at minute {m}");
        }
    }

    #[test]
    fn only_a_leader_compacts_and_a_new_one_starts_at_once() {
        let t = Instant::now();
        let mut p = Policy::new(AutoCompaction::Revision(10));
        assert_eq!(p.tick(t, 50, false), None);
        assert_eq!(p.tick(t, 60, true), Some(50));
    }

    #[test]
    fn periodic_sampling_pace_is_capped() {
        let p = Policy::new(AutoCompaction::Periodic(Duration::from_secs(48 * 3600)));
        assert_eq!(p.interval(), Duration::from_secs(360));
    }
}
