//! The peer transport: what members say to each other, on the peer URLs.
//!
//! - `mod.rs`: [`Peers`], one reused gRPC connection per member, and the
//!   framing every call shares (an [`Envelope`] with the sender's cluster
//!   id, and a postcard body).
//! - `network`: openraft's `RaftNetwork` on top of it.
//! - `service`: the `cairnpeer.Peer` gRPC service a member serves, which
//!   hands openraft's RPCs to openraft and forwarded requests to the leader
//!   side of this member.
//!
//! The wire format is Cairn's own (`proto/proto/cairn/peer/peer.proto`), so
//! clients never see openraft: they only ever reach the client services.

mod network;
mod service;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairnpeer::peer_client::PeerClient;
use cairn_proto::cairnpeer::{Envelope, Reply};
use cairn_raft_storage::{Member, NodeId, Raft, Request, Response};
use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::ServerState;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};

pub(crate) use self::network::Network;
pub(crate) use self::service::{Contact, Leader, PeerService, PreVote, PreVoteReply};
use crate::cluster::{MemberChange, MemberChanged};

/// A request a follower hands to the leader.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Forwarded {
    /// Propose through the leader's batching proposer.
    Propose(Request),
    /// Confirm leadership and return the index reads must wait for.
    ReadIndex,
    /// Change the membership.
    ChangeMembers(MemberChange),
    /// Campaign now: the leader hands its leadership over (MoveLeader).
    Campaign,
    /// Renew a lease (a keepalive).
    LeaseRenew(i64),
    /// How long a lease has left.
    LeaseRemaining(i64),
    /// Propose these as one item of the leader's batch (one entry), and
    /// answer with a [`Response::Batch`] of theirs. Last, so that the
    /// variants before keep their encoding: a leader from before it
    /// refuses the message as undecodable, and nothing is proposed.
    ProposeBatch(Vec<Request>),
}

/// How a peer refuses a message it cannot decode (a member of another
/// version, or a bug); see [`PeerError::undecodable_there`].
pub(crate) const UNDECODABLE: &str = "undecodable peer message";

/// The leader's answer to a [`Forwarded`] request.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Answer {
    /// What applying the proposal produced, and the log index of its entry.
    Proposed(Response, u64),
    /// The log index a read on the follower must wait for.
    ReadIndex(u64),
    /// The membership after the change.
    ChangedMembers(MemberChanged),
    /// The campaign has started.
    Campaigning,
    /// A renewed lease's TTL, 0 if it is gone.
    LeaseTtl(i64),
    /// A lease's remaining seconds, if the leader has a deadline for it.
    LeaseRemaining(Option<i64>),
}

/// An error the leader answered a forwarded request with: the gRPC code
/// and message it would have given a client, so the follower relays it
/// unchanged.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Relayed {
    /// `tonic::Code` as an integer.
    pub(crate) code: i32,
    /// etcd's message.
    pub(crate) message: String,
}

impl From<tonic::Status> for Relayed {
    fn from(status: tonic::Status) -> Self {
        Relayed {
            code: status.code() as i32,
            message: status.message().to_owned(),
        }
    }
}

impl From<Relayed> for tonic::Status {
    fn from(r: Relayed) -> Self {
        tonic::Status::new(tonic::Code::from_i32(r.code), r.message)
    }
}

/// The member list a joining member asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MembersReply {
    /// The cluster's id.
    pub(crate) cluster_id: u64,
    /// Every member, learners included.
    pub(crate) members: Vec<(NodeId, Member)>,
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    /// The member has no usable peer URL.
    #[error("member {0:x} has no peer URL")]
    NoUrl(NodeId),
    /// A peer URL that is not a valid endpoint.
    #[error("member {id:x}: bad peer URL {url}: {reason}")]
    BadUrl {
        /// The member.
        id: NodeId,
        /// Its URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// Connecting failed: the request was certainly not delivered.
    #[error("member {id:x} is unreachable: {status}")]
    Unreachable {
        /// The member.
        id: NodeId,
        /// What the transport said.
        status: tonic::Status,
    },
    /// The call failed after it may have been delivered.
    #[error("call to member {id:x} failed: {status}")]
    Failed {
        /// The member.
        id: NodeId,
        /// What the transport or the peer said.
        status: tonic::Status,
    },
    /// A body that does not decode: a peer of another version, or a bug.
    #[error("undecodable message from member {id:x}: {reason}")]
    Codec {
        /// The member.
        id: NodeId,
        /// postcard's complaint.
        reason: String,
    },
}

