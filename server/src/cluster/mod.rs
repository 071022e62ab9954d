//! Membership: the Cluster service, the leader's membership changes, and
//! the steward that keeps each member's place in the cluster.
//!
//! - `mod.rs`: [`Membership`], the membership changes etcd offers
//!   (add, remove, update, promote) with etcd's checks, done by the leader
//!   and forwarded there by followers; and the member list.
//! - `service`: the etcd `Cluster` gRPC service on top of it.
//! - `steward`: a per-member loop for pre-vote, publishing this member's
//!   name and client URLs, noticing its own removal, and promoting learners
//!   that caught up (opt-in).
//!
//! openraft holds the membership: each member's [`Member`] record travels
//! with the membership config, so every member knows every other's URLs.

mod service;
mod steward;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_raft_storage::{Member, NodeId, Raft};
use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub(crate) use self::service::ClusterService;
pub(crate) use self::steward::{Steward, StewardConfig};
use crate::member::{self, MemberIds};
use crate::peer::{Answer, ForwardError, Forwarded, Route, Target};
use crate::status::RequestError;

/// etcd's `--experimental-max-learners` default.
const MAX_LEARNERS: usize = 1;
/// A learner may be promoted once it has this share of the leader's log
/// (etcd's `readyPercent`).
const READY_PERCENT: f64 = 0.9;
/// `--strict-reconfig-check` wants the voters connected to the leader for
/// this long (etcd's `HealthInterval`).
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// A membership change, as a follower forwards it to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MemberChange {
    /// MemberAdd.
    Add {
        /// Its peer URLs.
        peer_urls: Vec<String>,
        /// Whether it joins as a learner.
        learner: bool,
    },
    /// MemberRemove.
    Remove(NodeId),
    /// MemberUpdate: new peer URLs.
    Update {
        /// The member.
        id: NodeId,
        /// Its new peer URLs.
        peer_urls: Vec<String>,
    },
    /// MemberPromote.
    Promote(NodeId),
    /// A member publishing its name and client URLs once it runs.
    Publish {
        /// The member.
        id: NodeId,
        /// Its name.
        name: String,
        /// Its client URLs.
        client_urls: Vec<String>,
    },
}

/// One member as etcd's member list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Listed {
    pub(crate) id: NodeId,
    pub(crate) member: Member,
    pub(crate) learner: bool,
}

/// The outcome of a change: the member it concerned, and the list after.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MemberChanged {
    pub(crate) member: Option<Listed>,
    pub(crate) members: Vec<Listed>,
}

/// Why a membership change (or a leader transfer) was refused, in etcd's
/// terms.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ClusterError {
    #[error("member ID already exist")]
    MemberExists,
    #[error("Peer URLs already exists")]
    PeerUrlExists,
    #[error("re-configuration failed due to not enough started members")]
    NotEnoughStarted,
    #[error("unhealthy cluster")]
    Unhealthy,
    #[error("given member URLs are invalid")]
    BadUrls,
    #[error("member not found")]
    MemberNotFound,
    #[error("can only promote a learner member")]
    NotLearner,
    #[error("can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("too many learner members in cluster")]
    TooManyLearners,
    #[error("not leader")]
    NotLeader,
    #[error("bad leader transferee")]
    BadTransferee,
    #[error("leader changed")]
    LeaderChanged,
    #[error("raft: {0}")]
    Raft(String),
}

/// What adding a voter leaves.
#[derive(Debug, PartialEq, Eq)]
enum Quorum {
    /// The started voters still make a quorum.
    Kept,
    /// A lone voter takes a second: as etcd, always allowed (it is how a
    /// cluster grows back after --force-new-cluster).
    Lone,
}

/// Since when the leader's replication to each member has gone through
/// without a transport error (etcd's `ActiveSince`), as the peer transport
/// saw it.
#[derive(Debug, Default)]
pub(crate) struct Connected {
    since: Mutex<BTreeMap<NodeId, Instant>>,
}

