//! Leases: grant, revoke, time-to-live, list, and [`LeaseKeepAlive`], a
//! task that renews a lease at about a third of its TTL and reports when
//! it is lost.

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb as pb;
use futures::channel::mpsc as fmpsc;
use pb::lease_client::LeaseClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::client::{Client, MAX_DECODING_MESSAGE_SIZE};
use crate::error::{Error, Result};
use crate::transport::{never_sent, Policy, Pool};
use crate::types::{LeaseId, ResponseHeader};

/// The shortest pause between two renewals, whatever the TTL.
const MIN_RENEW_INTERVAL: Duration = Duration::from_millis(200);
/// Pause between attempts to reach a member after a renewal failed.
const RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// The answer to a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGrantResponse {
    /// Who answered.
    pub header: ResponseHeader,
    /// The new lease.
    pub id: LeaseId,
    /// Its TTL in seconds (the server may raise a short one to its
    /// minimum).
    pub ttl: i64,
}

/// A live lease's remaining time, from [`Client::lease_time_to_live`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTimeToLive {
    /// Who answered.
    pub header: ResponseHeader,
    /// The lease.
    pub id: LeaseId,
    /// Seconds left.
    pub ttl: i64,
    /// The TTL it was granted with.
    pub granted_ttl: i64,
    /// The keys attached to it, if asked for.
    pub keys: Vec<Vec<u8>>,
}

impl Client {
    /// Grants a lease of `ttl` seconds; with `id`, under that ID.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseExists`], [`Error::LeaseTtlTooLarge`],
    /// [`Error::Ambiguous`] if the outcome is unknown.
    pub async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrantResponse> {
        let request = pb::LeaseGrantRequest {
            ttl,
            id: LeaseId::wire(id),
        };
        let r = self
            .unary(Policy::Write, true, None, request, |ch, req| async move {
                lease(ch).lease_grant(req).await
            })
            .await?;
        if !r.error.is_empty() {
            return Err(Error::Rpc(tonic::Status::unknown(r.error)));
        }
        Ok(LeaseGrantResponse {
            header: ResponseHeader::from_pb(r.header),
            id: LeaseId::new(r.id),
            ttl: r.ttl,
        })
    }

    /// Revokes a lease, deleting its keys.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseNotFound`], [`Error::Ambiguous`] if the outcome is
    /// unknown.
    pub async fn lease_revoke(&self, id: LeaseId) -> Result<ResponseHeader> {
        let request = pb::LeaseRevokeRequest { id: id.get() };
        let r = self
            .unary(Policy::Write, true, None, request, |ch, req| async move {
                lease(ch).lease_revoke(req).await
            })
            .await?;
        Ok(ResponseHeader::from_pb(r.header))
    }

