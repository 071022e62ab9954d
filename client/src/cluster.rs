//! The Cluster service (membership) and the Maintenance service (status,
//! alarms, defragment, hash, snapshot, leader transfer).

use std::sync::Arc;

use cairn_proto::etcdserverpb as pb;
use pb::cluster_client::ClusterClient;
use pb::maintenance_client::MaintenanceClient;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tonic::transport::Channel;

use crate::client::{Client, MAX_DECODING_MESSAGE_SIZE};
use crate::error::{Error, Result};
use crate::transport::{Endpoint, Policy};
use crate::types::{MemberId, ResponseHeader, Revision};

/// One cluster member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its ID.
    pub id: MemberId,
    /// Its name; empty until it has started and published it.
    pub name: String,
    /// Where its peers reach it.
    pub peer_urls: Vec<String>,
    /// Where clients reach it; empty until it has started.
    pub client_urls: Vec<String>,
    /// Whether it is a learner (a non-voting member).
    pub is_learner: bool,
}

impl Member {
    fn from_pb(m: pb::Member) -> Self {
        Self {
            id: MemberId::new(m.id),
            name: m.name,
            peer_urls: m.peer_ur_ls,
            client_urls: m.client_ur_ls,
            is_learner: m.is_learner,
        }
    }
}

/// The members after a membership call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberListResponse {
    /// Who answered.
    pub header: ResponseHeader,
    /// Every member.
    pub members: Vec<Member>,
}

impl MemberListResponse {
    fn new(header: Option<pb::ResponseHeader>, members: Vec<pb::Member>) -> Self {
        Self {
            header: ResponseHeader::from_pb(header),
            members: members.into_iter().map(Member::from_pb).collect(),
        }
    }
}

/// The answer to [`Client::member_add`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAddResponse {
    /// Who answered.
    pub header: ResponseHeader,
    /// The new member (not started yet: no name, no client URLs).
    pub member: Member,
    /// Every member, the new one included.
    pub members: Vec<Member>,
}

/// One member's view of itself, from [`Maintenance::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Who answered (`header.member_id` is the member described).
    pub header: ResponseHeader,
    /// The etcd version it reports.
    pub version: String,
    /// Its database size in bytes.
    pub db_size: i64,
    /// Bytes in use in the database.
    pub db_size_in_use: i64,
    /// The leader it knows of, if any.
    pub leader: Option<MemberId>,
    /// Its Raft log index.
    pub raft_index: u64,
    /// Its Raft term.
    pub raft_term: u64,
    /// The index it has applied.
    pub raft_applied_index: u64,
    /// Errors it reports (alarms, for instance).
    pub errors: Vec<String>,
    /// Whether it is a learner.
    pub is_learner: bool,
}

impl Status {
    /// Whether the member that answered leads the cluster.
    pub fn is_leader(&self) -> bool {
        self.leader == Some(self.header.member_id)
    }
}

/// An alarm kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlarmKind {
    /// The database reached its space quota.
    NoSpace,
    /// A consistency check found divergent data.
    Corrupt,
}

impl AlarmKind {
    fn wire(self) -> i32 {
        (match self {
            AlarmKind::NoSpace => pb::AlarmType::Nospace,
            AlarmKind::Corrupt => pb::AlarmType::Corrupt,
        }) as i32
    }

    fn from_wire(alarm: i32) -> Option<Self> {
        match pb::AlarmType::try_from(alarm) {
            Ok(pb::AlarmType::Nospace) => Some(AlarmKind::NoSpace),
            Ok(pb::AlarmType::Corrupt) => Some(AlarmKind::Corrupt),
            _ => None,
        }
    }
}

/// A raised alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Alarm {
    /// The member it is raised on.
    pub member_id: MemberId,
    /// What it is.
    pub kind: AlarmKind,
}

/// The answer to [`Maintenance::hash_kv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashKv {
    /// Who answered.
    pub header: ResponseHeader,
    /// The hash of the key-value history up to the revision.
    pub hash: u32,
    /// The compact revision the hash starts from.
    pub compact_revision: Revision,
}