impl PeerError {
    /// Whether the peer refused the message as undecodable: it did nothing
    /// with it.
    pub(crate) fn undecodable_there(&self) -> bool {
        matches!(self, PeerError::Failed { status, .. }
            if status.code() == tonic::Code::InvalidArgument
                && status.message().starts_with(UNDECODABLE))
    }

    /// Whether the request certainly never reached the peer.
    pub(crate) fn undelivered(&self) -> bool {
        matches!(
            self,
            PeerError::NoUrl(_) | PeerError::BadUrl { .. } | PeerError::Unreachable { .. }
        )
    }
}

/// One reused connection per member, dialled lazily, redialled only when
/// the member's first peer URL changes.
#[derive(Debug)]
pub(crate) struct Peers {
    cluster_id: u64,
    me: NodeId,
    heartbeat: Duration,
    /// The local address calls leave from; see [`Peers::leaving_from`].
    source: Option<IpAddr>,
    connections: Mutex<HashMap<NodeId, (String, PeerClient<Channel>)>>,
}

impl Peers {
    /// Connections for member `me` of cluster `cluster_id`. Connect
    /// attempts give up after a few heartbeat intervals.
    pub(crate) fn new(cluster_id: u64, me: NodeId, heartbeat: Duration) -> Self {
        Peers {
            cluster_id,
            me,
            heartbeat,
            source: None,
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// Calls leave from `source`, the address the peer listener is bound
    /// to (none when it listens on every address), so that a member's
    /// peer traffic carries its own address both ways and a firewall rule
    /// can name the member by address alone (the fault-injection tests on
    /// 127.0.0.x do).
    pub(crate) fn leaving_from(mut self, source: Option<IpAddr>) -> Self {
        self.source = source;
        self
    }

    /// The connection to member `id`, reached at the first of `peer_urls`.
    pub(crate) fn client(
        &self,
        id: NodeId,
        peer_urls: &[String],
    ) -> Result<PeerClient<Channel>, PeerError> {
        let url = peer_urls.first().ok_or(PeerError::NoUrl(id))?;
        let mut connections = self.connections.lock();
        if let Some((known, client)) = connections.get(&id) {
            if known == url {
                return Ok(client.clone());
            }
        }
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| PeerError::BadUrl {
                id,
                url: url.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(
                self.heartbeat
                    .saturating_mul(5)
                    .max(Duration::from_millis(500)),
            )
            .tcp_nodelay(true)
            .local_address(self.source)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let client = PeerClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        connections.insert(id, (url.clone(), client.clone()));
        Ok(client)
    }

    /// Wraps `body` for a call from this member.
    pub(crate) fn envelope<T: Serialize>(&self, body: &T) -> Envelope {
        Envelope {
            cluster_id: self.cluster_id,
            from: self.me,
            body: encode(body),
        }
    }

    /// This member's cluster id.
    pub(crate) fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// This member's id.
    pub(crate) fn me(&self) -> NodeId {
        self.me
    }

    /// Sends `request` to the leader `id` and returns its answer.
    pub(crate) async fn forward(
        &self,
        id: NodeId,
        leader: &Member,
        request: &Forwarded,
        timeout: Duration,
    ) -> Result<Result<Answer, Relayed>, PeerError> {
        let mut client = self.client(id, &leader.peer_urls)?;
        let mut call = tonic::Request::new(self.envelope(request));
        call.set_timeout(timeout);
        let reply = client
            .forward(call)
            .await
            .map_err(|status| classify(id, status))?;
        decode(id, &reply.into_inner())
    }
}

/// Asks the members at `peer_urls` (none of them this member) for the
/// cluster's member list, trying each in turn.
pub(crate) async fn fetch_members(
    peer_urls: &[String],
    timeout: Duration,
) -> Result<MembersReply, PeerError> {
    let mut last = PeerError::NoUrl(0);
    for url in peer_urls {
        let peers = Peers::new(0, 0, timeout / 5);
        let attempt = async {
            let mut client = peers.client(0, std::slice::from_ref(url))?;
            let mut call = tonic::Request::new(peers.envelope(&()));
            call.set_timeout(timeout);
            let reply = client
                .members(call)
                .await
                .map_err(|status| classify(0, status))?;
            decode::<MembersReply>(0, &reply.into_inner())
        };
        match attempt.await {
            Ok(reply) => return Ok(reply),
            Err(e) => {
                tracing::warn!(%url, error = %e, "could not fetch the member list");
                last = e;
            }
        }
    }
    Err(last)
}

/// Tells a connection failure (never delivered) from a failed call.
fn classify(id: NodeId, status: tonic::Status) -> PeerError {
    // Only a failed connect proves the call never left: tonic reports it
    // with a `ConnectError` among the status's sources. Other transport
    // failures (a reset or a keepalive timeout on an open connection) are
    // Unavailable with a source too, but the call may have been delivered.
    let mut source = std::error::Error::source(&status);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return PeerError::Unreachable { id, status };
        }
        source = error.source();
    }
    PeerError::Failed { id, status }
}

pub(crate) fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    postcard::to_allocvec(body).expect("invariant: Cairn's peer messages always serialize")
}