impl Connected {
    /// A call to `id` went through.
    pub(crate) fn up(&self, id: NodeId) {
        self.since.lock().entry(id).or_insert_with(Instant::now);
    }

    /// A call to `id` failed in the transport.
    pub(crate) fn down(&self, id: NodeId) {
        self.since.lock().remove(&id);
    }

    /// Whether `id` is connected now.
    fn now(&self, id: NodeId) -> bool {
        self.since.lock().contains_key(&id)
    }

    /// Whether `id` has been connected for [`HEALTH_INTERVAL`].
    fn healthy(&self, id: NodeId) -> bool {
        self.since
            .lock()
            .get(&id)
            .is_some_and(|t| t.elapsed() >= HEALTH_INTERVAL)
    }
}

/// Membership changes and the member list of one member.
pub(crate) struct Membership {
    raft: Raft,
    route: Route,
    ids: MemberIds,
    strict: bool,
    connected: Arc<Connected>,
    timeout: Duration,
    promote_later: Mutex<BTreeSet<NodeId>>,
}

/// The member list in `metrics`, sorted by id.
pub(crate) fn listed(raft: &Raft) -> Vec<Listed> {
    let metrics = raft.metrics().borrow().clone();
    listed_in(metrics.membership_config.membership())
}

/// The members of `membership`, as [`listed`] shows them.
fn listed_in(membership: &openraft::Membership<NodeId, Member>) -> Vec<Listed> {
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, member)| Listed {
            id: *id,
            member: member.clone(),
            learner: !voters.contains(id),
        })
        .collect()
}

impl Membership {
    pub(crate) fn new(
        raft: Raft,
        route: Route,
        ids: MemberIds,
        strict: bool,
        connected: Arc<Connected>,
        timeout: Duration,
    ) -> Self {
        Membership {
            raft,
            route,
            ids,
            strict,
            connected,
            timeout,
            promote_later: Mutex::new(BTreeSet::new()),
        }
    }

    /// The openraft handle.
    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Makes `change` on the leader, forwarding it there if need be.
    pub(crate) async fn change(&self, change: MemberChange) -> Result<MemberChanged, RequestError> {
        match self.route.target() {
            Target::Here => self.change_here(change).await,
            Target::There(id, leader) => {
                match self
                    .route
                    .forward(id, &leader, &Forwarded::ChangeMembers(change))
                    .await?
                {
                    Answer::ChangedMembers(changed) => Ok(changed),
                    _ => Err(ForwardError::Mismatch.into()),
                }
            }
            Target::Nobody => Err(RequestError::NoLeader),
        }
    }

