//! The steward: one loop per member, once a heartbeat interval, that keeps
//! the member's place in the cluster.
//!
//! - **Pre-vote.** openraft 0.9 has no pre-vote: a member cut off from the
//!   others raises its term at every election timeout, and when it returns
//!   its higher term deposes a healthy leader. So elections are switched
//!   off while a leader is heard from, and switched on only after a quorum
//!   of voters answered a pre-vote: they have not heard from a leader for an
//!   election timeout either, and the candidate's log is as long as theirs.
//!   A member that cannot reach a quorum never campaigns, so its term stays.
//! - **Publishing.** A member added by MemberAdd, or bootstrapped from
//!   `--initial-cluster`, is recorded without a name or client URLs; it
//!   publishes them through the leader once there is one.
//! - **Removal.** Once the committed membership no longer holds this
//!   member, it reports itself removed, and the binary exits as etcd does.
//! - **Auto promotion** (opt-in): the leader promotes learners once they
//!   have caught up.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cairn_raft_storage::{Member, NodeId, Raft};
use futures::future::join_all;
use openraft::ServerState;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{MemberChange, Membership};
use crate::peer::{decode, Contact, Peers, PreVote, PreVoteReply};

/// What the steward needs to know of its member.
#[derive(Debug, Clone)]
pub(crate) struct StewardConfig {
    pub(crate) me: NodeId,
    pub(crate) name: String,
    pub(crate) client_urls: Vec<String>,
    pub(crate) heartbeat: Duration,
    pub(crate) election_timeout: Duration,
    pub(crate) auto_promote: bool,
}

/// The running steward.
#[derive(Debug)]
pub(crate) struct Steward {
    pub(crate) task: JoinHandle<()>,
    /// Becomes true once this member has been removed from the cluster.
    pub(crate) removed: watch::Receiver<bool>,
    /// Becomes true once the membership records this member's name and
    /// client URLs: it is then ready to serve clients, as etcd's members
    /// are once they have published themselves.
    pub(crate) published: watch::Receiver<bool>,
}

impl Steward {
    pub(crate) fn spawn(
        raft: Raft,
        membership: Arc<Membership>,
        peers: Arc<Peers>,
        contact: Arc<Contact>,
        config: StewardConfig,
    ) -> Steward {
        let (removed_tx, removed) = watch::channel(false);
        let (published_tx, published) = watch::channel(false);
        let signals = Signals {
            removed: removed_tx,
            published: published_tx,
        };
        let task = tokio::spawn(run(raft, membership, peers, contact, config, signals));
        Steward {
            task,
            removed,
            published,
        }
    }
}

struct Signals {
    removed: watch::Sender<bool>,
    published: watch::Sender<bool>,
}

