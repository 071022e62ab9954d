//! The crate's error: why a node could not start.
//!
//! Errors of client requests never appear here; they become a
//! `tonic::Status` in `status.rs`.

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
    #[error("data dir: {path}: {source}")]
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
    /// The storage exists but the member identity file does not.
    #[error("data dir: {0}: storage exists but the member id file is missing")]
    MissingMemberFile(PathBuf),
    /// The storage refused to open (corrupt, locked by another process, ...).
    #[error("storage: {0}")]
    Storage(#[from] cairn_raft_storage::Error),
    /// A listen URL names a host that does not resolve.
    #[error("listen URL {url}: cannot resolve host: {source}")]
    Resolve {
        /// The URL.
        url: Url,
        /// The resolver's reason.
        source: std::io::Error,
    },
    /// A listen URL could not be bound (port in use, no such address, ...).
    #[error("listen URL {url}: {source}")]
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
    #[error("raft config: {0}")]
    RaftConfig(#[from] openraft::ConfigError),
    /// openraft stopped: a storage failure or a panic inside raft.
    #[error("raft: {0}")]
    Raft(#[from] openraft::error::Fatal<NodeId>),
    /// Creating the one-member cluster failed.
    #[error("raft: bootstrapping the cluster: {0}")]
    Initialize(#[from] openraft::error::InitializeError<NodeId, openraft::BasicNode>),
    /// This member did not become leader in time.
    #[error("no leader elected within {0:?}")]
    NoLeader(Duration),
    /// A blocking task of the start sequence panicked or was cancelled.
    #[error("start-up task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Crate-wide result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
