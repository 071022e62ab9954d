//! openraft's state machine: the MVCC store plus its snapshots.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};

use crate::error::Error;
use crate::mvcc::Store;
use crate::snapshot::{self, Decoded, INSTALLING};
use crate::typ::{NodeId, Response, TypeConfig};

/// openraft's state machine over the MVCC [`Store`].
#[derive(Clone)]
pub struct StateMachine {
    pub(crate) store: Store,
    pub(crate) raft_tree: sled::Tree,
    pub(crate) dir: Arc<PathBuf>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("store", &self.store)
            .finish()
    }
}

fn sm_err(verb: ErrorVerb, e: Error) -> StorageError<NodeId> {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        openraft::AnyError::new(&e),
    )
    .into()
}

fn snap_err(verb: ErrorVerb, e: Error) -> StorageError<NodeId> {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        openraft::AnyError::new(&e),
    )
    .into()
}

impl StateMachine {
    /// The read handle on the store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Saves and installs snapshot `bytes`. Also used by `open` to finish an
    /// install that a crash interrupted.
    pub(crate) fn install_bytes(&self, bytes: &[u8]) -> Result<(), Error> {
        let decoded = Decoded::new(bytes)?;
        snapshot::save(&self.dir, bytes)?;
        self.raft_tree.insert(INSTALLING, &[1u8])?;
        // Durability: the marker is on disk before the old state goes.
        self.raft_tree.flush()?;
        snapshot::load_into(&self.store, &decoded)?;
        self.raft_tree.remove(INSTALLING)?;
        self.raft_tree.flush()?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let sm = self.clone();
        let (header, bytes) = tokio::task::spawn_blocking(move || -> Result<_, Error> {
            let (header, bytes) = snapshot::build(&sm.store)?;
            snapshot::save(&sm.dir, &bytes)?;
            Ok((header, bytes))
        })
        .await
        .map_err(|e| {
            snap_err(
                ErrorVerb::Write,
                Error::Io(std::io::Error::other(e.to_string())),
            )
        })?
        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        Ok(Snapshot {
            meta: header.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, openraft::BasicNode>,
        ),
        StorageError<NodeId>,
    > {
        Ok(self.store.applied_state())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        self.store
            .apply(entries)
            .map_err(|e| sm_err(ErrorVerb::Write, e))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        let sm = self.clone();
        let want = meta.clone();
        tokio::task::spawn_blocking(move || -> Result<(), Error> {
            let header = Decoded::new(&bytes)?.header;
            if header.meta != want {
                return Err(Error::Corruption(format!(
                    "snapshot says it is {:?}, the leader said {:?}",
                    header.meta.snapshot_id, want.snapshot_id
                )));
            }
            sm.install_bytes(&bytes)
        })
        .await
        .map_err(|e| {
            snap_err(
                ErrorVerb::Write,
                Error::Io(std::io::Error::other(e.to_string())),
            )
        })?
        .map_err(|e| snap_err(ErrorVerb::Write, e))
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let Some(bytes) = snapshot::load(&self.dir).map_err(|e| snap_err(ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        let meta = Decoded::new(&bytes)
            .map_err(|e| snap_err(ErrorVerb::Read, e))?
            .header
            .meta;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
