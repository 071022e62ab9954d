//! etcd's `Maintenance` gRPC service: Status and MoveLeader.
//!
//! Alarms, defragmentation, hashes and snapshots come with the operations
//! work; until then they answer `Unimplemented`.

use std::pin::Pin;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use cairn_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use cairn_raft_storage::{NodeId, Raft, Store};
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::cluster::ClusterError;
use crate::header::Header;
use crate::peer::{Answer, ForwardError, Forwarded, Route, Target};
use crate::status::RequestError;
use crate::tracked::Tracker;

/// The etcd version Cairn answers as: clients (Kubernetes among them) gate
/// features on it.
pub(crate) const ETCD_VERSION: &str = "3.5.13";

/// The Maintenance service of one member.
#[derive(Clone)]
pub(crate) struct MaintenanceService {
    raft: Raft,
    store: Store,
    route: Route,
    header: Header,
    me: NodeId,
    timeout: Duration,
    quota: u64,
    _tracker: Tracker,
}

/// What the Maintenance service is built from.
pub(crate) struct MaintenanceParts {
    pub(crate) raft: Raft,
    pub(crate) store: Store,
    pub(crate) route: Route,
    pub(crate) header: Header,
    pub(crate) me: NodeId,
    pub(crate) timeout: Duration,
    pub(crate) quota: u64,
    pub(crate) tracker: Tracker,
}

impl MaintenanceService {
    pub(crate) fn new(parts: MaintenanceParts) -> Self {
        MaintenanceService {
            raft: parts.raft,
            store: parts.store,
            route: parts.route,
            header: parts.header,
            me: parts.me,
            timeout: parts.timeout,
            quota: parts.quota,
            _tracker: parts.tracker,
        }
    }
}

/// Hands leadership to `target`: the leader stops heartbeating, so that
/// the voters' leader lease runs out, and asks the target to campaign. The
/// target's log must match the leader's first. Returns once `target` leads.
pub(crate) async fn transfer_leadership(
    raft: &Raft,
    route: &Route,
    me: NodeId,
    target: NodeId,
    timeout: Duration,
) -> Result<(), RequestError> {
    let deadline = Instant::now() + timeout;
    let metrics = raft.metrics().borrow().clone();
    if metrics.current_leader != Some(me) {
        return Err(ClusterError::NotLeader.into());
    }
    if target == me {
        return Ok(());
    }
    let membership = metrics.membership_config.membership().clone();
    if !membership.voter_ids().any(|v| v == target) {
        return Err(ClusterError::BadTransferee.into());
    }
    let node = membership
        .get_node(&target)
        .cloned()
        .ok_or(ClusterError::BadTransferee)?;
    raft.runtime_config().heartbeat(false);
    let result = async {
        // Wait until the target has all of the log, so it can win.
        loop {
            let m = raft.metrics().borrow().clone();
            let last = m.last_log_index;
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&target).copied().flatten())
                .map(|l| l.index);
            if matched >= last {
                break;
            }
            if Instant::now() >= deadline {
                return Err(RequestError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The voters refuse any vote while the leader lease (the longest
        // election timeout) since the last heartbeat lasts.
        let lease = Duration::from_millis(raft.config().election_timeout_max);
        tokio::time::sleep(lease).await;
        match route.forward(target, &node, &Forwarded::Campaign).await? {
            Answer::Campaigning => {}
            _ => return Err(ForwardError::Mismatch.into()),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        raft.wait(Some(left))
            .metrics(
                |m| m.current_leader == Some(target),
                "leadership moved to the transferee",
            )
            .await
            .map_err(|_| RequestError::Timeout)?;
        Ok(())
    }
    .await;
    raft.runtime_config().heartbeat(true);
    result
}

type Chunks = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

fn later(what: &str) -> Status {
    Status::unimplemented(format!("etcdserver: {what} is not implemented yet"))
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, _: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        Err(later("Alarm"))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let metrics = self.raft.metrics().borrow().clone();
        let size = i64::try_from(self.store.size_on_disk()).unwrap_or(i64::MAX);
        let committed = self
            .raft
            .with_raft_state(|st| st.committed.map_or(0, |l| l.index))
            .await
            .map_err(RequestError::Fatal)?;
        Ok(Response::new(StatusResponse {
            header: self.header.at(self.store.revision()),
            version: ETCD_VERSION.to_owned(),
            db_size: size,
            leader: match self.route.target() {
                Target::Here => self.me,
                Target::There(id, _) => id,
                Target::Nobody => 0,
            },
            raft_index: committed,
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.map_or(0, |l| l.index),
            errors: Vec::new(),
            db_size_in_use: size,
            is_learner: self.route.learner(),
            storage_version: String::new(),
            db_size_quota: i64::try_from(self.quota).unwrap_or(i64::MAX),
            downgrade_info: None,
            cairn_version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }

    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Err(later("Defragment"))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(later("Hash"))
    }

    async fn hash_kv(&self, _: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        Err(later("HashKV"))
    }

    type SnapshotStream = Chunks;

    async fn snapshot(&self, _: Request<SnapshotRequest>) -> Result<Response<Chunks>, Status> {
        Err(later("Snapshot"))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        if !matches!(self.route.target(), Target::Here) {
            return Err(RequestError::from(ClusterError::NotLeader).into());
        }
        transfer_leadership(&self.raft, &self.route, self.me, target, self.timeout).await?;
        Ok(Response::new(MoveLeaderResponse {
            header: self.header.at(self.store.revision()),
        }))
    }

    async fn downgrade(
        &self,
        _: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(later("Downgrade"))
    }
}
