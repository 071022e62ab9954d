//! The command line: etcdctl's verbs and flags where they exist.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// cairnctl: operate a Cairn (or etcd v3) cluster.
#[derive(Debug, Parser)]
#[command(name = "cairnctl", version, about)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// etcdctl's plain text.
    Simple,
    /// JSON, keys and values in base64 as etcdctl's.
    Json,
    /// An ASCII table.
    Table,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// gRPC endpoints, comma separated.
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub(crate) endpoints: Vec<String>,
    /// Output format.
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        value_enum,
        default_value = "simple"
    )]
    pub(crate) write_out: Format,
    /// Time to connect to an endpoint.
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    pub(crate) dial_timeout: Duration,
    /// Time a request may take (not watch, lock, elect or keep-alive).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub(crate) command_timeout: Duration,
}

/// Parses etcdctl's durations: `500ms`, `5s`, `2m`, or plain seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (try 500ms, 5s, 2m)");
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Gets a key or a range of keys.
    Get(GetArgs),
    /// Puts a key (the value from the argument, or stdin).
    Put(PutArgs),
    /// Deletes a key or a range of keys.
    Del(DelArgs),
    /// Runs a txn read from stdin in etcdctl's format.
    Txn(TxnArgs),
    /// Watches a key or a range of keys.
    Watch(WatchArgs),
    /// Compacts the history up to a revision.
    Compaction(CompactionArgs),
    /// Lease commands.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Membership commands.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Endpoint health, status and hashes.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Alarm commands.
    #[command(subcommand)]
    Alarm(AlarmCommand),
    /// Defragments the members' databases.
    Defrag(DefragArgs),
    /// Hands leadership to another member.
    MoveLeader(MoveLeaderArgs),
    /// Takes a distributed lock, runs a command or waits, then releases it.
    Lock(LockArgs),
    /// Joins an election, or observes it with --listen.
    Elect(ElectArgs),
    /// Backups: save, status, verify, restore.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Prints cairnctl's version.
    Version,
}

#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    pub(crate) key: String,
    pub(crate) range_end: Option<String>,
    /// Every key with KEY as a prefix.
    #[arg(long)]
    pub(crate) prefix: bool,
    /// Every key from KEY on.
    #[arg(long)]
    pub(crate) from_key: bool,
    /// At most this many keys.
    #[arg(long, default_value_t = 0)]
    pub(crate) limit: i64,
    /// Read at this revision.
    #[arg(long, default_value_t = 0)]
    pub(crate) rev: i64,
    /// Keys only.
    #[arg(long)]
    pub(crate) keys_only: bool,
    /// Values only.
    #[arg(long)]
    pub(crate) print_value_only: bool,
    /// Only the count.
    #[arg(long)]
    pub(crate) count_only: bool,
    /// l (linearizable) or s (serializable).
    #[arg(long, default_value = "l")]
    pub(crate) consistency: String,
}

#[derive(Debug, Args)]
pub(crate) struct PutArgs {
    pub(crate) key: String,
    pub(crate) value: Option<String>,
    /// Attach to this lease (hex).
    #[arg(long)]
    pub(crate) lease: Option<String>,
    /// Print the previous value.
    #[arg(long)]
    pub(crate) prev_kv: bool,
    /// Keep the current value.
    #[arg(long)]
    pub(crate) ignore_value: bool,
    /// Keep the current lease.
    #[arg(long)]
    pub(crate) ignore_lease: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DelArgs {
    pub(crate) key: String,
    pub(crate) range_end: Option<String>,
    #[arg(long)]
    pub(crate) prefix: bool,
    #[arg(long)]
    pub(crate) from_key: bool,
    /// Print the deleted values.
    #[arg(long)]
    pub(crate) prev_kv: bool,
}

#[derive(Debug, Args)]
pub(crate) struct TxnArgs {
    /// Prompt for each part of the txn.
    #[arg(short, long)]
    pub(crate) interactive: bool,
}

#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    pub(crate) key: String,
    pub(crate) range_end: Option<String>,
    #[arg(long)]
    pub(crate) prefix: bool,
    /// Start at this revision.
    #[arg(long, default_value_t = 0)]
    pub(crate) rev: i64,
    /// Print the previous value with each event.
    #[arg(long)]
    pub(crate) prev_kv: bool,
    /// Stop after this many events (0: never).
    #[arg(long, default_value_t = 0)]
    pub(crate) max_events: u64,
}