impl Client {
    /// Every member of the cluster.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] or [`Error::Unavailable`] if no member answered.
    pub async fn member_list(&self) -> Result<MemberListResponse> {
        let request = pb::MemberListRequest { linearizable: true };
        let r = self
            .unary(Policy::Read, false, None, request, |ch, req| async move {
                cluster(ch).member_list(req).await
            })
            .await?;
        Ok(MemberListResponse::new(r.header, r.members))
    }

    /// Adds a member (a learner if `is_learner`) that will listen for peers
    /// on `peer_urls`; start it afterwards with
    /// `--initial-cluster-state existing`.
    ///
    /// # Errors
    ///
    /// [`Error::PeerUrlExists`], [`Error::UnhealthyCluster`] (retry later),
    /// [`Error::TooManyLearners`], [`Error::Ambiguous`] if the outcome is
    /// unknown.
    pub async fn member_add(
        &self,
        peer_urls: impl IntoIterator<Item = impl Into<String>>,
        is_learner: bool,
    ) -> Result<MemberAddResponse> {
        let request = pb::MemberAddRequest {
            peer_ur_ls: peer_urls.into_iter().map(Into::into).collect(),
            is_learner,
        };
        let r = self
            .unary(Policy::Write, false, None, request, |ch, req| async move {
                cluster(ch).member_add(req).await
            })
            .await?;
        Ok(MemberAddResponse {
            header: ResponseHeader::from_pb(r.header),
            member: Member::from_pb(r.member.unwrap_or_default()),
            members: r.members.into_iter().map(Member::from_pb).collect(),
        })
    }

    /// Removes a member.
    ///
    /// # Errors
    ///
    /// [`Error::MemberNotFound`], [`Error::UnhealthyCluster`],
    /// [`Error::Ambiguous`] if the outcome is unknown.
    pub async fn member_remove(&self, id: MemberId) -> Result<MemberListResponse> {
        let request = pb::MemberRemoveRequest { id: id.get() };
        let r = self
            .unary(Policy::Write, false, None, request, |ch, req| async move {
                cluster(ch).member_remove(req).await
            })
            .await?;
        Ok(MemberListResponse::new(r.header, r.members))
    }

    /// Changes a member's peer URLs.
    ///
    /// # Errors
    ///
    /// [`Error::MemberNotFound`], [`Error::PeerUrlExists`],
    /// [`Error::Ambiguous`] if the outcome is unknown.
    pub async fn member_update(
        &self,
        id: MemberId,
        peer_urls: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<MemberListResponse> {
        let request = pb::MemberUpdateRequest {
            id: id.get(),
            peer_ur_ls: peer_urls.into_iter().map(Into::into).collect(),
        };
        let r = self
            .unary(Policy::Write, false, None, request, |ch, req| async move {
                cluster(ch).member_update(req).await
            })
            .await?;
        Ok(MemberListResponse::new(r.header, r.members))
    }

    /// Promotes a learner to a voting member.
    ///
    /// # Errors
    ///
    /// [`Error::LearnerNotReady`] while it has not caught up (retry later),
    /// [`Error::MemberNotLearner`], [`Error::Ambiguous`] if the outcome is
    /// unknown.
    pub async fn member_promote(&self, id: MemberId) -> Result<MemberListResponse> {
        let request = pb::MemberPromoteRequest { id: id.get() };
        let r = self
            .unary(Policy::Write, false, None, request, |ch, req| async move {
                cluster(ch).member_promote(req).await
            })
            .await?;
        Ok(MemberListResponse::new(r.header, r.members))
    }

    /// Maintenance calls, each sent to any endpoint (with failover).
    pub fn maintenance(&self) -> Maintenance<'_> {
        Maintenance {
            client: self,
            pinned: None,
        }
    }

