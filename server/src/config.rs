//! The node's configuration: etcd's flag names, each also read from the
//! `ETCD_*` environment variable etcd reads.
//!
//! Parsing checks each value on its own (a URL has a scheme, host and port;
//! an enum flag names a known value). [`Config::validate`] then checks the
//! values against each other, the way etcd does after parsing. Checks that
//! only matter when a member is created (the initial cluster names this
//! member) live in [`Config::bootstrap_peer_urls`], because a restart on an
//! existing data dir ignores the bootstrap flags.

mod duration;
mod url;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

pub use self::duration::DurationError;
pub use self::url::{Scheme, Url, UrlError};

/// etcd's default `--quota-backend-bytes`: 2 GiB.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// etcd's default `--snapshot-count`.
pub const DEFAULT_SNAPSHOT_COUNT: u64 = 100_000;
/// etcd's default `--experimental-snapshot-catchup-entries`.
pub const DEFAULT_SNAPSHOT_CATCHUP_ENTRIES: u64 = 5000;
/// etcd's default `--experimental-watch-progress-notify-interval`.
pub const DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);
/// etcd's default `--experimental-lease-checkpoint-interval`.
pub const DEFAULT_LEASE_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(300);
/// etcd refuses election timeouts above this many milliseconds.
const MAX_ELECTION_TIMEOUT_MS: u64 = 50_000;

/// Everything a node is started with.
///
/// Build it with [`clap::Parser::parse`] in a binary, or with
/// [`Config::default_for_tests`] and field updates in tests and embedders.
/// Field docs are the `--help` text.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(
    name = "cairn",
    version,
    about = "An etcd-v3-compatible, Raft-replicated key-value store.",
    long_about = None,
    // As with etcd's flags, a flag given twice takes its last value.
    args_override_self = true
)]
pub struct Config {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,

    /// Path to the data directory [default: <name>.etcd].
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// List of URLs to listen on for client traffic (comma-separated).
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        value_delimiter = ',',
        action = clap::ArgAction::Set,
        default_value = "http://127.0.0.1:2379"
    )]
    pub listen_client_urls: Vec<Url>,

    /// List of this member's client URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        value_delimiter = ',',
        action = clap::ArgAction::Set,
        default_value = "http://127.0.0.1:2379"
    )]
    pub advertise_client_urls: Vec<Url>,

    /// List of URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        value_delimiter = ',',
        action = clap::ArgAction::Set,
        default_value = "http://127.0.0.1:2380"
    )]
    pub listen_peer_urls: Vec<Url>,

    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        value_delimiter = ',',
        action = clap::ArgAction::Set,
        default_value = "http://127.0.0.1:2380"
    )]
    pub initial_advertise_peer_urls: Vec<Url>,

    /// Initial cluster configuration for bootstrapping, as name=url,...
    /// [default: <name>=<each --initial-advertise-peer-urls>].
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<InitialCluster>,

    /// Initial cluster state.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", value_enum, default_value_t = ClusterState::New)]
    pub initial_cluster_state: ClusterState,

    /// Initial cluster token for the cluster during bootstrap.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,

    /// Raise an alarm when the backend size exceeds the given quota (0 defaults to 2 GiB).
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    pub quota_backend_bytes: u64,

    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: u32,

    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: u32,

    /// Interpret --auto-compaction-retention as hours/a duration (periodic)
    /// or as a revision count (revision).
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE", value_enum, default_value_t = AutoCompactionMode::Periodic)]
    pub auto_compaction_mode: AutoCompactionMode,

    /// Auto compaction retention: 0 is off; periodic mode takes hours ("5")
    /// or a duration ("5m", "1h30m"), revision mode takes a count.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: Retention,

    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,

    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,

    /// Log level.
    #[arg(long, env = "ETCD_LOG_LEVEL", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Number of committed transactions to trigger a snapshot to disk (0 defaults to 100000).
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = DEFAULT_SNAPSHOT_COUNT)]
    pub snapshot_count: u64,

    /// Duration of periodic watch progress notifications (e.g. 10m, 30s).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m",
        value_parser = duration::parse
    )]
    pub experimental_watch_progress_notify_interval: Duration,

    /// Duration of periodic lease checkpoints (remaining TTLs recorded through Raft).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_LEASE_CHECKPOINT_INTERVAL",
        default_value = "5m",
        value_parser = duration::parse
    )]
    pub experimental_lease_checkpoint_interval: Duration,

    /// Number of entries for a slow follower to catch up after compacting
    /// the raft storage entries.
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES",
        default_value_t = DEFAULT_SNAPSHOT_CATCHUP_ENTRIES
    )]
    pub experimental_snapshot_catchup_entries: u64,

    /// Reject reconfiguration requests that would cause quorum loss.
    #[arg(
        long,
        env = "ETCD_STRICT_RECONFIG_CHECK",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub strict_reconfig_check: bool,

    /// Force to create a new one member cluster from this member's data,
    /// keeping all of it.
    #[arg(
        long,
        env = "ETCD_FORCE_NEW_CLUSTER",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub force_new_cluster: bool,

    /// Promote a learner to a voting member as soon as it has caught up
    /// with the leader (Cairn's own flag; etcd has none).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_AUTO_PROMOTE_LEARNERS",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub experimental_auto_promote_learners: bool,

    /// Time between periodic corruption checks: the leader compares every
    /// member's HashKV with its own, and raises CORRUPT on a mismatch (0s:
    /// off, as etcd's default).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME",
        default_value = "0s",
        value_parser = duration::parse
    )]
    pub experimental_corrupt_check_time: Duration,

    /// Directory for scheduled backups, each a file `cairnctl snapshot
    /// verify` checks (Cairn's own flag; off when not given).
    #[arg(long, env = "ETCD_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,

    /// Time between scheduled backups (e.g. 1h, 30m).
    #[arg(
        long,
        env = "ETCD_BACKUP_INTERVAL",
        default_value = "1h",
        value_parser = duration::parse
    )]
    pub backup_interval: Duration,

    /// How many scheduled backups to keep: the newest N.
    #[arg(long, env = "ETCD_BACKUP_RETENTION", default_value_t = 24)]
    pub backup_retention: usize,

    /// The storage's page cache bound, in bytes (Cairn's own flag; etcd
    /// leaves its cache to the OS). Memory use tracks it; reads of values
    /// outside it go to disk.
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_BACKEND_CACHE_BYTES",
        default_value_t = cairn_raft_storage::DEFAULT_CACHE_BYTES
    )]
    pub experimental_backend_cache_bytes: u64,
}

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClusterState {
    /// Bootstrap a new cluster from `--initial-cluster`.
    New,
    /// Join a cluster that already runs.
    Existing,
}