pub(crate) fn decode<T: DeserializeOwned>(id: NodeId, reply: &Reply) -> Result<T, PeerError> {
    postcard::from_bytes(&reply.body).map_err(|e| PeerError::Codec {
        id,
        reason: e.to_string(),
    })
}

/// Who should handle a request that needs the leader.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// This member leads.
    Here,
    /// Another member leads.
    There(NodeId, Member),
    /// Nobody leads, as far as this member knows.
    Nobody,
}

/// Why a request for the leader failed on its way there.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    /// No member leads.
    #[error("no leader")]
    NoLeader,
    /// The leader answered with an error, to be passed on unchanged.
    #[error(transparent)]
    Relayed(Relayed),
    /// The call failed.
    #[error(transparent)]
    Peer(PeerError),
    /// The leader answered with something else than was asked for.
    #[error("the leader answered a forwarded request with another kind of answer")]
    Mismatch,
    /// This member did not apply the leader's entry within the timeout.
    #[error("local apply stayed behind the leader")]
    Behind,
}

/// Routes requests that need the leader: tells whether this member leads,
/// forwards to the leader otherwise, and waits for local apply.
#[derive(Clone)]
pub(crate) struct Route {
    raft: Raft,
    peers: Arc<Peers>,
    me: NodeId,
    /// When a leader was last heard from.
    contact: Arc<Contact>,
    /// What this member's log held when it started; see
    /// [`Route::linearizable`].
    restarted: Restarted,
    election_timeout: Duration,
    timeout: Duration,
    /// Set while this leader hands leadership over (MoveLeader): it then
    /// proposes nothing new, so that the transferee can match its log and
    /// the voters' leader lease can run out (etcd's raft drops proposals
    /// during a transfer alike). Without it a steady writer keeps the
    /// transferee behind and the voters' lease alive, and the transfer
    /// times out.
    /// Leadership transfers under way (MoveLeader calls).
    transferring: Arc<AtomicUsize>,
}

/// The term of this member's vote and its last log index when it started.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Restarted {
    pub(crate) term: u64,
    pub(crate) last_index: u64,
}

/// Why [`Route::linearizable`] failed.
#[derive(Debug)]
pub(crate) enum LinearizableError {
    /// openraft's answer: not leader, no quorum, or stopped. Boxed: it is
    /// large.
    Raft(Box<RaftError<NodeId, CheckIsLeaderError<NodeId, Member>>>),
    /// The state machine did not catch up within the request timeout.
    Behind,
}

