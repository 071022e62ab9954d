//! The lessor: when each lease expires, decided on the leader.
//!
//! Leases themselves are replicated state in the store (`Store::lease`).
//! The lessor keeps only deadlines, in memory, on the leader, and turns
//! them into Raft proposals: a revoke when a lease expires (at most
//! [`REVOKES_PER_SECOND`], so a mass expiry does not stall writes), and
//! every checkpoint interval a checkpoint of the remaining TTLs, so that a
//! new leader resumes from them instead of granting each lease a fresh TTL.
//!
//! When this member becomes leader, every stored lease gets a deadline of its
//! checkpointed remaining TTL (or its TTL, if never checkpointed), plus an
//! election timeout, as etcd's `Promote` does: time spent electing the
//! leader does not count against the lease.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_proto::etcdserverpb::{
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse,
};
use cairn_raft_storage::{ApplyError, Raft, Request as Proposal, Response as Applied, Store};
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::peer::{Answer, ForwardError, Forwarded, Route, Target};
use crate::propose::Proposer;
use crate::status::{unexpected, RequestError};

/// etcd's `MaxLeaseTTL`, in seconds.
pub(crate) const MAX_TTL: i64 = 9_000_000_000;
/// etcd's lease revoke rate limit.
const REVOKES_PER_SECOND: usize = 1000;
/// How often expired leases are looked for (etcd: 500ms).
const EXPIRY_TICK: Duration = Duration::from_millis(500);
/// Leases per checkpoint proposal (etcd's `maxLeaseCheckpointBatchSize`).
const CHECKPOINT_BATCH: usize = 1000;

/// Deadlines of the leases, on the leader.
pub(crate) struct Lessor {
    deadlines: Mutex<HashMap<i64, Instant>>,
    store: Store,
    proposer: Proposer,
    route: Route,
    /// The smallest TTL granted: 1.5 × the election timeout, in seconds.
    min_ttl: i64,
    ids: IdGen,
    /// Added to every deadline on promotion.
    election_timeout: Duration,
}

impl Lessor {
    /// A lessor for this member; it keeps deadlines only while it leads.
    pub(crate) fn new(
        store: Store,
        proposer: Proposer,
        route: Route,
        member_id: u64,
        election_timeout: Duration,
    ) -> Arc<Lessor> {
        let min_ttl = (election_timeout.as_millis() as i64 * 3 / 2 + 999) / 1000;
        Arc::new(Lessor {
            deadlines: Mutex::new(HashMap::new()),
            store,
            proposer,
            route,
            min_ttl: min_ttl.max(1),
            ids: IdGen::new(member_id),
            election_timeout,
        })
    }

    /// This member became leader: every stored lease gets a deadline of its
    /// checkpointed remaining TTL (or its TTL) plus an election timeout.
    fn promote(&self) {
        let now = Instant::now();
        let deadlines = self
            .store
            .lease_ids()
            .into_iter()
            .filter_map(|id| self.store.lease(id))
            .map(|l| {
                let left = if l.remaining_ttl > 0 {
                    l.remaining_ttl
                } else {
                    l.ttl
                };
                (l.id, now + secs(left) + self.election_timeout)
            })
            .collect::<Vec<_>>();
        // A keepalive may have come first, between the election and this
        // tick: keep its deadline.
        let mut mine = self.deadlines.lock();
        for (id, at) in deadlines {
            mine.entry(id).or_insert(at);
        }
    }

    /// This member stopped leading: the new leader keeps the deadlines.
    fn demote(&self) {
        self.deadlines.lock().clear();
    }