/// `--auto-compaction-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AutoCompactionMode {
    /// Keep history for a span of time.
    Periodic,
    /// Keep a number of revisions.
    Revision,
}

/// `--log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Everything, for debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Only what may need attention.
    Warn,
    /// Only failures.
    Error,
}

impl LogLevel {
    /// The level as a `tracing` filter directive.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// `--auto-compaction-retention` as written, before the mode gives it a
/// meaning: an integer is hours in periodic mode and revisions in revision
/// mode; a Go duration only makes sense in periodic mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// A plain integer; 0 turns auto compaction off.
    Integer(u64),
    /// A Go-style duration such as `5m` or `1h30m`.
    Duration(Duration),
}

impl FromStr for Retention {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, DurationError> {
        match s.parse::<u64>() {
            Ok(n) => Ok(Retention::Integer(n)),
            Err(_) => duration::parse(s).map(Retention::Duration),
        }
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retention::Integer(n) => write!(f, "{n}"),
            Retention::Duration(d) => write!(f, "{d:?}"),
        }
    }
}

/// What auto compaction should do, once mode and retention are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep this much history by time.
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(u64),
}

/// `--initial-cluster`: `name=url` pairs. A name may repeat, once per peer
/// URL of that member, as in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialCluster {
    entries: Vec<(String, Url)>,
}

/// Why `--initial-cluster` did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitialClusterError {
    /// An entry without `=` or with an empty name.
    #[error("--initial-cluster entry {0:?} is not name=url")]
    Entry(String),
    /// An entry's URL did not parse.
    #[error("--initial-cluster entry {entry:?}: {source}")]
    Url {
        /// The entry as given.
        entry: String,
        /// What was wrong with its URL.
        source: UrlError,
    },
}

impl InitialCluster {
    /// `name=url` for each of `urls`: the default etcd derives from `--name`
    /// and `--initial-advertise-peer-urls`.
    pub fn from_member(name: &str, urls: &[Url]) -> Self {
        InitialCluster {
            entries: urls.iter().map(|u| (name.to_owned(), u.clone())).collect(),
        }
    }