    /// A lease's remaining time, with its keys if `keys`; `None` if it does
    /// not exist (expired or revoked).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] or [`Error::Unavailable`] if no member answered.
    pub async fn lease_time_to_live(
        &self,
        id: LeaseId,
        keys: bool,
    ) -> Result<Option<LeaseTimeToLive>> {
        let request = pb::LeaseTimeToLiveRequest { id: id.get(), keys };
        let result = self
            .unary(Policy::Read, true, None, request, |ch, req| async move {
                lease(ch).lease_time_to_live(req).await
            })
            .await;
        let r = match result {
            Ok(r) => r,
            Err(Error::LeaseNotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        if r.ttl < 0 {
            return Ok(None);
        }
        Ok(Some(LeaseTimeToLive {
            header: ResponseHeader::from_pb(r.header),
            id: LeaseId::new(r.id),
            ttl: r.ttl,
            granted_ttl: r.granted_ttl,
            keys: r.keys,
        }))
    }

    /// Every live lease.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] or [`Error::Unavailable`] if no member answered.
    pub async fn leases(&self) -> Result<Vec<LeaseId>> {
        let r = self
            .unary(
                Policy::Read,
                true,
                None,
                pb::LeaseLeasesRequest {},
                |ch, req| async move { lease(ch).lease_leases(req).await },
            )
            .await?;
        Ok(r.leases.into_iter().map(|l| LeaseId::new(l.id)).collect())
    }

    /// Renews a lease once; returns its TTL in seconds.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseNotFound`] if it does not exist, [`Error::Timeout`] if
    /// no member answered in time.
    pub async fn lease_keep_alive_once(&self, id: LeaseId) -> Result<i64> {
        let deadline = Instant::now() + self.timeout;
        let (mut stream, ttl) = renew_once(&self.inner.pool, None, id, deadline)
            .await
            .ok_or(Error::Timeout(self.timeout))?;
        stream.close();
        if ttl <= 0 {
            return Err(Error::LeaseNotFound);
        }
        Ok(ttl)
    }

    /// Starts renewing a lease in the background, at about a third of its
    /// TTL, failing over between endpoints, until the handle is dropped.
    /// Returns after the first renewal.
    ///
    /// ```no_run
    /// # async fn run(client: cairn_client::Client) -> cairn_client::Result<()> {
    /// use cairn_client::Put;
    ///
    /// let lease = client.lease_grant(10, None).await?;
    /// let mut keep_alive = client.lease_keep_alive(lease.id).await?;
    /// client.put(Put::new("me", "alive").with_lease(lease.id)).await?;
    /// let lost = keep_alive.lost().await; // resolves only if the lease is lost
    /// eprintln!("lease lost: {lost:?}");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::LeaseNotFound`] if it does not exist, [`Error::Timeout`] if
    /// no member answered within the request timeout.
    pub async fn lease_keep_alive(&self, id: LeaseId) -> Result<LeaseKeepAlive> {
        let sent = Instant::now();
        let (stream, ttl) = renew_once(&self.inner.pool, None, id, sent + self.timeout)
            .await
            .ok_or(Error::Timeout(self.timeout))?;
        if ttl <= 0 {
            return Err(Error::LeaseNotFound);
        }
        let (state_tx, state) = watch::channel(KeepAliveState::Alive { ttl });
        let keeper = Keeper {
            pool: Arc::clone(&self.inner.pool),
            timeout: self.timeout,
            id,
            state: state_tx,
        };
        let task = tokio::spawn(keeper.run(stream, ttl, sent));
        Ok(LeaseKeepAlive { id, state, task })
    }
}

/// A Lease client on `channel`.
fn lease(channel: Channel) -> LeaseClient<Channel> {
    LeaseClient::new(channel).max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
}

/// Why a kept-alive lease is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseLost {
    /// A member said the lease does not exist: it expired or was revoked.
    NotFound,
    /// No renewal succeeded before the TTL (counted from the last renewal
    /// sent) ran out: the lease has probably expired.
    Unreachable,
}

/// Where a [`LeaseKeepAlive`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAliveState {
    /// Renewed; `ttl` seconds granted by the last renewal.
    Alive {
        /// The TTL the last renewal granted.
        ttl: i64,
    },
    /// The lease is lost; the task has stopped.
    Lost(LeaseLost),
}

/// The background renewal of one lease, from [`Client::lease_keep_alive`].
/// Dropping it stops renewing (the lease then expires after its TTL).
#[derive(Debug)]
pub struct LeaseKeepAlive {
    id: LeaseId,
    state: watch::Receiver<KeepAliveState>,
    task: JoinHandle<()>,
}

impl LeaseKeepAlive {
    /// The lease.
    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// The current state.
    pub fn state(&self) -> KeepAliveState {
        *self.state.borrow()
    }

    /// Resolves once the lease is lost.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: call it again to keep waiting.
    pub async fn lost(&mut self) -> LeaseLost {
        loop {
            if let KeepAliveState::Lost(why) = *self.state.borrow_and_update() {
                return why;
            }
            if self.state.changed().await.is_err() {
                // The task ended without saying: only if it was aborted.
                return LeaseLost::Unreachable;
            }
        }
    }

    /// Waits for the next renewal and returns what it granted:
    /// `Alive { ttl }` once per renewal (so a caller can show each, as
    /// `etcdctl lease keep-alive` does), or `Lost` once the lease is lost,
    /// and from then on.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a renewal not yet returned is returned by the next call.
    pub async fn renewed(&mut self) -> KeepAliveState {
        match self.state.changed().await {
            Ok(()) => *self.state.borrow_and_update(),
            // The task has ended: after saying why, or (only if it was
            // aborted) without.
            Err(_) => match *self.state.borrow() {
                lost @ KeepAliveState::Lost(_) => lost,
                KeepAliveState::Alive { .. } => KeepAliveState::Lost(LeaseLost::Unreachable),
            },
        }
    }
}

impl Drop for LeaseKeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An open keep-alive stream.
struct KeepAliveStream {
    requests: fmpsc::UnboundedSender<pb::LeaseKeepAliveRequest>,
    responses: Streaming<pb::LeaseKeepAliveResponse>,
}

