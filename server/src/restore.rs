//! Restoring a backup into a fresh data dir, for a new cluster: what
//! `cairnctl snapshot restore` runs (etcd's `etcdutl snapshot restore`).
//!
//! Each member of the new cluster restores the same backup with its own
//! `--name` and `--initial-advertise-peer-urls` and the shared
//! `--initial-cluster` and `--initial-cluster-token`. The member and
//! cluster ids are derived exactly as a bootstrap derives them, and the
//! data dir afterwards is that of a member that has started before, so the
//! `cairn` started on it ignores the bootstrap flags and keeps every key,
//! revision, lease and alarm of the backup.

use std::path::Path;

use cairn_raft_storage::BackupInfo;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::member::{self, MemberIds};

/// Restores backup file `backup` into `config.data_dir()` as member `config.name` of
/// the new cluster `config.initial_cluster()`.
///
/// # Errors
/// [`Error::DataDirNotEmpty`] if the data dir exists and holds anything;
/// [`Error::Config`] if the flags do not name this member;
/// [`Error::Storage`] if the backup does not verify or cannot be written.
pub fn restore(backup: &Path, config: &Config) -> Result<(MemberIds, BackupInfo)> {
    let dir = config.data_dir();
    if !is_empty_or_missing(&dir)? {
        return Err(Error::DataDirNotEmpty(dir));
    }
    // Check the backup and the flags before anything is created.
    cairn_raft_storage::verify(backup)?;
    let ids = member::derive(config)?;
    let members = member::initial_members(config);
    let member_dir = dir.join("member");
    std::fs::create_dir_all(&member_dir).map_err(|source| Error::DataDir {
        path: member_dir.clone(),
        source,
    })?;
    let info =
        cairn_raft_storage::restore(backup, &member_dir.join("store"), members, ids.member_id)?;
    // Last: a data dir with an id file is a member; without it, a restart
    // refuses the half-made storage instead of bootstrapping over it.
    member::store(&member_dir, ids)?;
    Ok((ids, info))
}

fn is_empty_or_missing(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(source) => Err(Error::DataDir {
            path: dir.to_path_buf(),
            source,
        }),
    }
}
