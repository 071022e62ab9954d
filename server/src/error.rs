//! The crate's error: why a node could not start.
//!
//! Errors of client requests never appear here; they become a
//! `tonic::Status` in `status.rs`.
//!
//! Messages leave the cause out and expose it as `source()`, so that a
//! report printing the chain (`anyhow`'s `{:#}`) says each thing once.

use std::path::PathBuf;
use std::time::Duration;

use cairn_raft_storage::NodeId;

use crate::config::{ConfigError, Url};

/// Why [`crate::Node::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The flags disagree with each other, or do not describe a cluster this
    /// version can bootstrap.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data dir, or a file of it, could not be created, read or written.
    #[error("data dir: {path}")]
    DataDir {
        /// The file or directory.
        path: PathBuf,
        /// The OS's reason.
        source: std::io::Error,
    },
    /// The member identity file is not what this version writes.
    #[error("data dir: {path}: corrupt member file: {reason}")]
    MemberFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A restore would overwrite a data dir that holds something.
    #[error("data dir: {0}: not empty; a restore writes only into a new data dir")]
    DataDirNotEmpty(PathBuf),
    /// The storage exists but the member identity file does not.
    #[error("data dir: {0}: storage exists but the member id file is missing")]
    MissingMemberFile(PathBuf),
    /// `--initial-cluster-state existing`, and the cluster could not tell
    /// this member its id.
    #[error("joining the cluster: {0}")]
    Join(String),
    /// The storage refused to open (corrupt, locked by another process, ...).
    #[error("storage")]
    Storage(#[from] cairn_raft_storage::Error),
    /// A listen URL names a host that does not resolve.
    #[error("listen URL {url}: cannot resolve host")]
    Resolve {
        /// The URL.
        url: Url,
        /// The resolver's reason.
        source: std::io::Error,
    },
    /// A listen URL could not be bound (port in use, no such address, ...).
    #[error("listen URL {url}")]
    Bind {
        /// The URL.
        url: Url,
        /// The OS's reason.
        source: std::io::Error,
    },
    /// An https listen URL, which needs the TLS flags this version lacks.
    #[error("listen URL {0}: TLS is not supported yet")]
    TlsUnsupported(Url),
    /// openraft rejected the derived raft configuration.
    #[error("raft config")]
    RaftConfig(#[source] Box<openraft::ConfigError>),
    /// openraft stopped: a storage failure or a panic inside raft.
    #[error("raft")]
    Raft(#[source] Box<openraft::error::Fatal<NodeId>>),
    /// Creating the one-member cluster failed.
    #[error("raft: bootstrapping the cluster")]
    Initialize(#[source] Box<openraft::error::InitializeError<NodeId, cairn_raft_storage::Member>>),
    /// This member did not become leader in time.
    #[error("no leader elected within {0:?}")]
    NoLeader(Duration),
    /// A thread of the node (the watch hub's) could not be spawned.
    #[error("spawning a thread")]
    Thread(#[source] std::io::Error),
    /// A blocking task of the start sequence panicked or was cancelled.
    #[error("a start-up task failed")]
    Task(#[from] tokio::task::JoinError),
}

// openraft's errors are large; boxing them keeps every `Result` small.

impl From<openraft::ConfigError> for Error {
    fn from(e: openraft::ConfigError) -> Self {
        Error::RaftConfig(Box::new(e))
    }
}

impl From<openraft::error::Fatal<NodeId>> for Error {
    fn from(e: openraft::error::Fatal<NodeId>) -> Self {
        Error::Raft(Box::new(e))
    }
}

impl From<openraft::error::InitializeError<NodeId, cairn_raft_storage::Member>> for Error {
    fn from(e: openraft::error::InitializeError<NodeId, cairn_raft_storage::Member>) -> Self {
        Error::Initialize(Box::new(e))
    }
}

/// Crate-wide result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