    /// Makes `change` on this member, which should lead; never forwards.
    pub(crate) async fn change_here(
        &self,
        change: MemberChange,
    ) -> Result<MemberChanged, RequestError> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.ids.member_id) {
            return Err(ClusterError::LeaderChanged.into());
        }
        let members = listed(&self.raft);
        let find = |id: NodeId| members.iter().find(|m| m.id == id).cloned();
        let (concerned, changes): (NodeId, ChangeMembers<NodeId, Member>) = match change {
            MemberChange::Add { peer_urls, learner } => {
                let peer_urls = valid_urls(peer_urls)?;
                let taken = members
                    .iter()
                    .any(|m| m.member.peer_urls.iter().any(|u| peer_urls.contains(u)));
                if taken {
                    return Err(ClusterError::PeerUrlExists.into());
                }
                let next_index = metrics.last_log_index.unwrap_or(0) + 1;
                let id = member::added_member_id(&peer_urls, self.ids.cluster_id, next_index);
                if find(id).is_some() {
                    return Err(ClusterError::MemberExists.into());
                }
                let member = Member {
                    name: String::new(),
                    peer_urls,
                    client_urls: Vec::new(),
                };
                if learner {
                    if members.iter().filter(|m| m.learner).count() >= MAX_LEARNERS {
                        return Err(ClusterError::TooManyLearners.into());
                    }
                    (id, ChangeMembers::AddNodes(BTreeMap::from([(id, member)])))
                } else if self.may_add_voter(&members)? == Quorum::Lone {
                    // openraft's joint consensus would need the new voter
                    // to commit its own addition, and it is not running
                    // yet: add it as a learner and promote it once it has
                    // caught up (the steward does).
                    self.promote_later.lock().insert(id);
                    (id, ChangeMembers::AddNodes(BTreeMap::from([(id, member)])))
                } else {
                    (id, ChangeMembers::AddVoters(BTreeMap::from([(id, member)])))
                }
            }
            MemberChange::Remove(id) => {
                let target = find(id).ok_or(ClusterError::MemberNotFound)?;
                if target.learner {
                    (id, ChangeMembers::RemoveNodes(BTreeSet::from([id])))
                } else {
                    self.may_remove_voter(&members, id)?;
                    (id, ChangeMembers::RemoveVoters(BTreeSet::from([id])))
                }
            }
            MemberChange::Update { id, peer_urls } => {
                let target = find(id).ok_or(ClusterError::MemberNotFound)?;
                let peer_urls = valid_urls(peer_urls)?;
                let taken = members.iter().any(|m| {
                    m.id != id && m.member.peer_urls.iter().any(|u| peer_urls.contains(u))
                });
                if taken {
                    return Err(ClusterError::PeerUrlExists.into());
                }
                let member = Member {
                    peer_urls,
                    ..target.member
                };
                (id, ChangeMembers::SetNodes(BTreeMap::from([(id, member)])))
            }
            MemberChange::Promote(id) => {
                let target = find(id).ok_or(ClusterError::MemberNotFound)?;
                if !target.learner {
                    return Err(ClusterError::NotLearner.into());
                }
                if !self.caught_up(id) {
                    return Err(ClusterError::LearnerNotReady.into());
                }
                self.may_promote(&members)?;
                (id, ChangeMembers::AddVoterIds(BTreeSet::from([id])))
            }
            MemberChange::Publish {
                id,
                name,
                client_urls,
            } => {
                let target = find(id).ok_or(ClusterError::MemberNotFound)?;
                let member = Member {
                    name,
                    client_urls,
                    ..target.member
                };
                (id, ChangeMembers::SetNodes(BTreeMap::from([(id, member)])))
            }
        };
        // The list is the change's own result: openraft publishes its
        // metrics a moment after the change returns, so a list read from
        // them could still lack an added member.
        let members = match self.apply(changes).await? {
            Some(membership) => listed_in(&membership),
            None => listed(&self.raft),
        };
        let member = members.iter().find(|m| m.id == concerned).cloned();
        Ok(MemberChanged { member, members })
    }

    /// Proposes `changes`, waiting out a change already in progress.
    /// Returns the membership the change committed.
    async fn apply(
        &self,
        changes: ChangeMembers<NodeId, Member>,
    ) -> Result<Option<openraft::Membership<NodeId, Member>>, RequestError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.raft.change_membership(changes.clone(), false).await {
                Ok(written) => return Ok(written.membership),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                    if Instant::now() >= deadline {
                        return Err(ClusterError::Raft(e.to_string()).into());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                    return Err(ClusterError::LeaderChanged.into())
                }
                Err(RaftError::Fatal(f)) => return Err(RequestError::Fatal(f)),
            }
        }
    }

    /// Whether learner `id` has matched enough of the leader's log.
    pub(crate) fn caught_up(&self, id: NodeId) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        let last = metrics.last_log_index.unwrap_or(0);
        let matched = metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).copied().flatten())
            .map_or(0, |l| l.index);
        // Same test as etcd: the learner's match is at least 90% of the
        // leader's.
        (matched as f64) >= (last as f64) * READY_PERCENT && matched > 0
    }

    /// Members added as voters that wait, as learners, to catch up.
    pub(crate) fn take_caught_up(&self) -> Vec<NodeId> {
        let mut pending = self.promote_later.lock();
        let ready: Vec<NodeId> = pending
            .iter()
            .copied()
            .filter(|id| self.caught_up(*id))
            .collect();
        for id in &ready {
            pending.remove(id);
        }
        ready
    }

    /// `--strict-reconfig-check` for MemberAdd of a voter, as etcd checks
    /// it: the published voters must make a quorum of the voters after the
    /// change, and every voter must have been connected to this leader for
    /// [`HEALTH_INTERVAL`].
    fn may_add_voter(&self, members: &[Listed]) -> Result<Quorum, ClusterError> {
        let voters: Vec<&Listed> = members.iter().filter(|m| !m.learner).collect();
        if voters.len() == 1 {
            return Ok(Quorum::Lone);
        }
        if !self.strict {
            return Ok(Quorum::Kept);
        }
        if self.started(&voters) < quorum(voters.len() + 1) {
            return Err(ClusterError::NotEnoughStarted);
        }
        if !voters.iter().all(|m| self.healthy(m.id)) {
            return Err(ClusterError::Unhealthy);
        }
        Ok(Quorum::Kept)
    }

    /// `--strict-reconfig-check` for MemberRemove of voter `id`: the
    /// published voters left must make a quorum of those left; and unless
    /// `id` is down already, the voters connected for [`HEALTH_INTERVAL`],
    /// less `id`, must too.
    fn may_remove_voter(&self, members: &[Listed], id: NodeId) -> Result<(), ClusterError> {
        if !self.strict {
            return Ok(());
        }
        let voters: Vec<&Listed> = members.iter().filter(|m| !m.learner).collect();
        let left: Vec<&Listed> = voters.iter().copied().filter(|m| m.id != id).collect();
        if self.started(&left) < quorum(left.len()) {
            return Err(ClusterError::NotEnoughStarted);
        }
        if id != self.ids.member_id && !self.connected.now(id) {
            return Ok(());
        }
        let healthy = voters.iter().filter(|m| self.healthy(m.id)).count();
        if healthy.saturating_sub(1) < quorum(left.len()) {
            return Err(ClusterError::Unhealthy);
        }
        Ok(())
    }

    /// `--strict-reconfig-check` for MemberPromote: the published voters
    /// and the learner must make a quorum of the voters after.
    fn may_promote(&self, members: &[Listed]) -> Result<(), ClusterError> {
        let voters: Vec<&Listed> = members.iter().filter(|m| !m.learner).collect();
        if self.strict && self.started(&voters) + 1 < quorum(voters.len() + 1) {
            return Err(ClusterError::NotEnoughStarted);
        }
        Ok(())
    }

    /// How many of `members` have started: published their name.
    fn started(&self, members: &[&Listed]) -> usize {
        members.iter().filter(|m| !m.member.name.is_empty()).count()
    }

    /// This member, or one it has been connected to for
    /// [`HEALTH_INTERVAL`].
    fn healthy(&self, id: NodeId) -> bool {
        id == self.ids.member_id || self.connected.healthy(id)
    }
}

/// The majority of `n` voters.
fn quorum(n: usize) -> usize {
    n / 2 + 1
}

/// Peer URLs from a request: at least one, each a URL etcd accepts.
fn valid_urls(urls: Vec<String>) -> Result<Vec<String>, ClusterError> {
    if urls.is_empty() {
        return Err(ClusterError::BadUrls);
    }
    let mut parsed = Vec::with_capacity(urls.len());
    for url in &urls {
        let url: crate::config::Url = url.parse().map_err(|_| ClusterError::BadUrls)?;
        parsed.push(url.to_string());
    }
    parsed.sort_unstable();
    parsed.dedup();
    Ok(parsed)
}