async fn run(
    raft: Raft,
    membership: Arc<Membership>,
    peers: Arc<Peers>,
    contact: Arc<Contact>,
    config: StewardConfig,
    signals: Signals,
) {
    let removed = signals.removed;
    let mut tick = tokio::time::interval(config.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_member = false;
    let mut published = false;
    loop {
        tick.tick().await;
        let me = config.me;
        let Ok(committed) = raft
            .with_raft_state(move |st| st.membership_state.committed().get_node(&me).is_some())
            .await
        else {
            return;
        };
        if committed {
            was_member = true;
        } else if was_member {
            tracing::warn!("this member has been permanently removed from the cluster");
            let _ = removed.send(true);
            return;
        }
        let metrics = raft.metrics().borrow().clone();
        let config_now = metrics.membership_config.membership().clone();
        let joint: Vec<BTreeSet<NodeId>> = config_now.get_joint_config().clone();
        let voter = joint.iter().any(|c| c.contains(&me));
        let alone = joint.iter().all(|c| c.len() == 1) && voter;

        if metrics.state != ServerState::Leader && !alone {
            let elect = if contact.recent(config.election_timeout) {
                false
            } else {
                let round = pre_vote(
                    &raft,
                    &peers,
                    &config_now,
                    &joint,
                    me,
                    config.election_timeout,
                )
                .await;
                if round.removed && was_member {
                    tracing::warn!("this member has been permanently removed from the cluster");
                    let _ = removed.send(true);
                    return;
                }
                round.won
            };
            raft.runtime_config().elect(voter && elect);
        } else if alone {
            raft.runtime_config().elect(true);
        }

        if !published && metrics.current_leader.is_some() {
            match config_now.get_node(&me) {
                Some(m) if m.name == config.name && m.client_urls == config.client_urls => {
                    published = true;
                    let _ = signals.published.send(true);
                }
                Some(_) => {
                    let change = MemberChange::Publish {
                        id: me,
                        name: config.name.clone(),
                        client_urls: config.client_urls.clone(),
                    };
                    match membership.change(change).await {
                        Ok(_) => {
                            tracing::info!(name = %config.name, "published this member's name and client URLs");
                            published = true;
                            let _ = signals.published.send(true);
                        }
                        Err(e) => tracing::debug!(error = ?e, "publishing failed; will retry"),
                    }
                }
                None => {}
            }
        }

        if metrics.current_leader == Some(me) {
            for id in membership.take_caught_up() {
                if let Err(e) = membership.change_here(MemberChange::Promote(id)).await {
                    tracing::warn!(member = format_args!("{id:x}"), error = ?e, "promoting an added voter failed");
                }
            }
        }

        if config.auto_promote && metrics.current_leader == Some(me) {
            let learners: Vec<NodeId> = config_now.learner_ids().collect();
            for id in learners {
                if membership.caught_up(id) {
                    match membership.change_here(MemberChange::Promote(id)).await {
                        Ok(_) => tracing::info!(
                            member = format_args!("{id:x}"),
                            "promoted a learner that caught up"
                        ),
                        Err(e) => tracing::debug!(error = ?e, "auto promotion failed"),
                    }
                }
            }
        }
    }
}

/// The outcome of a pre-vote round.
struct Round {
    /// In every config of a joint membership, a majority (this member
    /// included) would vote for it.
    won: bool,
    /// A member said this one was removed.
    removed: bool,
}

/// Asks every other voter whether it would vote for this member now.
async fn pre_vote(
    raft: &Raft,
    peers: &Peers,
    membership: &openraft::Membership<NodeId, Member>,
    joint: &[BTreeSet<NodeId>],
    me: NodeId,
    election_timeout: Duration,
) -> Round {
    let request = PreVote {
        last_log_id: raft.data_metrics().borrow().last_log,
    };
    let voters: BTreeSet<NodeId> = joint
        .iter()
        .flatten()
        .copied()
        .filter(|v| *v != me)
        .collect();
    let asks = voters.into_iter().map(|id| {
        let envelope = peers.envelope(&request);
        let node = membership.get_node(&id).cloned().unwrap_or_default();
        async move {
            let Ok(mut client) = peers.client(id, &node.peer_urls) else {
                return (id, PreVoteReply::default());
            };
            let mut call = tonic::Request::new(envelope);
            call.set_timeout(election_timeout / 2);
            let answer = match client.pre_vote(call).await {
                Ok(reply) => decode(id, &reply.into_inner()).unwrap_or_default(),
                Err(_) => PreVoteReply::default(),
            };
            (id, answer)
        }
    });
    let answers = join_all(asks).await;
    let removed = answers.iter().any(|(_, a)| a.removed);
    let mut granted: BTreeSet<NodeId> = answers
        .into_iter()
        .filter(|(_, a)| a.granted)
        .map(|(id, _)| id)
        .collect();
    granted.insert(me);
    let won = joint
        .iter()
        .all(|c| c.iter().filter(|id| granted.contains(id)).count() > c.len() / 2);
    Round { won, removed }
}