#[derive(Debug, Args)]
pub(crate) struct CompactionArgs {
    pub(crate) revision: i64,
    /// Wait until the old revisions are gone from the backend.
    #[arg(long)]
    pub(crate) physical: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum LeaseCommand {
    /// Grants a lease with a TTL in seconds.
    Grant { ttl: i64 },
    /// Revokes a lease (hex ID) and deletes its keys.
    Revoke { id: String },
    /// A lease's remaining TTL.
    Timetolive {
        id: String,
        /// List its keys too.
        #[arg(long)]
        keys: bool,
    },
    /// Every live lease.
    List,
    /// Keeps a lease alive until interrupted (or once).
    KeepAlive {
        id: String,
        #[arg(long)]
        once: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum MemberCommand {
    /// Adds a member.
    Add {
        name: String,
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
        #[arg(long)]
        learner: bool,
    },
    /// Removes a member (hex ID).
    Remove { id: String },
    /// Changes a member's peer URLs.
    Update {
        id: String,
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
    },
    /// Lists the members.
    List,
    /// Promotes a learner.
    Promote { id: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum EndpointCommand {
    /// Whether each endpoint commits a request.
    Health(ClusterFlag),
    /// Each endpoint's status.
    Status(ClusterFlag),
    /// Each endpoint's KV hash.
    Hashkv {
        #[command(flatten)]
        cluster: ClusterFlag,
        /// Hash up to this revision (0: the latest).
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ClusterFlag {
    /// Every member's client URLs, from the member list, instead of
    /// --endpoints.
    #[arg(long)]
    pub(crate) cluster: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AlarmCommand {
    /// Lists the alarms.
    List,
    /// Disarms every alarm.
    Disarm,
}

#[derive(Debug, Args)]
pub(crate) struct DefragArgs {
    #[command(flatten)]
    pub(crate) cluster: ClusterFlag,
}

#[derive(Debug, Args)]
pub(crate) struct MoveLeaderArgs {
    /// The transferee's member ID (hex).
    pub(crate) target: String,
}

#[derive(Debug, Args)]
pub(crate) struct LockArgs {
    pub(crate) name: String,
    /// A command to run while holding the lock.
    #[arg(trailing_var_arg = true)]
    pub(crate) command: Vec<String>,
    /// The session's TTL in seconds.
    #[arg(long, default_value_t = 10)]
    pub(crate) ttl: i64,
}

#[derive(Debug, Args)]
pub(crate) struct ElectArgs {
    pub(crate) name: String,
    pub(crate) proposal: Option<String>,
    /// Observe the election instead of campaigning.
    #[arg(short, long)]
    pub(crate) listen: bool,
    #[arg(long, default_value_t = 10)]
    pub(crate) ttl: i64,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Saves a backup of the cluster (from the first endpoint) to a file.
    Save { file: PathBuf },
    /// Summarizes a backup file: hash, revision, keys, size.
    Status { file: PathBuf },
    /// Checks a backup file's digest and internal consistency.
    Verify { file: PathBuf },
    /// Restores a backup into a new data dir, for a new cluster.
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    pub(crate) file: PathBuf,
    /// This member's name.
    #[arg(long, default_value = "default")]
    pub(crate) name: String,
    /// The new cluster: name=peer-url,...
    #[arg(long, default_value = "default=http://localhost:2380")]
    pub(crate) initial_cluster: String,
    #[arg(long, default_value = "etcd-cluster")]
    pub(crate) initial_cluster_token: String,
    /// This member's peer URLs.
    #[arg(long, default_value = "http://localhost:2380")]
    pub(crate) initial_advertise_peer_urls: String,
    /// The data dir to create (default: NAME.etcd).
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (s, ms) in [("500ms", 500), ("5s", 5000), ("2m", 120_000), ("3", 3000)] {
            assert_eq!(parse_duration(s).unwrap(), Duration::from_millis(ms), "{s}");
        }
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
