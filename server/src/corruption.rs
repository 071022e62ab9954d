//! The periodic corruption check (`--experimental-corrupt-check-time`),
//! as etcd's: every interval the leader asks each member for its HashKV at
//! the leader's revision and compares it with its own. A member that
//! answers for the same compact revision with another hash holds other
//! data: the leader raises the CORRUPT alarm for it through Raft, and every
//! member then refuses writes (see `quota`).
//!
//! A member that has not applied the revision yet (FutureRevision), that
//! compacted differently, or that does not answer is skipped this round.

use std::time::Duration;

use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmRequest, AlarmType, HashKvRequest,
};
use cairn_raft_storage::{NodeId, Raft, Request as Proposal, Store};
use tokio::task::JoinHandle;

use crate::peer::{Route, Target};
use crate::propose::Proposer;

/// How long one member may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the check needs.
pub(crate) struct Checker {
    pub(crate) raft: Raft,
    pub(crate) store: Store,
    pub(crate) route: Route,
    pub(crate) proposer: Proposer,
    pub(crate) me: NodeId,
}

/// Starts the check; it runs until aborted.
pub(crate) fn spawn(checker: Checker, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if matches!(checker.route.target(), Target::Here) {
                checker.round().await;
            }
        }
    })
}

impl Checker {
    async fn round(&self) {
        let store = self.store.clone();
        let Ok(Ok((hash, compact, rev))) =
            tokio::task::spawn_blocking(move || store.hash_kv(0)).await
        else {
            return;
        };
        let membership = self.raft.metrics().borrow().membership_config.clone();
        for (id, member) in membership.membership().nodes() {
            if *id == self.me {
                continue;
            }
            let Some(url) = member.client_urls.first() else {
                continue;
            };
            match ask(url, rev).await {
                Some((h, c)) if c == compact && h != hash => {
                    tracing::error!(
                        member = format_args!("{id:x}"),
                        revision = rev,
                        ours = hash,
                        theirs = h,
                        "HashKV mismatch: raising the CORRUPT alarm"
                    );
                    let alarm = AlarmRequest {
                        action: AlarmAction::Activate as i32,
                        member_id: *id,
                        alarm: AlarmType::Corrupt as i32,
                    };
                    if let Err(e) = self.proposer.propose(Proposal::Alarm(alarm)).await {
                        tracing::warn!(error = ?e, "raising the CORRUPT alarm failed");
                    }
                }
                _ => {}
            }
        }
    }
}

/// The member's (hash, compact revision) at `rev`, if it answers.
async fn ask(url: &str, rev: i64) -> Option<(u32, i64)> {
    let call = async {
        let mut client = MaintenanceClient::connect(url.to_owned()).await.ok()?;
        let r = client
            .hash_kv(HashKvRequest { revision: rev })
            .await
            .ok()?
            .into_inner();
        Some((r.hash, r.compact_revision))
    };
    tokio::time::timeout(ASK_TIMEOUT, call).await.ok().flatten()
}
