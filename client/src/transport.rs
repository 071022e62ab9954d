//! Endpoints, balancing, failover and the retry policy.
//!
//! [`Pool`] holds one lazily connecting tonic [`Channel`] per endpoint
//! (tonic redials a broken connection on the next request). Requests go
//! round-robin over the endpoints not marked unhealthy; an endpoint is
//! marked unhealthy for a while when it cannot be connected to or says it
//! has no leader (or is a learner).
//!
//! # The retry policy
//!
//! [`Pool::unary`] runs one unary call under one deadline (the request
//! timeout) and decides after each failed attempt whether to try another
//! endpoint:
//!
//! | the attempt failed with | [`Policy::Read`] | [`Policy::Write`] |
//! |---|---|---|
//! | connect error (the request never left this process) | retry | retry |
//! | a refusal made before processing ("no leader", "leader changed", "too many requests", learner) | retry | retry |
//! | any other Unavailable, or a transport failure after sending (timeout, server stopped, connection lost mid-call) | retry | [`Error::Ambiguous`] |
//! | the deadline passed while the call was in flight | [`Error::Timeout`] | [`Error::Ambiguous`] |
//! | an etcd error (compacted, lease not found, …) | returned | returned |
//!
//! A Txn with a write in either branch is a [`Policy::Write`]: it is never
//! sent twice unless the first attempt provably never reached a server
//! (etcd #18424, where a retried txn was applied twice).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint as TonicEndpoint};
use tonic::Status;

use crate::error::{Error, Result};
use crate::options::ConnectOptions;

/// etcd's metadata key asking a member to refuse requests while it has no
/// leader (clientv3's `WithRequireLeader`).
const REQUIRE_LEADER_KEY: &str = "hasleader";
/// First pause after every endpoint failed once; doubled up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(25);
/// Longest pause between rounds of retries.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Whether a call may be sent again after an attempt whose outcome is
/// unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Repeating it changes nothing: retried on any transient failure.
    Read,
    /// Repeating it could apply it twice: retried only when the attempt
    /// provably never reached a server, or the server refused it before
    /// processing.
    Write,
}

/// One endpoint: its URL, its channel and its health.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) url: String,
    pub(crate) channel: Channel,
    /// Skipped by [`Pool::pick`] until then. A std mutex: held only to read
    /// or write the instant, never across an await.
    unhealthy_until: Mutex<Option<Instant>>,
}

impl Endpoint {
    fn is_healthy(&self, now: Instant) -> bool {
        let until = self
            .unhealthy_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        until.is_none_or(|t| t <= now)
    }

    pub(crate) fn mark_unhealthy(&self, backoff: Duration) {
        let mut until = self
            .unhealthy_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *until = Some(Instant::now() + backoff);
    }

    fn mark_healthy(&self) {
        let mut until = self
            .unhealthy_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *until = None;
    }
}

/// The endpoints and how to reach them.
#[derive(Debug)]
pub(crate) struct Pool {
    pub(crate) options: ConnectOptions,
    /// Replaced as a whole by discovery. A std lock: never held across an
    /// await.
    endpoints: RwLock<Vec<Arc<Endpoint>>>,
    /// Round-robin position.
    next: AtomicUsize,
}

