//! Distributed locks and leader elections over a [`Session`], through the
//! server's Lock and Election services (etcd's v3lock and v3election).
//!
//! A session is a lease kept alive in the background. A lock or a campaign
//! puts a key attached to it, so everything the session holds is released
//! when the session ends: closed, dropped (its lease is revoked), or lost
//! (its lease expired because this process could not renew it). Watch
//! [`Session::lost`] to learn that you no longer hold what you held.

use std::time::Duration;

use cairn_proto::v3electionpb as epb;
use cairn_proto::v3lockpb as lpb;
use epb::election_client::ElectionClient;
use futures::{Stream, StreamExt};
use lpb::lock_client::LockClient;
use tonic::transport::Channel;

use crate::client::{Client, MAX_DECODING_MESSAGE_SIZE};
use crate::error::{Error, Result};
use crate::lease::{LeaseKeepAlive, LeaseLost};
use crate::transport::Policy;
use crate::types::{KeyValue, LeaseId, ResponseHeader, Revision};

/// How long a lock or campaign may wait for its turn: as long as it takes
/// (bound it with `tokio::time::timeout`; dropping the future withdraws
/// the request).
const WAIT_FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// A lease kept alive for as long as the session lives; locks and
/// campaigns hang off it.
///
/// Dropping a session stops the keep-alive and revokes the lease in the
/// background (when a tokio runtime is still there), releasing its locks
/// and leadership at once; [`Session::close`] does the same and waits.
#[derive(Debug)]
pub struct Session {
    client: Client,
    keep_alive: LeaseKeepAlive,
    closed: bool,
}

impl Session {
    /// A new session on a fresh lease of `ttl` seconds: how long its locks
    /// outlive this process if it dies.
    ///
    /// # Errors
    ///
    /// The grant's or the first keep-alive's errors.
    pub async fn new(client: &Client, ttl: i64) -> Result<Session> {
        let lease = client.lease_grant(ttl, None).await?;
        let keep_alive = match client.lease_keep_alive(lease.id).await {
            Ok(k) => k,
            Err(e) => {
                let _ = client.lease_revoke(lease.id).await;
                return Err(e);
            }
        };
        Ok(Session {
            client: client.clone(),
            keep_alive,
            closed: false,
        })
    }

    /// The session's lease.
    pub fn lease_id(&self) -> LeaseId {
        self.keep_alive.id()
    }

    /// Resolves once the lease is lost: every lock and leadership of the
    /// session is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn lost(&mut self) -> LeaseLost {
        self.keep_alive.lost().await
    }

    /// Ends the session: revokes its lease, releasing everything it holds.
    ///
    /// # Errors
    ///
    /// The revoke's errors ([`Error::LeaseNotFound`] is not one: the lease
    /// is gone either way).
    pub async fn close(mut self) -> Result<()> {
        self.closed = true;
        match self.client.lease_revoke(self.lease_id()).await {
            Ok(_) | Err(Error::LeaseNotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            let id = self.lease_id();
            runtime.spawn(async move {
                if let Err(error) = client.lease_revoke(id).await {
                    tracing::debug!(lease = %id, %error, "revoking a dropped session's lease");
                }
            });
        }
    }
}

/// A held lock: the key that holds it (owned by the session's lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockKey {
    /// Who answered.
    pub header: ResponseHeader,
    /// The key; deleting it (or ending the session) releases the lock.
    pub key: Vec<u8>,
}

/// A won election: the key that holds leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderKey {
    /// The election's name.
    pub name: Vec<u8>,
    /// The key holding leadership.
    pub key: Vec<u8>,
    /// The key's create revision.
    pub revision: Revision,
    /// The session's lease.
    pub lease: LeaseId,
}

impl LeaderKey {
    fn into_pb(self) -> epb::LeaderKey {
        epb::LeaderKey {
            name: self.name,
            key: self.key,
            rev: self.revision.get(),
            lease: self.lease.get(),
        }
    }
}

impl Client {
    /// Acquires the lock `name` for `session`, waiting for as long as it is
    /// held by others. Dropping the future withdraws the request.
    ///
    /// ```no_run
    /// # async fn run(client: cairn_client::Client) -> cairn_client::Result<()> {
    /// use cairn_client::Session;
    ///
    /// let session = Session::new(&client, 10).await?;
    /// let lock = client.lock("jobs/lock", &session).await?;
    /// // ... critical section ...
    /// client.unlock(&lock).await?;
    /// session.close().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::SessionExpired`] if the session's lease expired while
    /// waiting, [`Error::Ambiguous`] if the connection broke while waiting
    /// (the lock may be held: close the session to be sure it is not).
    pub async fn lock(&self, name: impl Into<Vec<u8>>, session: &Session) -> Result<LockKey> {
        let request = lpb::LockRequest {
            name: name.into(),
            lease: session.lease_id().get(),
        };
        let r = self
            .with_request_timeout(WAIT_FOREVER)
            .unary(Policy::Write, true, None, request, |ch, req| async move {
                lock(ch).lock(req).await
            })
            .await?;
        Ok(LockKey {
            header: ResponseHeader::from_pb(r.header),
            key: r.key,
        })
    }