    /// Grants a lease: the TTL raised to the minimum, the ID chosen if 0.
    ///
    /// # Errors
    /// etcd's: a TTL above [`MAX_TTL`], an ID that exists; Raft's.
    pub(crate) async fn grant(
        &self,
        mut req: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, RequestError> {
        if req.ttl > MAX_TTL {
            return Err(RequestError::LeaseTtlTooLarge);
        }
        req.ttl = req.ttl.max(self.min_ttl);
        if req.id == 0 {
            req.id = self.ids.next(&self.store);
        }
        let (id, ttl) = (req.id, req.ttl);
        match self.proposer.propose(Proposal::LeaseGrant(req)).await? {
            Applied::LeaseGrant(resp) => {
                // A follower's grant reaches the leader's deadlines through
                // its reconcile.
                if matches!(self.route.target(), Target::Here) {
                    self.deadlines.lock().insert(id, Instant::now() + secs(ttl));
                }
                Ok(resp)
            }
            Applied::Rejected(e) => Err(RequestError::Apply(e)),
            other => Err(unexpected(&other)),
        }
    }

    /// Revokes a lease and deletes its keys.
    ///
    /// # Errors
    /// etcd's lease-not-found; Raft's.
    pub(crate) async fn revoke(&self, id: i64) -> Result<LeaseRevokeResponse, RequestError> {
        let resp = self
            .proposer
            .propose(Proposal::LeaseRevoke(LeaseRevokeRequest { id }))
            .await?;
        self.deadlines.lock().remove(&id);
        match resp {
            Applied::LeaseRevoke(resp) => Ok(resp),
            Applied::Rejected(e) => Err(RequestError::Apply(e)),
            other => Err(unexpected(&other)),
        }
    }

    /// Renews a lease for its full TTL; None if it does not exist, or has
    /// expired and waits for its revoke (as etcd, an expired lease is not
    /// brought back).
    pub(crate) fn renew(&self, id: i64) -> Option<i64> {
        let Some(lease) = self.store.lease(id) else {
            self.deadlines.lock().remove(&id);
            return None;
        };
        let now = Instant::now();
        let mut deadlines = self.deadlines.lock();
        if deadlines.get(&id).is_some_and(|at| *at <= now) {
            return None;
        }
        deadlines.insert(id, now + secs(lease.ttl));
        Some(lease.ttl)
    }

    /// Renews lease `id` on the leader, forwarding there if need be, and
    /// returns its TTL (0 for a lease that does not exist or expired).
    ///
    /// # Errors
    ///
    /// No leader, or the leader could not be reached.
    pub(crate) async fn keep_alive(&self, id: i64) -> Result<i64, RequestError> {
        match self.route.target() {
            Target::Here => Ok(self.renew(id).unwrap_or(0)),
            Target::There(leader, member) => {
                match self
                    .route
                    .forward(leader, &member, &Forwarded::LeaseRenew(id))
                    .await?
                {
                    Answer::LeaseTtl(ttl) => Ok(ttl),
                    _ => Err(ForwardError::Mismatch.into()),
                }
            }
            Target::Nobody => Err(RequestError::NoLeader),
        }
    }

    /// Whole seconds left of lease `id`, as the leader knows it; None when
    /// the leader has no deadline for it.
    ///
    /// # Errors
    ///
    /// No leader, or the leader could not be reached.
    pub(crate) async fn time_to_live(&self, id: i64) -> Result<Option<i64>, RequestError> {
        match self.route.target() {
            Target::Here => Ok(self.remaining(id)),
            Target::There(leader, member) => {
                match self
                    .route
                    .forward(leader, &member, &Forwarded::LeaseRemaining(id))
                    .await?
                {
                    Answer::LeaseRemaining(left) => Ok(left),
                    _ => Err(ForwardError::Mismatch.into()),
                }
            }
            Target::Nobody => Err(RequestError::NoLeader),
        }
    }

    /// Whole seconds left before lease `id` expires (0 once due).
    pub(crate) fn remaining(&self, id: i64) -> Option<i64> {
        let at = *self.deadlines.lock().get(&id)?;
        Some(at.saturating_duration_since(Instant::now()).as_secs() as i64)
    }

    /// Brings the deadlines in line with the store: a lease whose grant
    /// was applied although its proposer gave up waiting (a timeout) gets a
    /// deadline of its full TTL from now, and a revoked one loses its own.
    fn reconcile(&self) {
        let ids = self.store.lease_ids();
        let now = Instant::now();
        let mut deadlines = self.deadlines.lock();
        if deadlines.len() == ids.len() && ids.iter().all(|id| deadlines.contains_key(id)) {
            return;
        }
        let known: std::collections::HashSet<i64> = ids.iter().copied().collect();
        deadlines.retain(|id, _| known.contains(id));
        for id in ids {
            if let std::collections::hash_map::Entry::Vacant(slot) = deadlines.entry(id) {
                if let Some(lease) = self.store.lease(id) {
                    slot.insert(now + secs(lease.ttl));
                }
            }
        }
    }

    /// The leases whose deadline has passed, at most `max`.
    fn expired(&self, max: usize) -> Vec<i64> {
        let now = Instant::now();
        self.deadlines
            .lock()
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .take(max)
            .collect()
    }

    /// Proposes the revokes of expired leases, then checkpoints, while this
    /// member leads.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        raft: Raft,
        checkpoint_interval: Duration,
    ) -> JoinHandle<()> {
        let lessor = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXPIRY_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut next_checkpoint = Instant::now() + checkpoint_interval;
            let per_tick = REVOKES_PER_SECOND * EXPIRY_TICK.as_millis() as usize / 1000;
            let mut led = false;
            loop {
                tick.tick().await;
                let leading = {
                    let m = raft.metrics();
                    let m = m.borrow();
                    m.current_leader == Some(m.id)
                };
                match (led, leading) {
                    (false, true) => lessor.promote(),
                    (true, false) => lessor.demote(),
                    _ => {}
                }
                led = leading;
                if !leading {
                    continue;
                }
                lessor.reconcile();
                let expired = lessor.expired(per_tick);
                let revokes = expired.iter().map(|id| lessor.revoke(*id));
                for (id, result) in expired.iter().zip(futures::future::join_all(revokes).await) {
                    match result {
                        Ok(_) | Err(RequestError::Apply(ApplyError::LeaseNotFound)) => {}
                        Err(e) => {
                            tracing::warn!(lease = id, error = ?e, "revoking an expired lease failed; retrying")
                        }
                    }
                }
                if Instant::now() >= next_checkpoint {
                    next_checkpoint = Instant::now() + checkpoint_interval;
                    lessor.checkpoint().await;
                }
            }
        })
    }

    /// Proposes the remaining TTL of every lease.
    async fn checkpoint(&self) {
        let now = Instant::now();
        let all: Vec<LeaseCheckpoint> = self
            .deadlines
            .lock()
            .iter()
            .map(|(id, at)| LeaseCheckpoint {
                id: *id,
                remaining_ttl: at.saturating_duration_since(now).as_secs().max(1) as i64,
            })
            .collect();
        for chunk in all.chunks(CHECKPOINT_BATCH) {
            let req = LeaseCheckpointRequest {
                checkpoints: chunk.to_vec(),
            };
            if let Err(e) = self.proposer.propose(Proposal::LeaseCheckpoint(req)).await {
                tracing::warn!(error = ?e, "lease checkpoint failed");
            }
        }
    }
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

/// Lease IDs as etcd makes them: the member ID's low 16 bits, then a
/// millisecond timestamp and a counter, kept positive.
struct IdGen {
    prefix: u64,
    next: AtomicU64,
}

impl IdGen {
    fn new(member_id: u64) -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        IdGen {
            prefix: (member_id & 0xffff) << 48,
            next: AtomicU64::new((ms & 0xff_ffff_ffff) << 8),
        }
    }

    /// The next ID no lease has.
    fn next(&self, store: &Store) -> i64 {
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff_ffff;
            let id = ((self.prefix | n) & (i64::MAX as u64)) as i64;
            if id != 0 && store.lease(id).is_none() {
                return id;
            }
        }
    }
}