impl Pool {
    /// A pool over `urls`, none connected yet.
    ///
    /// # Errors
    ///
    /// [`Error::NoEndpoints`], or [`Error::InvalidEndpoint`] for a URL that
    /// is not `http://host:port` (or `host:port`).
    pub(crate) fn new(urls: &[String], options: ConnectOptions) -> Result<Self> {
        if urls.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let endpoints = urls
            .iter()
            .map(|url| new_endpoint(url, &options).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            options,
            endpoints: RwLock::new(endpoints),
            next: AtomicUsize::new(0),
        })
    }

    /// The endpoints' URLs, in order.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.read().iter().map(|e| e.url.clone()).collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Endpoint>>> {
        self.endpoints.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the endpoints with `urls`, keeping the channels of those
    /// that stay. An empty list or one with a bad URL changes nothing.
    pub(crate) fn set_urls(&self, urls: &[String]) -> Result<()> {
        if urls.is_empty() {
            return Ok(());
        }
        let old = self.read().clone();
        let mut new = Vec::with_capacity(urls.len());
        for url in urls {
            let url = normalize(url)?;
            match old.iter().find(|e| e.url == url) {
                Some(kept) => new.push(Arc::clone(kept)),
                None => new.push(Arc::new(new_endpoint(&url, &self.options)?)),
            }
        }
        *self.endpoints.write().unwrap_or_else(|p| p.into_inner()) = new;
        Ok(())
    }

    /// The next endpoint round-robin, preferring healthy ones not in
    /// `tried`; when every endpoint was tried or is unhealthy, the next one
    /// regardless.
    pub(crate) fn pick(&self, tried: &[String]) -> Arc<Endpoint> {
        let endpoints = self.read();
        let now = Instant::now();
        let n = endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates = (0..n).map(|i| &endpoints[(start + i) % n]);
        let best = candidates
            .clone()
            .find(|e| e.is_healthy(now) && !tried.contains(&e.url))
            .or_else(|| candidates.clone().find(|e| !tried.contains(&e.url)))
            .or_else(|| candidates.clone().next());
        Arc::clone(best.expect("invariant: a pool has at least one endpoint"))
    }

    /// The endpoint with this URL, or a new one (not added to the pool)
    /// for a URL the pool does not hold.
    pub(crate) fn endpoint(&self, url: &str) -> Result<Arc<Endpoint>> {
        let url = normalize(url)?;
        if let Some(e) = self.read().iter().find(|e| e.url == url) {
            return Ok(Arc::clone(e));
        }
        Ok(Arc::new(new_endpoint(&url, &self.options)?))
    }

    /// Runs `call` under `policy` within `timeout`, failing over between
    /// endpoints as the module docs say. `pinned` sends every attempt to
    /// that endpoint instead.
    pub(crate) async fn unary<Req, Resp, F, Fut>(
        &self,
        spec: CallSpec<'_>,
        request: Req,
        mut call: F,
    ) -> Result<Resp>
    where
        Req: Clone,
        F: FnMut(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let deadline = Instant::now() + spec.timeout;
        let mut tried: Vec<String> = Vec::new();
        let mut backoff = FIRST_BACKOFF;
        let mut last: Option<Error> = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(match last {
                    // Nothing ever reached a server, or only reads did.
                    Some(error) => exhausted(error),
                    None => Error::Timeout(spec.timeout),
                });
            }
            let endpoint = match spec.pinned {
                Some(e) => Arc::clone(e),
                None => self.pick(&tried),
            };
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(remaining);
            if spec.require_leader && self.options.require_leader {
                req.metadata_mut()
                    .insert(REQUIRE_LEADER_KEY, MetadataValue::from_static("true"));
            }
            let status =
                match tokio::time::timeout(remaining, call(endpoint.channel.clone(), req)).await {
                    Ok(Ok(response)) => {
                        endpoint.mark_healthy();
                        return Ok(response.into_inner());
                    }
                    Ok(Err(status)) => status,
                    Err(_) => {
                        return Err(match spec.policy {
                            Policy::Read => Error::Timeout(spec.timeout),
                            Policy::Write => Error::Ambiguous {
                                status: Status::deadline_exceeded(format!(
                                    "cairn-client: no answer within the request timeout of {:?}",
                                    spec.timeout
                                )),
                            },
                        });
                    }
                };
            let not_sent = never_sent(&status);
            // A status with a source was made here from a transport error
            // (a broken connection, a reset stream); the server's own
            // statuses have none.
            let local = std::error::Error::source(&status).is_some();
            let error = Error::from_status(status);
            if not_sent || error.refused_before_processing() {
                endpoint.mark_unhealthy(self.options.unhealthy_backoff);
            }
            let retry = match spec.policy {
                Policy::Read => not_sent || local || error.is_transient(),
                Policy::Write => not_sent || error.refused_before_processing(),
            };
            if !retry {
                return Err(match (spec.policy, error) {
                    (Policy::Write, error) if maybe_applied(&error) => Error::Ambiguous {
                        status: into_status(error),
                    },
                    (_, error) => error,
                });
            }
            tracing::debug!(endpoint = %endpoint.url, error = %error, "retrying on another endpoint");
            last = Some(error);
            tried.push(endpoint.url.clone());
            if spec.pinned.is_some() || tried.len() >= self.read().len() {
                tried.clear();
                tokio::time::sleep(backoff.min(remaining)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// How one unary call is made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallSpec<'a> {
    pub(crate) policy: Policy,
    /// Send `hasleader` (if the options allow): linearizable requests.
    pub(crate) require_leader: bool,
    pub(crate) timeout: Duration,
    pub(crate) pinned: Option<&'a Arc<Endpoint>>,
}

/// The error to return when the deadline passes between attempts.
fn exhausted(error: Error) -> Error {
    match error {
        Error::Unavailable { status } => Error::Unavailable { status },
        other => other,
    }
}

/// Whether a write that failed this way may have been applied.
fn maybe_applied(error: &Error) -> bool {
    use tonic::Code::*;
    match error {
        Error::ServerUnavailable { .. } | Error::Unavailable { .. } => true,
        Error::Rpc(status) => matches!(
            status.code(),
            Cancelled | DeadlineExceeded | Unknown | Internal | Unavailable | Aborted
        ),
        _ => false,
    }
}

fn into_status(error: Error) -> Status {
    match error {
        Error::ServerUnavailable { status }
        | Error::Unavailable { status }
        | Error::Rpc(status) => status,
        other => Status::unknown(other.to_string()),
    }
}

/// Whether the request provably never reached a server: tonic could not
/// connect (a [`tonic::ConnectError`] in the source chain: the connection
/// this request would have used was never established), or HTTP/2's
/// REFUSED_STREAM, which guarantees the server did not process the stream.
pub(crate) fn never_sent(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    status.code() == tonic::Code::Unavailable
        && status
            .message()
            .contains("refused stream before processing any application logic")
}

/// `http://host:port` from `http://host:port` or `host:port`.
fn normalize(url: &str) -> Result<String> {
    let invalid = |reason| Error::InvalidEndpoint {
        endpoint: url.to_owned(),
        reason,
    };
    let url = url.trim().trim_end_matches('/');
    let full = if url.starts_with("https://") || url.starts_with("unixs://") {
        return Err(invalid("TLS is not supported yet"));
    } else if url.starts_with("http://") {
        url.to_owned()
    } else if url.contains("://") {
        return Err(invalid("the scheme must be http"));
    } else {
        format!("http://{url}")
    };
    let uri: tonic::codegen::http::Uri = full.parse().map_err(|_| invalid("not a URL"))?;
    if uri.port_u16().is_none() {
        return Err(invalid("no port"));
    }
    Ok(full)
}

fn new_endpoint(url: &str, options: &ConnectOptions) -> Result<Endpoint> {
    let url = normalize(url)?;
    let mut endpoint = TonicEndpoint::from_shared(url.clone())
        .map_err(|_| Error::InvalidEndpoint {
            endpoint: url.clone(),
            reason: "not a URL",
        })?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true);
    if let Some(interval) = options.keep_alive_interval {
        endpoint = endpoint
            .http2_keep_alive_interval(interval)
            .keep_alive_timeout(options.keep_alive_timeout)
            .keep_alive_while_idle(true);
    }
    Ok(Endpoint {
        url,
        channel: endpoint.connect_lazy(),
        unhealthy_until: Mutex::new(None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_normalize() {
        assert_eq!(
            normalize("127.0.0.1:2379").ok().as_deref(),
            Some("http://127.0.0.1:2379")
        );
        assert_eq!(
            normalize("http://localhost:2379/").ok().as_deref(),
            Some("http://localhost:2379")
        );
        for bad in ["https://a:1", "ftp://a:1", "http://a", "not a url:x"] {
            assert!(
                matches!(normalize(bad), Err(Error::InvalidEndpoint { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn write_outcomes() {
        let ambiguous = [
            Status::unavailable("etcdserver: request timed out"),
            Status::unavailable("etcdserver: server stopped"),
            Status::unavailable("connection reset"),
            Status::unknown("h2 protocol error"),
            Status::cancelled("operation was canceled"),
        ];
        for status in ambiguous {
            assert!(
                maybe_applied(&Error::from_status(status.clone())),
                "{status:?}"
            );
        }
        let definite = [
            Status::out_of_range("etcdserver: mvcc: required revision has been compacted"),
            Status::invalid_argument("etcdserver: too many operations in txn request"),
            Status::not_found("etcdserver: requested lease not found"),
        ];
        for status in definite {
            assert!(
                !maybe_applied(&Error::from_status(status.clone())),
                "{status:?}"
            );
        }
    }

    #[tokio::test]
    async fn pick_round_robins_over_healthy_endpoints() {
        let urls: Vec<String> = (1..=3).map(|i| format!("http://127.0.0.1:{i}")).collect();
        let pool = Pool::new(&urls, ConnectOptions::default()).expect("valid");
        let picks: Vec<String> = (0..3).map(|_| pool.pick(&[]).url.clone()).collect();
        assert_eq!(picks, urls);
        pool.pick(&[]).mark_unhealthy(Duration::from_secs(60)); // urls[0]
        for _ in 0..6 {
            assert_ne!(pool.pick(&[]).url, urls[0]);
        }
        // Every healthy one tried: the unhealthy one is next.
        let tried = vec![urls[1].clone(), urls[2].clone()];
        assert_eq!(pool.pick(&tried).url, urls[0]);
    }
}
