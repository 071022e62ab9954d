//! openraft's log storage on sled.
//!
//! # On-disk layout
//! - tree `log`: index (u64 BE) -> postcard(Entry)
//! - tree `raft`: `vote`, `committed`, `purged` -> postcard values
//!
//! # Durability
//! `append` writes the entries to sled one by one, in index order (sled
//! recovers its log as a prefix, so a crash keeps a prefix of them; a sled
//! batch would cost two more synced writes), flushes the database, and
//! only then calls openraft's callback. Group commit happens a level up:
//! the proposer puts the requests that queue meanwhile into one entry
//! (`server/src/propose.rs`). `save_vote` flushes before
//! it returns. `purge` flushes before it deletes, so the state machine is
//! durable at least as far as the log it lets go of (the state machine and
//! the log share one sled database, so one flush covers both).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, Membership, RaftLogId,
    StorageError, StorageIOError, Vote,
};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::typ::{Member, NodeId, TypeConfig};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"purged";

/// openraft's log store. Cloning gives a reader on the same log.
#[derive(Clone)]
pub struct LogStore {
    engine: Arc<Engine>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("entries", &self.engine.backend().log.len())
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

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("invariant: openraft's types always serialize")
}

impl LogStore {
    pub(crate) fn open(engine: Arc<Engine>) -> Result<LogStore> {
        Ok(LogStore { engine })
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        let b = self.engine.backend();
        b.raft.get(key)?.map(|v| decode(&v)).transpose()
    }

    fn last_purged(&self) -> Result<Option<LogId<NodeId>>> {
        self.meta(KEY_PURGED)
    }

    /// `--force-new-cluster`: appends a membership entry that leaves `id`
    /// (described by `member`) the only member, after every entry in the
    /// log, and flushes it. Everything already in the log is kept, and is
    /// committed once the member leads its new one-member cluster.
    ///
    /// Call it before openraft opens the log.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn force_sole_member(&self, id: NodeId, member: Member) -> Result<()> {
        let w = self.engine.write();
        let last = match w.log.last()? {
            Some((_, v)) => Some(*decode::<Entry<TypeConfig>>(&v)?.get_log_id()),
            None => self.last_purged()?,
        };
        let vote: Option<Vote<NodeId>> = self.meta(KEY_VOTE)?;
        // A term of its own, above every vote and entry so far, so the new
        // entry's leader id and the vote agree (a leader id of an old term
        // with this member's id would contradict that term's real leader).
        let term = vote
            .map(|v| v.leader_id().term)
            .max(last.map(|l| l.leader_id.term))
            .unwrap_or(0)
            + 1;
        let index = last.map_or(0, |l| l.index + 1);
        let membership =
            Membership::new(vec![BTreeSet::from([id])], BTreeMap::from([(id, member)]));
        let entry = Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(term, id), index),
            payload: EntryPayload::Membership(membership),
        };
        w.log.insert(index.to_be_bytes(), encode(&entry))?;
        w.raft.insert(KEY_VOTE, encode(&Vote::new(term, id)))?;
        w.db.flush()?;
        Ok(())
    }

    /// Records `vote` durably: a restored member starts in the backup's
    /// term, so its new entries get later terms.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub(crate) fn set_vote(&self, vote: &Vote<NodeId>) -> Result<()> {
        let w = self.engine.write();
        w.raft.insert(KEY_VOTE, encode(vote))?;
        // Durability: the vote is on disk before the member first starts.
        w.db.flush()?;
        Ok(())
    }

    fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(i.to_be_bytes()),
            Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(i.to_be_bytes()),
            Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.engine
            .backend()
            .log
            .range::<[u8; 8], _>((start, end))
            .map(|item| decode(&item?.1))
            .collect()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        self.entries(range).map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id = self.last_purged().map_err(read_err)?;
        let last = match self.engine.backend().log.last().map_err(read_err)? {
            Some((_, v)) => Some(
                *decode::<Entry<TypeConfig>>(&v)
                    .map_err(read_err)?
                    .get_log_id(),
            ),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let err = |e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e);
        let backend = {
            let w = self.engine.write();
            w.raft.insert(KEY_VOTE, encode(vote)).map_err(err)?;
            w.backend()
        };
        // Durability: a vote must be on disk before it is acted on. If a
        // defragment switched since, the new generation got the vote and
        // was flushed before it became current.
        backend.db.flush_async().await.map_err(err)?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.meta(KEY_VOTE)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Not flushed: a lost committed id only means re-learning it from
        // the leader (or re-applying on a single node, from the log).
        self.engine
            .write()
            .raft
            .insert(KEY_COMMITTED, encode(&committed))
            .map_err(write_err)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self
            .meta::<Option<LogId<NodeId>>>(KEY_COMMITTED)
            .map_err(read_err)?
            .flatten())
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
        let backend = {
            let w = self.engine.write();
            for e in entries {
                w.log
                    .insert(e.log_id.index.to_be_bytes(), encode(&e))
                    .map_err(write_err)?;
            }
            w.backend()
        };
        // Durability: the callback runs only after the flush. It blocks this
        // worker thread, which is free to: openraft 0.9 awaits the callback
        // before it does anything else, and the runtime's other workers take
        // the other tasks. (A flusher thread of its own only added a thread
        // hop, since no second append comes while one waits.) A defragment
        // that switched since the entries were written copied them into the
        // new generation and flushed it; flushing the old one is enough.
        crate::crash::point(crate::crash::BEFORE_LOG_FLUSH);
        let flushed = backend.db.flush().map(|_| ());
        crate::crash::point(crate::crash::AFTER_LOG_FLUSH);
        callback.log_io_completed(flushed.map_err(|e| std::io::Error::other(e.to_string())));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let w = self.engine.write();
        // A defragment under way copies the log again from here.
        self.engine.truncating(log_id.index);
        let mut batch = sled::Batch::default();
        for item in w.log.range(log_id.index.to_be_bytes()..) {
            batch.remove(item.map_err(write_err)?.0);
        }
        w.log.apply_batch(batch).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Durability: the state machine (same database) is flushed first, so
        // no purged entry is ever the only record of an applied change.
        // (A defragment's switch flushes the new generation before it is
        // current, so a switch since changes nothing.)
        let backend = self.engine.backend();
        backend.db.flush_async().await.map_err(write_err)?;
        drop(backend);
        let w = self.engine.write();
        w.raft
            .insert(KEY_PURGED, encode(&log_id))
            .map_err(write_err)?;
        let mut batch = sled::Batch::default();
        for item in w.log.range(..=log_id.index.to_be_bytes()) {
            batch.remove(item.map_err(write_err)?.0);
        }
        w.log.apply_batch(batch).map_err(write_err)
    }
}
