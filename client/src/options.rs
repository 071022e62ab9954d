//! How a [`crate::Client`] connects: [`ConnectOptions`].

use std::time::Duration;

/// Options for [`crate::Client::connect`].
///
/// Built from [`ConnectOptions::default`] with the `with_*` methods. The
/// struct is `#[non_exhaustive]`, so TLS and authentication can be added
/// later as new methods without breaking callers.
///
/// ```
/// use std::time::Duration;
/// use cairn_client::ConnectOptions;
///
/// let options = ConnectOptions::default()
///     .with_request_timeout(Duration::from_secs(2))
///     .with_keep_alive(Duration::from_secs(10), Duration::from_secs(3))
///     .with_discovery(true);
/// assert_eq!(options.request_timeout(), Duration::from_secs(2));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) keep_alive_interval: Option<Duration>,
    pub(crate) keep_alive_timeout: Duration,
    pub(crate) discovery: bool,
    pub(crate) discovery_interval: Option<Duration>,
    pub(crate) unhealthy_backoff: Duration,
    pub(crate) require_leader: bool,
}

impl Default for ConnectOptions {
    /// 2 s to connect, 5 s per request (etcd's default request timeout),
    /// HTTP/2 pings every 30 s with a 10 s timeout, no discovery, and
    /// requests refused by members without a leader.
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            keep_alive_interval: Some(Duration::from_secs(30)),
            keep_alive_timeout: Duration::from_secs(10),
            discovery: false,
            discovery_interval: None,
            unhealthy_backoff: Duration::from_secs(1),
            require_leader: true,
        }
    }
}

impl ConnectOptions {
    /// Bound on establishing one TCP + HTTP/2 connection.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bound on one unary call, retries included. Watches, keep-alives,
    /// locks, campaigns and snapshots are not bounded by it.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// HTTP/2 keep-alive: a PING every `interval` (even on idle
    /// connections), and the connection is dropped when no answer comes
    /// within `timeout`. This is what notices a member that vanished without
    /// closing its sockets.
    pub fn with_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive_interval = Some(interval);
        self.keep_alive_timeout = timeout;
        self
    }

    /// No HTTP/2 keep-alive pings.
    pub fn without_keep_alive(mut self) -> Self {
        self.keep_alive_interval = None;
        self
    }

    /// Whether to learn the cluster's other members from MemberList at
    /// connect time and add their client URLs to the endpoints.
    pub fn with_discovery(mut self, discovery: bool) -> Self {
        self.discovery = discovery;
        self
    }

    /// With discovery on, refresh the endpoints from MemberList this often
    /// (members added or removed since connecting are picked up).
    pub fn with_discovery_interval(mut self, interval: Duration) -> Self {
        self.discovery = true;
        self.discovery_interval = Some(interval);
        self
    }

    /// How long an endpoint that failed to connect, or had no leader, is
    /// skipped (unless every endpoint is).
    pub fn with_unhealthy_backoff(mut self, backoff: Duration) -> Self {
        self.unhealthy_backoff = backoff;
        self
    }

    /// Whether to send etcd's `hasleader` metadata with linearizable
    /// requests and watches (on by default), so that a member cut off from
    /// its leader refuses them at once with "no leader" and the client fails
    /// over, instead of waiting for a timeout.
    pub fn with_require_leader(mut self, require: bool) -> Self {
        self.require_leader = require;
        self
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
}