    /// Releases a lock.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] or [`Error::Unavailable`] if no member answered.
    pub async fn unlock(&self, lock_key: &LockKey) -> Result<ResponseHeader> {
        let request = lpb::UnlockRequest {
            key: lock_key.key.clone(),
        };
        // Deleting a key twice is harmless: retried like a read.
        let r = self
            .unary(Policy::Read, true, None, request, |ch, req| async move {
                lock(ch).unlock(req).await
            })
            .await?;
        Ok(ResponseHeader::from_pb(r.header))
    }

    /// Campaigns in election `name` with `value`, waiting until this
    /// session leads. Dropping the future withdraws the candidacy.
    ///
    /// # Errors
    ///
    /// [`Error::SessionExpired`] if the lease expired while waiting,
    /// [`Error::Ambiguous`] if the connection broke while waiting.
    pub async fn campaign(
        &self,
        name: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        session: &Session,
    ) -> Result<LeaderKey> {
        let request = epb::CampaignRequest {
            name: name.into(),
            lease: session.lease_id().get(),
            value: value.into(),
        };
        let r = self
            .with_request_timeout(WAIT_FOREVER)
            .unary(Policy::Write, true, None, request, |ch, req| async move {
                election(ch).campaign(req).await
            })
            .await?;
        let leader = r.leader.unwrap_or_default();
        Ok(LeaderKey {
            name: leader.name,
            key: leader.key,
            revision: Revision::new(leader.rev),
            lease: LeaseId::new(leader.lease),
        })
    }

    /// Announces a new value as the leader.
    ///
    /// # Errors
    ///
    /// [`Error::ElectionNotLeader`] if `leader` no longer leads.
    pub async fn proclaim(
        &self,
        leader: &LeaderKey,
        value: impl Into<Vec<u8>>,
    ) -> Result<ResponseHeader> {
        let request = epb::ProclaimRequest {
            leader: Some(leader.clone().into_pb()),
            value: value.into(),
        };
        let r = self
            .unary(Policy::Write, true, None, request, |ch, req| async move {
                election(ch).proclaim(req).await
            })
            .await?;
        Ok(ResponseHeader::from_pb(r.header))
    }

    /// The current leader's key and value, `None` if nobody leads.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] or [`Error::Unavailable`] if no member answered.
    pub async fn leader(&self, name: impl Into<Vec<u8>>) -> Result<Option<KeyValue>> {
        let request = epb::LeaderRequest { name: name.into() };
        let result = self
            .unary(Policy::Read, true, None, request, |ch, req| async move {
                election(ch).leader(req).await
            })
            .await;
        match result {
            Ok(r) => Ok(r.kv.map(KeyValue::from_pb)),
            Err(Error::ElectionNoLeader) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Gives up leadership.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] or [`Error::Unavailable`] if no member answered.
    pub async fn resign(&self, leader: LeaderKey) -> Result<ResponseHeader> {
        let request = epb::ResignRequest {
            leader: Some(leader.into_pb()),
        };
        // Deleting the leader key twice is harmless: retried like a read.
        let r = self
            .unary(Policy::Read, true, None, request, |ch, req| async move {
                election(ch).resign(req).await
            })
            .await?;
        Ok(ResponseHeader::from_pb(r.header))
    }

    /// A stream of the election's leaders: the current one first (once
    /// there is one), then each change. It ends if the connection breaks;
    /// observe again to continue.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] or [`Error::Unavailable`] if no member answered.
    pub async fn observe(
        &self,
        name: impl Into<Vec<u8>>,
    ) -> Result<impl Stream<Item = Result<KeyValue>> + Send + 'static> {
        let request = epb::LeaderRequest { name: name.into() };
        let stream = self
            .with_request_timeout(WAIT_FOREVER)
            .unary(Policy::Read, true, None, request, |ch, req| async move {
                election(ch).observe(req).await
            })
            .await?;
        Ok(stream.map(|item| match item {
            Ok(r) => Ok(r.kv.map(KeyValue::from_pb).unwrap_or_default()),
            Err(status) => Err(Error::from_status(status)),
        }))
    }
}

/// A Lock client on `channel`.
fn lock(channel: Channel) -> LockClient<Channel> {
    LockClient::new(channel).max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
}

/// An Election client on `channel`.
fn election(channel: Channel) -> ElectionClient<Channel> {
    ElectionClient::new(channel).max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
}