    /// The distinct member names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.entries.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The peer URLs given for `name`, sorted.
    pub fn peer_urls(&self, name: &str) -> Vec<&Url> {
        let mut urls: Vec<&Url> = self
            .entries
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, u)| u)
            .collect();
        urls.sort_unstable();
        urls
    }

    /// The entries in a canonical order, so that two spellings of one
    /// cluster derive the same cluster id.
    pub(crate) fn canonical(&self) -> String {
        let mut entries: Vec<String> = self
            .entries
            .iter()
            .map(|(n, u)| format!("{n}={u}"))
            .collect();
        entries.sort_unstable();
        entries.join(",")
    }
}

impl fmt::Display for InitialCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, url)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{name}={url}")?;
        }
        Ok(())
    }
}

impl FromStr for InitialCluster {
    type Err = InitialClusterError;

    fn from_str(s: &str) -> Result<Self, InitialClusterError> {
        let entries = s
            .split(',')
            .map(|entry| {
                let (name, url) = entry
                    .split_once('=')
                    .filter(|(name, _)| !name.is_empty())
                    .ok_or_else(|| InitialClusterError::Entry(entry.to_owned()))?;
                let url = url.parse().map_err(|source| InitialClusterError::Url {
                    entry: entry.to_owned(),
                    source,
                })?;
                Ok((name.to_owned(), url))
            })
            .collect::<Result<_, _>>()?;
        Ok(InitialCluster { entries })
    }
}

/// A configuration whose values disagree with each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `--heartbeat-interval=0`.
    #[error("--heartbeat-interval must be greater than 0")]
    ZeroHeartbeat,
    /// etcd wants at least five heartbeats per election timeout.
    #[error("--election-timeout[{election_ms}ms] should be at least as 5 times as --heartbeat-interval[{heartbeat_ms}ms]")]
    ElectionTimeoutTooShort {
        /// `--election-timeout`.
        election_ms: u64,
        /// `--heartbeat-interval`.
        heartbeat_ms: u64,
    },
    /// etcd caps the election timeout at 50 s.
    #[error("--election-timeout[{0}ms] is too long, and should be set less than 50000ms")]
    ElectionTimeoutTooLong(u64),
    /// A duration retention in revision mode.
    #[error("--auto-compaction-retention={0} is not a revision count, which --auto-compaction-mode=revision requires")]
    RetentionNotRevisions(Retention),
    /// `--experimental-watch-progress-notify-interval=0`.
    #[error("--experimental-watch-progress-notify-interval must be greater than 0")]
    ZeroProgressNotifyInterval,
    /// `--experimental-lease-checkpoint-interval=0`.
    #[error("--experimental-lease-checkpoint-interval must be greater than 0")]
    ZeroLeaseCheckpointInterval,
    /// `--backup-interval=0` or `--backup-retention=0`.
    #[error("--backup-interval and --backup-retention must be greater than 0")]
    BadBackupSchedule,
    /// A URL list flag was given no URL.
    #[error("--{0} needs at least one URL")]
    NoUrls(&'static str),
    /// `--name` does not appear in `--initial-cluster`.
    #[error("couldn't find local name {name:?} in the initial cluster configuration ({initial_cluster})")]
    NameNotInInitialCluster {
        /// `--name`.
        name: String,
        /// `--initial-cluster` as in force.
        initial_cluster: String,
    },
    /// `--initial-cluster` gives this member other URLs than
    /// `--initial-advertise-peer-urls`.
    #[error(
        "--initial-cluster has {name}={in_cluster} but --initial-advertise-peer-urls={advertised}"
    )]
    PeerUrlsMismatch {
        /// `--name`.
        name: String,
        /// This member's URLs in `--initial-cluster`.
        in_cluster: String,
        /// `--initial-advertise-peer-urls`.
        advertised: String,
    },
    /// Two members of `--initial-cluster` share a peer URL.
    #[error("--initial-cluster has duplicate url {0}")]
    DuplicatePeerUrl(String),
}

