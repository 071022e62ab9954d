//! Scheduled backups (`--backup-dir`, `--backup-interval`,
//! `--backup-retention`): every interval, a backup of this member's store,
//! the same bytes the Snapshot RPC streams, so `cairnctl snapshot verify`
//! checks it and `cairnctl snapshot restore` restores it.
//!
//! Each backup is written as `<name>.tmp`, synced, renamed to
//! `backup-<unix ms>-rev<revision>.db` and the directory synced: a crash
//! leaves at most a `.tmp`, never a file that looks whole but is not.
//! Leftover `.tmp` files are removed when the task starts. Names sort by
//! time, so pruning keeps the newest `--backup-retention`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_raft_storage::Store;
use tokio::task::JoinHandle;

/// The schedule.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    pub(crate) dir: PathBuf,
    pub(crate) interval: Duration,
    pub(crate) retention: usize,
}

/// Starts the backup task; it runs until aborted.
pub(crate) fn spawn(store: Store, schedule: Schedule) -> JoinHandle<()> {
    tokio::spawn(async move {
        let dir = schedule.dir.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || clean(&dir)).await {
            tracing::warn!(error = %e, "backup cleanup failed");
        }
        let mut tick = tokio::time::interval(schedule.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is now: skip it, so a restart loop doesn't back up
        // on every start.
        tick.tick().await;
        loop {
            tick.tick().await;
            let (store, s) = (store.clone(), schedule.clone());
            match tokio::task::spawn_blocking(move || backup_once(&store, &s)).await {
                Ok(Ok(path)) => tracing::info!(path = %path.display(), "scheduled backup written"),
                Ok(Err(e)) => tracing::warn!(error = %e, "scheduled backup failed"),
                Err(e) => tracing::warn!(error = %e, "scheduled backup task failed"),
            }
        }
    })
}

/// Removes `.tmp` files a crash left.
fn clean(dir: &Path) -> std::io::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Writes one backup atomically, then prunes old ones. Returns its path.
pub(crate) fn backup_once(store: &Store, s: &Schedule) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(&s.dir)?;
    let revision = store.revision();
    let mut backup = store.backup()?;
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let name = format!("backup-{ms:013}-rev{revision}.db");
    let path = s.dir.join(&name);
    let tmp = s.dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    std::io::copy(&mut backup, &mut f)?;
    // Durability: the backup is whole on disk before it gets its name.
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(&s.dir)?.sync_all()?;
    prune(&s.dir, s.retention)?;
    Ok(path)
}

/// Keeps the newest `keep` backups.
fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("backup-") && n.ends_with(".db"))
        })
        .collect();
    backups.sort();
    let excess = backups.len().saturating_sub(keep);
    for old in &backups[..excess] {
        std::fs::remove_file(old)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for ms in [3, 1, 2, 5, 4] {
            std::fs::write(dir.path().join(format!("backup-{ms:013}-rev1.db")), b"").unwrap();
        }
        std::fs::write(dir.path().join("other.db"), b"").unwrap();
        prune(dir.path(), 2).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                "backup-0000000000004-rev1.db",
                "backup-0000000000005-rev1.db",
                "other.db"
            ]
        );
    }
}