impl KeepAliveStream {
    fn close(&mut self) {
        self.requests.close_channel();
    }

    /// Sends one renewal and waits for its answer until `deadline`; the
    /// TTL, 0 if the lease is gone, `None` if the stream failed.
    async fn renew(&mut self, id: LeaseId, deadline: Instant) -> Option<i64> {
        self.requests
            .unbounded_send(pb::LeaseKeepAliveRequest { id: id.get() })
            .ok()?;
        match tokio::time::timeout_at(deadline, self.responses.message()).await {
            Ok(Ok(Some(r))) => Some(r.ttl),
            _ => None,
        }
    }
}

/// Opens a keep-alive stream and renews once, trying endpoints until
/// `deadline`. Keep-alive is idempotent, so any failure is retried.
async fn renew_once(
    pool: &Pool,
    mut stream: Option<KeepAliveStream>,
    id: LeaseId,
    deadline: Instant,
) -> Option<(KeepAliveStream, i64)> {
    let mut tried: Vec<String> = Vec::new();
    loop {
        if let Some(mut open) = stream.take() {
            if let Some(ttl) = open.renew(id, deadline).await {
                return Some((open, ttl));
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        let endpoint = pool.pick(&tried);
        let (requests, rx) = fmpsc::unbounded();
        // grpc-go sends headers with the first message, so queue the
        // first renewal before waiting for the call.
        let _ = requests.unbounded_send(pb::LeaseKeepAliveRequest { id: id.get() });
        let mut request = tonic::Request::new(rx);
        request.metadata_mut().insert(
            "hasleader",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        let mut client = lease(endpoint.channel.clone());
        let call = client.lease_keep_alive(request);
        match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(response)) => {
                let mut responses = response.into_inner();
                match tokio::time::timeout_at(deadline, responses.message()).await {
                    Ok(Ok(Some(r))) => {
                        return Some((
                            KeepAliveStream {
                                requests,
                                responses,
                            },
                            r.ttl,
                        ))
                    }
                    Ok(Ok(None) | Err(_)) => {}
                    Err(_) => return None,
                }
            }
            Ok(Err(status)) => {
                if never_sent(&status) || Error::from_status(status).refused_before_processing() {
                    endpoint.mark_unhealthy(pool.options.unhealthy_backoff);
                }
            }
            Err(_) => return None,
        }
        tried.push(endpoint.url.clone());
        if tried.len() >= pool.urls().len() {
            tried.clear();
            let pause = RETRY_INTERVAL.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
        }
    }
}

/// The renewal task behind a [`LeaseKeepAlive`].
struct Keeper {
    pool: Arc<Pool>,
    timeout: Duration,
    id: LeaseId,
    state: watch::Sender<KeepAliveState>,
}

impl Keeper {
    /// Renews at a third of the TTL. The lease is safe until the last
    /// renewal *sent* plus its TTL (the server counts from when it received
    /// it, later): past that instant with no renewal, it is reported lost.
    async fn run(self, stream: KeepAliveStream, mut ttl: i64, mut sent: Instant) {
        let mut stream = Some(stream);
        loop {
            let ttl_duration = Duration::from_secs(u64::try_from(ttl).unwrap_or(1));
            let expires = sent + ttl_duration;
            let renew_at = sent + (ttl_duration / 3).max(MIN_RENEW_INTERVAL);
            tokio::time::sleep_until(renew_at).await;
            let attempt = Instant::now();
            // One answer per renewal, within the request timeout; after a
            // failure, other endpoints until the lease would expire.
            let deadline = expires.max(attempt + MIN_RENEW_INTERVAL);
            let first = stream.take();
            let result = match first {
                Some(mut open) => match open
                    .renew(self.id, deadline.min(attempt + self.timeout))
                    .await
                {
                    Some(t) => Some((open, t)),
                    None => renew_once(&self.pool, None, self.id, deadline).await,
                },
                None => renew_once(&self.pool, None, self.id, deadline).await,
            };
            match result {
                Some((_, t)) if t <= 0 => {
                    let _ = self.state.send(KeepAliveState::Lost(LeaseLost::NotFound));
                    return;
                }
                Some((open, t)) => {
                    stream = Some(open);
                    ttl = t;
                    sent = attempt;
                    let _ = self.state.send(KeepAliveState::Alive { ttl });
                }
                None => {
                    let _ = self
                        .state
                        .send(KeepAliveState::Lost(LeaseLost::Unreachable));
                    return;
                }
            }
        }
    }
}