fn join_urls<'a>(urls: impl IntoIterator<Item = &'a Url>) -> String {
    urls.into_iter()
        .map(Url::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl Config {
    /// A single-member configuration for tests and embedders: data in
    /// `data_dir`, every URL on 127.0.0.1 port 0 (the OS picks free ports;
    /// [`crate::Node::client_addrs`] tells which). No environment variable
    /// is read.
    pub fn default_for_tests(data_dir: impl Into<PathBuf>) -> Self {
        let any_port = Url::new(Scheme::Http, "127.0.0.1", 0);
        Config {
            name: "default".to_owned(),
            data_dir: Some(data_dir.into()),
            listen_client_urls: vec![any_port.clone()],
            advertise_client_urls: vec![any_port.clone()],
            listen_peer_urls: vec![any_port.clone()],
            initial_advertise_peer_urls: vec![any_port],
            initial_cluster: None,
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: "etcd-cluster".to_owned(),
            quota_backend_bytes: 0,
            max_request_bytes: 1_572_864,
            max_txn_ops: 128,
            auto_compaction_mode: AutoCompactionMode::Periodic,
            auto_compaction_retention: Retention::Integer(0),
            heartbeat_interval: 100,
            election_timeout: 1000,
            log_level: LogLevel::Info,
            snapshot_count: DEFAULT_SNAPSHOT_COUNT,
            experimental_watch_progress_notify_interval: DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL,
            experimental_lease_checkpoint_interval: DEFAULT_LEASE_CHECKPOINT_INTERVAL,
            experimental_snapshot_catchup_entries: DEFAULT_SNAPSHOT_CATCHUP_ENTRIES,
            strict_reconfig_check: true,
            force_new_cluster: false,
            experimental_auto_promote_learners: false,
            experimental_corrupt_check_time: Duration::ZERO,
            backup_dir: None,
            backup_interval: Duration::from_secs(3600),
            backup_retention: 24,
            experimental_backend_cache_bytes: cairn_raft_storage::DEFAULT_CACHE_BYTES,
        }
    }

    /// Checks the values against each other, as etcd does after parsing.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval == 0 {
            return Err(ConfigError::ZeroHeartbeat);
        }
        if self.election_timeout < self.heartbeat_interval.saturating_mul(5) {
            return Err(ConfigError::ElectionTimeoutTooShort {
                election_ms: self.election_timeout,
                heartbeat_ms: self.heartbeat_interval,
            });
        }
        if self.election_timeout > MAX_ELECTION_TIMEOUT_MS {
            return Err(ConfigError::ElectionTimeoutTooLong(self.election_timeout));
        }
        for (flag, urls) in [
            ("listen-client-urls", &self.listen_client_urls),
            ("advertise-client-urls", &self.advertise_client_urls),
            ("listen-peer-urls", &self.listen_peer_urls),
            (
                "initial-advertise-peer-urls",
                &self.initial_advertise_peer_urls,
            ),
        ] {
            if urls.is_empty() {
                return Err(ConfigError::NoUrls(flag));
            }
        }
        if self.experimental_watch_progress_notify_interval.is_zero() {
            return Err(ConfigError::ZeroProgressNotifyInterval);
        }
        if self.experimental_lease_checkpoint_interval.is_zero() {
            return Err(ConfigError::ZeroLeaseCheckpointInterval);
        }
        if self.backup_interval.is_zero() || self.backup_retention == 0 {
            return Err(ConfigError::BadBackupSchedule);
        }
        self.auto_compaction()?;
        Ok(())
    }

    /// The data directory: `--data-dir`, or `<name>.etcd` as in etcd.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name)))
    }

    /// `--initial-cluster`, or the one etcd derives from `--name` and
    /// `--initial-advertise-peer-urls` when it is not given.
    pub fn initial_cluster(&self) -> InitialCluster {
        self.initial_cluster.clone().unwrap_or_else(|| {
            InitialCluster::from_member(&self.name, &self.initial_advertise_peer_urls)
        })
    }

    /// The backend quota in force: `--quota-backend-bytes`, 0 meaning 2 GiB.
    pub fn quota_backend_bytes(&self) -> u64 {
        match self.quota_backend_bytes {
            0 => DEFAULT_QUOTA_BACKEND_BYTES,
            n => n,
        }
    }

    /// The snapshot interval in force: `--snapshot-count`, 0 meaning the
    /// default.
    pub fn snapshot_count(&self) -> u64 {
        match self.snapshot_count {
            0 => DEFAULT_SNAPSHOT_COUNT,
            n => n,
        }
    }

    /// The auto compaction policy, or `None` when it is off.
    ///
    /// # Errors
    ///
    /// [`ConfigError::RetentionNotRevisions`] for a duration in revision mode.
    pub fn auto_compaction(&self) -> Result<Option<AutoCompaction>, ConfigError> {
        let policy = match (self.auto_compaction_mode, self.auto_compaction_retention) {
            (_, Retention::Integer(0)) => None,
            (AutoCompactionMode::Periodic, Retention::Integer(hours)) => Some(
                AutoCompaction::Periodic(Duration::from_secs(hours.saturating_mul(3600))),
            ),
            (AutoCompactionMode::Periodic, Retention::Duration(d)) if d.is_zero() => None,
            (AutoCompactionMode::Periodic, Retention::Duration(d)) => {
                Some(AutoCompaction::Periodic(d))
            }
            (AutoCompactionMode::Revision, Retention::Integer(n)) => {
                Some(AutoCompaction::Revision(n))
            }
            (AutoCompactionMode::Revision, r @ Retention::Duration(_)) => {
                return Err(ConfigError::RetentionNotRevisions(r));
            }
        };
        Ok(policy)
    }

    /// The peer URLs this member bootstraps with, after checking that
    /// `--initial-cluster` names this member with exactly the URLs of
    /// `--initial-advertise-peer-urls`.
    ///
    /// Only a member's first start calls this: on a restart the member
    /// file in the data dir wins and the bootstrap flags are ignored.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NameNotInInitialCluster`],
    /// [`ConfigError::PeerUrlsMismatch`] and [`ConfigError::DuplicatePeerUrl`].
    pub fn bootstrap_peer_urls(&self) -> Result<Vec<Url>, ConfigError> {
        let cluster = self.initial_cluster();
        let in_cluster = cluster.peer_urls(&self.name);
        if in_cluster.is_empty() {
            return Err(ConfigError::NameNotInInitialCluster {
                name: self.name.clone(),
                initial_cluster: cluster.to_string(),
            });
        }
        let mut advertised: Vec<&Url> = self.initial_advertise_peer_urls.iter().collect();
        advertised.sort_unstable();
        advertised.dedup();
        let mut in_cluster_dedup = in_cluster.clone();
        in_cluster_dedup.dedup();
        if advertised != in_cluster_dedup {
            return Err(ConfigError::PeerUrlsMismatch {
                name: self.name.clone(),
                in_cluster: join_urls(in_cluster),
                advertised: join_urls(self.initial_advertise_peer_urls.iter()),
            });
        }
        let mut all: Vec<&Url> = cluster.entries.iter().map(|(_, u)| u).collect();
        all.sort_unstable();
        if let Some(w) = all.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::DuplicatePeerUrl(w[0].to_string()));
        }
        Ok(advertised.into_iter().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("cairn").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_etcd() {
        // Env vars would leak into this test; none of the ETCD_* ones are
        // set in the test environment.
        if std::env::vars().any(|(k, _)| k.starts_with("ETCD_")) {
            return;
        }
        let c = parse(&[]).expect("no flags parse");
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir(), PathBuf::from("default.etcd"));
        assert_eq!(
            c.listen_client_urls,
            vec![Url::new(Scheme::Http, "127.0.0.1", 2379)]
        );
        assert_eq!(
            c.initial_cluster().to_string(),
            "default=http://127.0.0.1:2380"
        );
        assert_eq!(c.quota_backend_bytes(), DEFAULT_QUOTA_BACKEND_BYTES);
        assert_eq!(c.max_request_bytes, 1_572_864);
        assert_eq!(c.max_txn_ops, 128);
        assert_eq!(c.experimental_backend_cache_bytes, 64 << 20);
        assert_eq!(c.auto_compaction(), Ok(None));
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.bootstrap_peer_urls().map(|u| u.len()), Ok(1));
        let named = parse(&["--name", "n1"]).expect("parses");
        assert_eq!(named.data_dir(), PathBuf::from("n1.etcd"));
        assert_eq!(
            named.initial_cluster().to_string(),
            "n1=http://127.0.0.1:2380"
        );
    }

    #[test]
    fn rejects_malformed_values() {
        for args in [
            &["--listen-client-urls", "127.0.0.1:2379"][..],
            &["--listen-client-urls", "http://127.0.0.1:2379,ftp://a:1"],
            &["--advertise-client-urls", "http://a:99999"],
            &["--initial-cluster", "default"],
            &["--initial-cluster", "=http://a:1"],
            &["--initial-cluster-state", "joining"],
            &["--auto-compaction-mode", "hourly"],
            &["--auto-compaction-retention", "5 minutes"],
            &["--log-level", "trace"],
            &["--heartbeat-interval", "-1"],
            &["--max-txn-ops", "many"],
            &["--experimental-backend-cache-bytes", "64MiB"],
            &["--no-such-flag"],
        ] {
            assert!(parse(args).is_err(), "{args:?} should be rejected");
        }
    }

    #[test]
    fn a_repeated_flag_takes_its_last_value() {
        let c = parse(&[
            "--initial-cluster-token",
            "a",
            "--listen-client-urls",
            "http://127.0.0.1:1,http://127.0.0.1:2",
            "--initial-cluster-token",
            "b",
            "--listen-client-urls",
            "http://127.0.0.1:3",
        ])
        .expect("parses");
        assert_eq!(c.initial_cluster_token, "b");
        assert_eq!(
            c.listen_client_urls,
            vec![Url::new(Scheme::Http, "127.0.0.1", 3)]
        );
    }

    #[test]
    fn parses_lists_and_retention() {
        let c = parse(&[
            "--listen-client-urls",
            "http://127.0.0.1:0,http://[::1]:0",
            "--auto-compaction-retention",
            "1h30m",
            "--experimental-backend-cache-bytes",
            "8388608",
        ])
        .expect("parses");
        assert_eq!(c.listen_client_urls.len(), 2);
        assert_eq!(c.experimental_backend_cache_bytes, 8 << 20);
        assert_eq!(
            c.auto_compaction(),
            Ok(Some(AutoCompaction::Periodic(Duration::from_secs(5400))))
        );
    }

    #[test]
    fn auto_compaction_policy() {
        let cases = [
            (AutoCompactionMode::Periodic, "0", Ok(None)),
            (
                AutoCompactionMode::Periodic,
                "2",
                Ok(Some(AutoCompaction::Periodic(Duration::from_secs(7200)))),
            ),
            (
                AutoCompactionMode::Periodic,
                "5m",
                Ok(Some(AutoCompaction::Periodic(Duration::from_secs(300)))),
            ),
            (AutoCompactionMode::Revision, "0", Ok(None)),
            (
                AutoCompactionMode::Revision,
                "1000",
                Ok(Some(AutoCompaction::Revision(1000))),
            ),
            (
                AutoCompactionMode::Revision,
                "5m",
                Err(ConfigError::RetentionNotRevisions(Retention::Duration(
                    Duration::from_secs(300),
                ))),
            ),
        ];
        for (mode, retention, want) in cases {
            let mut c = Config::default_for_tests("d");
            c.auto_compaction_mode = mode;
            c.auto_compaction_retention = retention.parse().expect("test retention parses");
            assert_eq!(c.auto_compaction(), want, "{mode:?} {retention}");
        }
    }

    #[test]
    fn validates_timeouts() {
        let mut c = Config::default_for_tests("d");
        c.election_timeout = 400;
        assert_eq!(
            c.validate(),
            Err(ConfigError::ElectionTimeoutTooShort {
                election_ms: 400,
                heartbeat_ms: 100
            })
        );
        c.election_timeout = 60_000;
        assert_eq!(
            c.validate(),
            Err(ConfigError::ElectionTimeoutTooLong(60_000))
        );
        c.heartbeat_interval = 0;
        assert_eq!(c.validate(), Err(ConfigError::ZeroHeartbeat));
    }

    #[test]
    fn bootstrap_checks_the_initial_cluster() {
        let url = |s: &str| s.parse::<Url>().expect("test URL parses");
        let base = {
            let mut c = Config::default_for_tests("d");
            c.name = "n1".into();
            c.initial_advertise_peer_urls = vec![url("http://10.0.0.1:2380")];
            c
        };
        let with_cluster = |s: &str| {
            let mut c = base.clone();
            c.initial_cluster = Some(s.parse().expect("test cluster parses"));
            c
        };
        assert_eq!(
            base.bootstrap_peer_urls(),
            Ok(vec![url("http://10.0.0.1:2380")])
        );
        assert_eq!(
            with_cluster("n1=http://10.0.0.1:2380").bootstrap_peer_urls(),
            Ok(vec![url("http://10.0.0.1:2380")])
        );
        assert!(matches!(
            with_cluster("n2=http://10.0.0.1:2380").bootstrap_peer_urls(),
            Err(ConfigError::NameNotInInitialCluster { .. })
        ));
        assert!(matches!(
            with_cluster("n1=http://10.0.0.9:2380").bootstrap_peer_urls(),
            Err(ConfigError::PeerUrlsMismatch { .. })
        ));
        assert_eq!(
            with_cluster("n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380").bootstrap_peer_urls(),
            Ok(vec![url("http://10.0.0.1:2380")])
        );
        assert_eq!(
            with_cluster("n1=http://10.0.0.1:2380,n2=http://10.0.0.1:2380").bootstrap_peer_urls(),
            Err(ConfigError::DuplicatePeerUrl("http://10.0.0.1:2380".into()))
        );
    }
}
