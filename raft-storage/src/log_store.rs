//! openraft's log storage, on the log's own write-ahead log (`wal`).
//!
//! # Durability
//! `append` returns to openraft's callback only once the entries are
//! synced (`fdatasync`); so does `save_vote`. Group commit happens a level
//! up: the proposer puts the requests that queue meanwhile into one entry
//! (`server/src/propose.rs`). `purge` first makes the state machine durable
//! past what it lets go of (`Engine::sync`: sled's flush, then `fdatasync`
//! of its files), since the state machine is in sled and the log is not.
//!
//! # Before the write-ahead log
//! Data dirs written by earlier builds kept the log in sled (tree `log`,
//! and `vote`, `committed` and `purged` in tree `raft`). [`LogStore::open`]
//! moves such a log into a new write-ahead log (written beside it and
//! renamed into place once synced), then empties the trees.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, Membership,
    StorageError, StorageIOError, Vote,
};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::typ::{Member, NodeId, TypeConfig};
use crate::wal::Wal;

/// Where earlier builds kept the log in sled.
const LEGACY_LOG_TREE: &str = "log";
const LEGACY_KEYS: [&[u8]; 3] = [b"vote", b"committed", b"purged"];

/// openraft's log store. Cloning gives a reader on the same log.
#[derive(Clone)]
pub struct LogStore {
    /// For a sync of the state machine before a purge.
    engine: Arc<Engine>,
    wal: Arc<Wal>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("entries", &self.wal.len())
            .finish()
    }
}

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    io_err(ErrorSubject::Logs, ErrorVerb::Write, e)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Corruption(format!("raft log: {e}")))
}

impl LogStore {
    /// Opens the write-ahead log in `wal_dir`, first moving into it a log
    /// that an earlier build kept in sled (see the module docs).
    pub(crate) fn open(engine: Arc<Engine>, wal_dir: &Path) -> Result<LogStore> {
        let backend = engine.backend();
        let legacy = backend.db.open_tree(LEGACY_LOG_TREE)?;
        if !wal_dir.exists() {
            let [vote, committed, purged] =
                LEGACY_KEYS.map(|k| backend.raft.get(k).map(|v| v.map(|v| v.to_vec())));
            let entries = legacy
                .iter()
                .map(|item| decode(&item?.1))
                .collect::<Result<Vec<Entry<TypeConfig>>>>()?;
            Wal::create(
                wal_dir,
                vote?.map(|v| decode(&v)).transpose()?,
                committed?
                    .map(|v| decode::<Option<LogId<NodeId>>>(&v))
                    .transpose()?
                    .flatten(),
                purged?.map(|v| decode(&v)).transpose()?,
                entries,
            )?;
        }
        // Gone from sled once the write-ahead log holds it (a crash may
        // have come between the two).
        let mut moved = !legacy.is_empty();
        legacy.clear()?;
        for k in LEGACY_KEYS {
            moved |= backend.raft.remove(k)?.is_some();
        }
        if moved {
            backend.db.flush()?;
        }
        let wal = Arc::new(Wal::open(wal_dir)?);
        Ok(LogStore { engine, wal })
    }

    /// `--force-new-cluster`: appends a membership entry that leaves `id`
    /// (described by `member`) the only member, after every entry in the
    /// log, and syncs it. Everything already in the log is kept, and is
    /// committed once the member leads its new one-member cluster.
    ///
    /// Call it before openraft opens the log.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn force_sole_member(&self, id: NodeId, member: Member) -> Result<()> {
        let last = self.wal.last_log_id();
        // A term of its own, above every vote and entry so far, so the new
        // entry's leader id and the vote agree (a leader id of an old term
        // with this member's id would contradict that term's real leader).
        let term = self
            .wal
            .vote()
            .map(|v| v.leader_id().term)
            .max(last.map(|l| l.leader_id.term))
            .unwrap_or(0)
            + 1;
        let index = last.map_or(0, |l| l.index + 1);
        let membership =
            Membership::new(vec![BTreeSet::from([id])], BTreeMap::from([(id, member)]));
        self.wal.save_vote(&Vote::new(term, id))?;
        self.wal.append([Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(term, id), index),
            payload: EntryPayload::Membership(membership),
        }])
    }

    /// Records `vote` durably: a restored member starts in the backup's
    /// term, so its new entries get later terms.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub(crate) fn set_vote(&self, vote: &Vote<NodeId>) -> Result<()> {
        self.wal.save_vote(vote)
    }
}