    /// Maintenance calls sent to one member: the one at `endpoint` (one of
    /// the client's endpoints, or any other client URL).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidEndpoint`].
    pub fn maintenance_at(&self, endpoint: &str) -> Result<Maintenance<'_>> {
        Ok(Maintenance {
            client: self,
            pinned: Some(self.inner.pool.endpoint(endpoint)?),
        })
    }

    /// Transfers leadership to `target`, as `etcdctl move-leader` does:
    /// finds the leader among the endpoints and asks it.
    ///
    /// # Errors
    ///
    /// [`Error::NoLeader`] if no endpoint names itself leader,
    /// [`Error::BadLeaderTransferee`] for a target that cannot lead,
    /// [`Error::Ambiguous`] if the outcome is unknown.
    pub async fn move_leader(&self, target: MemberId) -> Result<ResponseHeader> {
        for url in self.endpoints() {
            let maintenance = self.maintenance_at(&url)?;
            let Ok(status) = maintenance.status().await else {
                continue;
            };
            if status.is_leader() {
                return maintenance.move_leader(target).await;
            }
        }
        Err(Error::NoLeader)
    }
}

/// Maintenance calls, from [`Client::maintenance`] (any endpoint) or
/// [`Client::maintenance_at`] (one member).
///
/// Cairn and etcd serve them all; Cairn's snapshot is its own format in
/// etcd's envelope (padded to 512 bytes, a trailing SHA-256), restored with
/// `cairnctl snapshot restore`.
#[derive(Debug, Clone)]
pub struct Maintenance<'a> {
    client: &'a Client,
    pinned: Option<Arc<Endpoint>>,
}

