//! etcd's `Maintenance` gRPC service: Status, Alarm, Defragment, Hash,
//! HashKV, Snapshot and MoveLeader (Downgrade answers `Unimplemented`).
//!
//! - Alarm: GET reads this member's applied alarms; ACTIVATE and
//!   DEACTIVATE go through Raft, so every member agrees on them.
//! - Snapshot: a backup (`cairn_raft_storage::Store::backup`, a consistent
//!   snapshot at the current revision, taken while writes go on) streamed
//!   in 32 KiB chunks; the stream is padded to a multiple of 512 and ends
//!   in its SHA-256, which `etcdctl snapshot save` checks.
//! - Hash and HashKV: crc32s of the store; HashKV's is equal across
//!   members that applied the same log.
//! - Defragment: waits for physical compaction to finish, then copies the
//!   live data into a new sled database and switches to it
//!   (`Store::defragment`), giving the old file's space back. Writes wait
//!   only for the final catch-up and the switch (milliseconds); reads never
//!   wait. Per member, as etcd's.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use cairn_proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType,
    DefragmentRequest, DefragmentResponse, DowngradeRequest, DowngradeResponse, HashKvRequest,
    HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse,
    SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use cairn_raft_storage::{Backup, NodeId, Raft, Request as Proposal, Response as Applied, Store};
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::cluster::ClusterError;
use crate::header::Header;
use crate::peer::{Answer, ForwardError, Forwarded, Route, Target};
use crate::propose::Proposer;
use crate::status::{unexpected, RequestError};
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
    proposer: Proposer,
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
    pub(crate) proposer: Proposer,
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
            proposer: parts.proposer,
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
    route.begin_transfer();
    let _transfer = Transfer { raft, route };
    async {
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
    .await
}

/// Ends a leadership transfer however [`transfer_leadership`] ends, also
/// when its caller gives up and drops it: heartbeats resume and the
/// proposer takes requests again.
struct Transfer<'a> {
    raft: &'a Raft,
    route: &'a Route,
}

impl Drop for Transfer<'_> {
    fn drop(&mut self) {
        if self.route.end_transfer() {
            self.raft.runtime_config().heartbeat(true);
        }
    }
}

type Chunks = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

/// The size of a Snapshot response's blob, as etcd's.
const CHUNK: usize = 32 * 1024;

/// etcd's name of an alarm type, as its Status errors print it.
fn alarm_name(alarm: i32) -> &'static str {
    match AlarmType::try_from(alarm) {
        Ok(AlarmType::Nospace) => "NOSPACE",
        Ok(AlarmType::Corrupt) => "CORRUPT",
        _ => "NONE",
    }
}

impl MaintenanceService {
    async fn do_alarm(&self, req: AlarmRequest) -> Result<AlarmResponse, RequestError> {
        match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Activate | AlarmAction::Deactivate) => {
                match self.proposer.propose(Proposal::Alarm(req)).await? {
                    Applied::Alarm(mut resp) => {
                        resp.header = self.header.fill(resp.header);
                        Ok(resp)
                    }
                    other => Err(unexpected(&other)),
                }
            }
            // GET, and any action etcd does not know, lists alarms of the
            // asked type (NONE: every alarm).
            _ => {
                let alarms = self
                    .store
                    .alarms()
                    .into_iter()
                    .filter(|(_, a)| req.alarm == AlarmType::None as i32 || *a == req.alarm)
                    .map(|(member_id, alarm)| AlarmMember { member_id, alarm })
                    .collect();
                Ok(AlarmResponse {
                    header: self.header.at(self.store.revision()),
                    alarms,
                })
            }
        }
    }

    /// Runs store work off the runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(Store) -> cairn_raft_storage::Result<T> + Send + 'static,
    ) -> Result<T, RequestError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(store))
            .await
            .map_err(|_| RequestError::Stopped)?
            .map_err(RequestError::Storage)
    }
}

/// Chunks of a backup read at once by the Snapshot RPC's stream (1 MiB).
const READ_AHEAD: usize = 32;

/// The result of [`read_ahead`].
type ReadAhead = (Option<Backup>, std::io::Result<VecDeque<Vec<u8>>>);

/// Where a Snapshot RPC's stream is.
struct Sending {
    /// The read under way; `None` once the backup is read to its end, or
    /// after a read error.
    next: Option<tokio::task::JoinHandle<ReadAhead>>,
    /// Bytes sent so far.
    sent: u64,
    /// Chunks read and not sent yet.
    read: VecDeque<Vec<u8>>,
}