impl Route {
    /// `timeout` bounds a forwarded request.
    pub(crate) fn new(
        raft: Raft,
        peers: Arc<Peers>,
        me: NodeId,
        contact: Arc<Contact>,
        restarted: Restarted,
        election_timeout: Duration,
        timeout: Duration,
    ) -> Self {
        Route {
            raft,
            peers,
            me,
            contact,
            restarted,
            election_timeout,
            timeout,
            transferring: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// On the leader: confirms leadership and waits until the state
    /// machine has applied the read index (openraft's
    /// `ensure_linearizable`); returns the read index.
    ///
    /// openraft 0.9 lets a leader that restarts (kill -9 and back within
    /// an election timeout) resume leading in its own term without a new
    /// blank entry, and takes its read index from the commit index it
    /// saved, which need not be durable, and from its first entry of the
    /// term. Writes it acknowledged before the crash can lie above both,
    /// and a read would miss them. So while this member leads in the term
    /// it started in, the read index is at least its last log index at
    /// the start: every write it acknowledged is in its own log.
    pub(crate) async fn linearizable(&self) -> Result<u64, LinearizableError> {
        let read = self
            .raft
            .ensure_linearizable()
            .await
            .map_err(|e| LinearizableError::Raft(Box::new(e)))?
            .map_or(0, |id| id.index);
        let term = self.raft.metrics().borrow().current_term;
        if term != self.restarted.term || read >= self.restarted.last_index {
            return Ok(read);
        }
        self.applied(self.restarted.last_index)
            .await
            .map_err(|_| LinearizableError::Behind)?;
        Ok(self.restarted.last_index)
    }

    /// Whether this member may serve a linearizable read from its own state
    /// machine at once: it leads, its cluster's only voter is itself, that
    /// membership is applied (so committed, not just appended), and it has
    /// applied its whole log from before it started (see
    /// [`Route::linearizable`]).
    ///
    /// Then no other member can lead or commit, and every write it
    /// acknowledged was applied here before the answer went out, so a
    /// confirmation round proves nothing more. etcd's raft answers a
    /// single voter's ReadIndex at once alike. openraft publishes its
    /// metrics before it waits for each next message, and a membership
    /// change that adds a voter is in them long before the new voter can
    /// run for election (it must first receive the entry, then miss an
    /// election timeout of heartbeats).
    pub(crate) fn reads_alone(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let applied = m.last_applied.map_or(0, |id| id.index);
        let membership = &m.membership_config;
        m.state == ServerState::Leader
            && applied >= self.restarted.last_index
            && membership.log_id().map_or(0, |id| id.index) <= applied
            && membership.membership().voter_ids().eq([self.me])
    }

    /// Whether this leader is handing leadership over; see
    /// [`Route::begin_transfer`].
    pub(crate) fn transferring(&self) -> bool {
        self.transferring.load(Ordering::Acquire) > 0
    }

    /// Marks the start of a leadership transfer: until each one ends, the
    /// proposer refuses new requests with "no leader", which clients retry.
    pub(crate) fn begin_transfer(&self) {
        self.transferring.fetch_add(1, Ordering::AcqRel);
    }

    /// Marks the end of a transfer; true when no other is under way.
    pub(crate) fn end_transfer(&self) -> bool {
        self.transferring.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Where the leader is, by this member's latest knowledge. As in etcd,
    /// a leader is none once it has gone an election timeout without a
    /// quorum's acknowledgement (etcd's leader steps down: CheckQuorum), or
    /// a follower without hearing from it (etcd's follower forgets it when
    /// it starts an election).
    pub(crate) fn target(&self) -> Target {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let election_timeout = u64::try_from(self.election_timeout.as_millis()).unwrap_or(u64::MAX);
        match metrics.current_leader {
            Some(id) if id == self.me => {
                if metrics
                    .millis_since_quorum_ack
                    .is_some_and(|ms| ms >= election_timeout)
                {
                    Target::Nobody
                } else {
                    Target::Here
                }
            }
            Some(_) if !self.contact.recent(self.election_timeout) => Target::Nobody,
            Some(id) => match metrics.membership_config.membership().get_node(&id) {
                Some(member) => Target::There(id, member.clone()),
                None => Target::Nobody,
            },
            None => Target::Nobody,
        }
    }

    /// Whether this member is a learner, which serves only serializable
    /// reads, as in etcd.
    pub(crate) fn learner(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        membership.get_node(&self.me).is_some() && !membership.voter_ids().any(|v| v == self.me)
    }

    /// Sends `request` to the leader `id`.
    pub(crate) async fn forward(
        &self,
        id: NodeId,
        leader: &Member,
        request: &Forwarded,
    ) -> Result<Answer, ForwardError> {
        match self.peers.forward(id, leader, request, self.timeout).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(relayed)) => Err(ForwardError::Relayed(relayed)),
            Err(e) => Err(ForwardError::Peer(e)),
        }
    }

    /// Waits until this member has applied the entry at `index`.
    pub(crate) async fn applied(&self, index: u64) -> Result<(), ForwardError> {
        self.raft
            .wait(Some(self.timeout))
            .applied_index_at_least(Some(index), "forwarded request")
            .await
            .map(|_| ())
            .map_err(|_| ForwardError::Behind)
    }
}