impl Maintenance<'_> {
    /// The member's status.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] or [`Error::Unavailable`] if it did not answer.
    pub async fn status(&self) -> Result<Status> {
        let r = self
            .client
            .unary(
                Policy::Read,
                false,
                self.pinned.as_ref(),
                pb::StatusRequest {},
                |ch, req| async move { maintenance(ch).status(req).await },
            )
            .await?;
        let header = ResponseHeader::from_pb(r.header);
        Ok(Status {
            header,
            version: r.version,
            db_size: r.db_size,
            db_size_in_use: r.db_size_in_use,
            leader: (r.leader != 0).then_some(MemberId::new(r.leader)),
            raft_index: r.raft_index,
            raft_term: r.raft_term,
            raft_applied_index: r.raft_applied_index,
            errors: r.errors,
            is_learner: r.is_learner,
        })
    }

    async fn alarm(&self, request: pb::AlarmRequest, policy: Policy) -> Result<Vec<Alarm>> {
        let r = self
            .client
            .unary(
                policy,
                true,
                self.pinned.as_ref(),
                request,
                |ch, req| async move { maintenance(ch).alarm(req).await },
            )
            .await?;
        Ok(r.alarms
            .into_iter()
            .filter_map(|a| {
                Some(Alarm {
                    member_id: MemberId::new(a.member_id),
                    kind: AlarmKind::from_wire(a.alarm)?,
                })
            })
            .collect())
    }

    /// Every raised alarm.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] or [`Error::Unavailable`] if no member answered.
    pub async fn alarms(&self) -> Result<Vec<Alarm>> {
        let request = pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Get as i32,
            member_id: 0,
            alarm: pb::AlarmType::None as i32,
        };
        self.alarm(request, Policy::Read).await
    }

    /// Disarms an alarm (after freeing space, for NOSPACE); returns the
    /// alarms disarmed.
    ///
    /// # Errors
    ///
    /// [`Error::Ambiguous`] if
    /// the outcome is unknown.
    pub async fn alarm_disarm(&self, alarm: Alarm) -> Result<Vec<Alarm>> {
        let request = pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Deactivate as i32,
            member_id: alarm.member_id.get(),
            alarm: alarm.kind.wire(),
        };
        self.alarm(request, Policy::Write).await
    }

    /// Defragments the member's database, giving freed space back to the
    /// file system. etcd stalls the member meanwhile; Cairn blocks its
    /// writes only for a final catch-up of a few milliseconds, but the copy
    /// loads the member's disk. Defragment one member at a time, with
    /// [`Client::maintenance_at`].
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] or [`Error::Unavailable`] if it did not answer.
    pub async fn defragment(&self) -> Result<ResponseHeader> {
        let r = self
            .client
            .unary(
                Policy::Read,
                false,
                self.pinned.as_ref(),
                pb::DefragmentRequest {},
                |ch, req| async move { maintenance(ch).defragment(req).await },
            )
            .await?;
        Ok(ResponseHeader::from_pb(r.header))
    }

    /// The hash of the member's key-value history up to `revision` (`None`:
    /// the current one). Members that agree have equal hashes.
    ///
    /// # Errors
    ///
    /// [`Error::Compacted`], [`Error::FutureRevision`].
    pub async fn hash_kv(&self, revision: Option<Revision>) -> Result<HashKv> {
        let request = pb::HashKvRequest {
            revision: revision.map_or(0, Revision::get),
        };
        let r = self
            .client
            .unary(
                Policy::Read,
                false,
                self.pinned.as_ref(),
                request,
                |ch, req| async move { maintenance(ch).hash_kv(req).await },
            )
            .await?;
        Ok(HashKv {
            header: ResponseHeader::from_pb(r.header),
            hash: r.hash,
            compact_revision: Revision::new(r.compact_revision),
        })
    }

    /// Asks this member, which must be the leader, to hand leadership to
    /// `target`. [`Client::move_leader`] finds the leader first.
    ///
    /// # Errors
    ///
    /// [`Error::NotLeader`], [`Error::BadLeaderTransferee`],
    /// [`Error::Ambiguous`] if the outcome is unknown.
    pub async fn move_leader(&self, target: MemberId) -> Result<ResponseHeader> {
        let request = pb::MoveLeaderRequest {
            target_id: target.get(),
        };
        let r = self
            .client
            .unary(
                Policy::Write,
                false,
                self.pinned.as_ref(),
                request,
                |ch, req| async move { maintenance(ch).move_leader(req).await },
            )
            .await?;
        Ok(ResponseHeader::from_pb(r.header))
    }

    /// Streams a snapshot of the member's database into `writer` and
    /// returns the number of bytes written. etcd's snapshot ends in a
    /// SHA-256 of what comes before (`etcdctl snapshot save` checks it).
    /// Not retried: a failure mid-stream leaves `writer` holding a partial
    /// snapshot, which the caller must discard.
    ///
    /// ```no_run
    /// # async fn run(client: cairn_client::Client) -> cairn_client::Result<()> {
    /// let mut file = tokio::fs::File::create("backup.db").await?;
    /// let bytes = client.maintenance().snapshot(&mut file).await?;
    /// file.sync_all().await?;
    /// # let _ = bytes;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if writing fails, [`Error::SnapshotTruncated`] if the
    /// stream ends early.
    pub async fn snapshot<W>(&self, writer: &mut W) -> Result<u64>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let endpoint = match &self.pinned {
            Some(e) => Arc::clone(e),
            None => self.client.inner.pool.pick(&[]),
        };
        let mut client = maintenance(endpoint.channel.clone());
        let call = client.snapshot(pb::SnapshotRequest {});
        let mut stream = tokio::time::timeout(self.client.timeout, call)
            .await
            .map_err(|_| Error::Timeout(self.client.timeout))??
            .into_inner();
        let mut written: u64 = 0;
        let mut remaining: Option<u64> = None;
        while let Some(chunk) = stream.message().await? {
            writer.write_all(&chunk.blob).await?;
            written += chunk.blob.len() as u64;
            remaining = Some(chunk.remaining_bytes);
        }
        if remaining != Some(0) {
            return Err(Error::SnapshotTruncated);
        }
        writer.flush().await?;
        Ok(written)
    }
}

/// A Cluster client on `channel`.
fn cluster(channel: Channel) -> ClusterClient<Channel> {
    ClusterClient::new(channel).max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
}

/// A Maintenance client on `channel`.
fn maintenance(channel: Channel) -> MaintenanceClient<Channel> {
    MaintenanceClient::new(channel).max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
}