/// Reads up to [`READ_AHEAD`] chunks of `backup`; hands it back unless
/// it is read to its end.
fn read_ahead(mut backup: Backup) -> ReadAhead {
    let mut chunks = VecDeque::new();
    while chunks.len() < READ_AHEAD {
        let mut blob = vec![0u8; CHUNK];
        match read_full(&mut backup, &mut blob) {
            Ok(0) => return (None, Ok(chunks)),
            Ok(n) => {
                blob.truncate(n);
                chunks.push_back(blob);
            }
            Err(e) => return (None, Err(e)),
        }
    }
    (Some(backup), Ok(chunks))
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn later(what: &str) -> Status {
    Status::unimplemented(format!("etcdserver: {what} is not implemented yet"))
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        Ok(Response::new(self.do_alarm(request.into_inner()).await?))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let metrics = self.raft.metrics().borrow().clone();
        let size = i64::try_from(self.store.size_on_disk()).unwrap_or(i64::MAX);
        let in_use = i64::try_from(self.store.size_in_use()).unwrap_or(i64::MAX);
        let mut errors = Vec::new();
        if matches!(self.route.target(), Target::Nobody) {
            errors.push("etcdserver: no leader".to_owned());
        }
        for (member, alarm) in self.store.alarms() {
            // As etcd prints an AlarmMember (its protobuf text form).
            errors.push(format!("memberID:{member} alarm:{} ", alarm_name(alarm)));
        }
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
            errors,
            db_size_in_use: in_use,
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
        let started = Instant::now();
        // Let physical compaction finish, so that what it frees is not
        // copied.
        self.store
            .wait_compacted(self.store.compact_revision())
            .await;
        let done = self.blocking(|s| s.defragment()).await?;
        tracing::info!(
            took = ?started.elapsed(),
            writes_blocked = ?done.writes_blocked,
            db_size_before = done.size_before,
            db_size_after = done.size_after,
            in_use = self.store.size_in_use(),
            "defragmented"
        );
        Ok(Response::new(DefragmentResponse {
            header: self.header.at(self.store.revision()),
        }))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let revision = self.store.revision();
        let hash = self.blocking(|s| s.hash()).await?;
        Ok(Response::new(HashResponse {
            header: self.header.at(revision),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let rev = request.into_inner().revision;
        let current = self.store.revision();
        let (hash, compact_revision, hash_revision) =
            self.blocking(move |s| s.hash_kv(rev)).await?;
        Ok(Response::new(HashKvResponse {
            header: self.header.at(current),
            hash,
            compact_revision,
            hash_revision,
        }))
    }

    type SnapshotStream = Chunks;

    async fn snapshot(&self, _: Request<SnapshotRequest>) -> Result<Response<Chunks>, Status> {
        let revision = self.store.revision();
        let started = Instant::now();
        let backup = self.blocking(|s| s.backup()).await?;
        let total = backup.len();
        tracing::info!(bytes = total, revision, took = ?started.elapsed(), "sending a snapshot");
        let header = self.header.at(revision);
        // The stream reads the backup file READ_AHEAD chunks at a time, on
        // a blocking thread held only for that read, one read ahead of what
        // it sends: a client that stops reading holds no thread.
        let state = Sending {
            next: Some(tokio::task::spawn_blocking(|| read_ahead(backup))),
            sent: 0,
            read: VecDeque::new(),
        };
        let chunks = futures::stream::unfold(state, move |mut st| async move {
            if st.read.is_empty() {
                let (backup, read) = st
                    .next
                    .take()?
                    .await
                    .unwrap_or_else(|e| (None, Err(std::io::Error::other(e))));
                st.next = backup.map(|b| tokio::task::spawn_blocking(|| read_ahead(b)));
                match read {
                    Ok(chunks) => st.read = chunks,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading a snapshot to send failed");
                        let status = Status::internal(format!(
                            "etcdserver: reading the snapshot failed: {e}"
                        ));
                        return Some((Err(status), st));
                    }
                }
            }
            let blob = st.read.pop_front()?;
            st.sent += blob.len() as u64;
            let chunk = SnapshotResponse {
                header,
                remaining_bytes: total - st.sent,
                blob,
                version: ETCD_VERSION.to_owned(),
            };
            Some((Ok(chunk), st))
        });
        Ok(Response::new(Box::pin(chunks)))
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