/// Runs blocking log IO off the async runtime's core threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        self.wal.entries(range).map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        Ok(LogState {
            last_purged_log_id: self.wal.purged(),
            last_log_id: self.wal.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Durability: a vote is on disk before it is acted on.
        let (wal, vote) = (self.wal.clone(), *vote);
        blocking(move || wal.save_vote(&vote))
            .await
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.wal.vote())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Not synced: a lost committed id only means re-learning it from
        // the leader (or re-applying on a single node, from the log).
        self.wal.save_committed(committed).map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.wal.committed())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        // Durability: the callback runs only after the sync. It blocks this
        // worker thread, which is free to: openraft 0.9 awaits the callback
        // before it does anything else, and the runtime's other workers take
        // the other tasks. (A thread of its own only added a thread hop,
        // since no second append comes while one waits.)
        let synced = self.wal.append(entries);
        callback.log_io_completed(synced.map_err(std::io::Error::from));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.wal.truncate(log_id.index).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Durability: the state machine is on disk past `log_id` first, so
        // no purged entry is ever the only record of an applied change.
        let (engine, wal) = (self.engine.clone(), self.wal.clone());
        blocking(move || {
            engine.sync(&engine.backend())?;
            wal.purge(log_id)
        })
        .await
        .map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::{RaftLogReader, RaftLogStorage};

    use super::*;
    use crate::engine::open_db;
    use crate::storage::{open, Options};

    fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
        postcard::to_stdvec(v).unwrap()
    }

    /// A data dir from before the write-ahead log: the log, vote,
    /// committed and purged ids move into it, and out of sled.
    #[tokio::test]
    async fn a_log_kept_in_sled_moves_to_the_write_ahead_log() {
        let d = tempfile::tempdir().unwrap();
        drop(open(&Options::new(d.path())).unwrap());
        std::fs::remove_dir_all(d.path().join("wal")).unwrap();
        let id = |i| LogId::new(CommittedLeaderId::new(2, 1), i);
        {
            let db = open_db(&d.path().join("db"), 1 << 20).unwrap();
            let (log, raft) = (db.open_tree("log").unwrap(), db.open_tree("raft").unwrap());
            for i in 5..=9 {
                let e = Entry::<TypeConfig> {
                    log_id: id(i),
                    payload: EntryPayload::Blank,
                };
                log.insert(i.to_be_bytes(), encode(&e)).unwrap();
            }
            raft.insert("vote", encode(&Vote::<NodeId>::new(2, 1)))
                .unwrap();
            raft.insert("committed", encode(&Some(id(8)))).unwrap();
            raft.insert("purged", encode(&id(4))).unwrap();
            raft.insert("format", "cairn-1").unwrap();
            db.flush().unwrap();
        }

        for _ in 0..2 {
            let o = open(&Options::new(d.path())).unwrap();
            let mut log = o.log_store.clone();
            let got: Vec<_> = log
                .try_get_log_entries(..)
                .await
                .unwrap()
                .iter()
                .map(|e| e.log_id)
                .collect();
            assert_eq!(got, (5..=9).map(id).collect::<Vec<_>>());
            assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
            assert_eq!(log.read_committed().await.unwrap(), Some(id(8)));
            let state = log.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(id(4)));
            let b = o.store.shared.engine.backend();
            assert!(b.db.open_tree("log").unwrap().is_empty());
            assert!(LEGACY_KEYS.iter().all(|k| b.raft.get(k).unwrap().is_none()));
            assert_eq!(b.raft.get("format").unwrap().unwrap(), "cairn-2");
        }
    }

    /// A database whose log is in its own files refuses to open without
    /// them, rather than start again with an empty log.
    #[test]
    fn a_missing_log_is_refused() {
        let d = tempfile::tempdir().unwrap();
        drop(open(&Options::new(d.path())).unwrap());
        std::fs::remove_dir_all(d.path().join("wal")).unwrap();
        let err = open(&Options::new(d.path())).err().expect("refused");
        assert!(err.to_string().contains("the Raft log is missing"), "{err}");
    }
}
