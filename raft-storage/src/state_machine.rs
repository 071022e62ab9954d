//! openraft's state machine: the MVCC store plus its snapshots.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};

use crate::error::Error;
use crate::mvcc::Store;
use crate::snapshot::{self, INSTALLING};
use crate::typ::{NodeId, Response, SnapshotFile, TypeConfig};

/// Request bytes per `Store::apply` when a call applies many entries.
const APPLY_CHUNK_BYTES: usize = 128 << 10;

/// openraft's state machine over the MVCC [`Store`].
#[derive(Clone)]
pub struct StateMachine {
    store: Store,
    dir: Arc<PathBuf>,
    /// The last log id of `snap/current`. Held while a build saves or an
    /// install runs, so the two take turns on the snapshot files.
    current: Arc<Mutex<Option<LogId<NodeId>>>>,
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

    /// Opens the state machine of a data dir whose store is `store`.
    pub(crate) fn new(store: Store, dir: PathBuf) -> Result<Self, Error> {
        let current =
            snapshot::read_header(&dir, snapshot::CURRENT)?.and_then(|h| h.meta.last_log_id);
        Ok(StateMachine {
            store,
            dir: Arc::new(dir),
            current: Arc::new(Mutex::new(current)),
        })
    }

    /// Installs snapshot file `name` (under `snap/`): [`snapshot::RECEIVED`]
    /// once a received file is whole there, or either of them when `open`
    /// finishes an install a crash interrupted.
    pub(crate) fn install_file(&self, name: &str) -> Result<(), Error> {
        let mut current = self.current.lock();
        let p = snapshot::path(&self.dir, name);
        let header = snapshot::verify(&p)?;
        // No build copies and no defragment runs meanwhile; the whole
        // install is one write.
        let _copy = self.store.shared.copies.write();
        let engine = &self.store.shared.engine;
        let w = engine.write();
        w.raft.insert(INSTALLING, &[1u8])?;
        // Durability: the marker is on disk before the old state goes.
        engine.sync(&w)?;
        snapshot::load_into(&self.store, &w.mvcc, &p)?;
        // Durability: the loaded state is on disk before the file says so.
        engine.sync(&w)?;
        if name != snapshot::CURRENT {
            snapshot::rename(&self.dir, &p, snapshot::CURRENT)?;
        }
        w.raft.remove(INSTALLING)?;
        engine.sync(&w)?;
        drop(w);
        *current = header.meta.last_log_id;
        Ok(())
    }

    /// Builds a snapshot and saves it as current, unless a newer one is.
    /// Returns its header and the file, open at its start.
    fn build_and_save(&self) -> Result<(snapshot::Header, File), Error> {
        let tmp = snapshot::scratch(&snapshot::snap_dir(&self.dir), "build")?;
        let header = snapshot::build(&self.store, &tmp).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        let mut current = self.current.lock();
        if *current < header.meta.last_log_id {
            let save = || -> Result<(), Error> {
                // Durability: the file is whole on disk before it is
                // renamed; and the state it describes is on disk before
                // the file is, so a restart never finds a snapshot ahead of
                // its store (openraft refuses that state). (A defragment's
                // switch syncs the new generation before it is current.)
                File::open(&tmp)?.sync_all()?;
                let engine = &self.store.shared.engine;
                engine.sync(&engine.backend())?;
                snapshot::rename(&self.dir, &tmp, snapshot::CURRENT)
            };
            if let Err(e) = save() {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            *current = header.meta.last_log_id;
            Ok((
                header,
                File::open(snapshot::path(&self.dir, snapshot::CURRENT))?,
            ))
        } else {
            // Older than current: handed out once, from an unlinked file.
            let f = File::open(&tmp)?;
            std::fs::remove_file(&tmp)?;
            Ok((header, f))
        }
    }

    /// The current snapshot's header and file, open at its start.
    fn current(&self) -> Result<Option<(snapshot::Header, File)>, Error> {
        let _turn = self.current.lock();
        let p = snapshot::path(&self.dir, snapshot::CURRENT);
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // The records and checksum are checked by whoever installs it.
        let header = snapshot::Reader::new(std::io::BufReader::new(&f))?.header;
        (&f).seek(SeekFrom::Start(0))?;
        Ok(Some((header, f)))
    }

    /// Takes a received snapshot that openraft hands over for install:
    /// checks it is the one the leader described, then installs it.
    fn install_received(
        &self,
        file: std::fs::File,
        received: &Path,
        want: &SnapshotMeta<NodeId, crate::typ::Member>,
    ) -> Result<(), Error> {
        // Durability: the bytes are on disk before the file is renamed.
        file.sync_all()?;
        drop(file);
        let header = snapshot::Reader::new(std::io::BufReader::new(File::open(received)?))?.header;
        if header.meta != *want {
            return Err(Error::Corruption(format!(
                "snapshot says it is {:?}, the leader said {:?}",
                header.meta.snapshot_id, want.snapshot_id
            )));
        }
        snapshot::rename(&self.dir, received, snapshot::RECEIVED)?;
        self.install_file(snapshot::RECEIVED)
    }
}

/// Runs snapshot work (file and database IO, whole-store copies) on
/// tokio's blocking pool, and reports its failure as openraft wants.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, StorageError<NodeId>> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))
        .and_then(|r| r)
        .map_err(|e| snap_err(ErrorVerb::Write, e))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let sm = self.clone();
        let (header, f) = off_runtime(move || sm.build_and_save()).await?;
        Ok(Snapshot {
            meta: header.meta,
            snapshot: Box::new(SnapshotFile::sending(f)),
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
            StoredMembership<NodeId, crate::typ::Member>,
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
        crate::crash::point(crate::crash::BEFORE_APPLY);
        // A member catching up gets thousands of entries in one call; one
        // sled batch for all of them would hold their pages beyond sled's
        // cache bound (1M puts took a new member to 1.4 GiB). So they are
        // applied in parts of about APPLY_CHUNK_BYTES, each one atomic
        // `Store::apply` with its own applied log id.
        let mut responses = Vec::new();
        let mut part = Vec::new();
        let mut bytes = 0;
        for entry in entries {
            if let EntryPayload::Normal(req) = &entry.payload {
                bytes += req.encoded_len();
            }
            part.push(entry);
            if bytes >= APPLY_CHUNK_BYTES {
                bytes = 0;
                let r = self.store.apply(std::mem::take(&mut part));
                responses.extend(r.map_err(|e| sm_err(ErrorVerb::Write, e))?);
            }
        }
        if !part.is_empty() {
            let r = self.store.apply(part);
            responses.extend(r.map_err(|e| sm_err(ErrorVerb::Write, e))?);
        }
        crate::crash::point(crate::crash::AFTER_APPLY);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<SnapshotFile>, StorageError<NodeId>> {
        let dir = self.dir.clone();
        off_runtime(move || {
            let p = snapshot::scratch(&snapshot::snap_dir(&dir), "receiving")?;
            let f = File::create(&p)?;
            Ok(Box::new(SnapshotFile::receiving(f, p)))
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, crate::typ::Member>,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError<NodeId>> {
        let (file, received) = snapshot.into_std().await;
        let sm = self.clone();
        let want = meta.clone();
        off_runtime(move || {
            let (file, received) = match received {
                Some(p) => (file, p),
                // A snapshot built here (openraft's own tests install those):
                // copied, since the install renames its file.
                None => {
                    let p = snapshot::scratch(&snapshot::snap_dir(&sm.dir), "receiving")?;
                    let mut out = File::create(&p)?;
                    let mut file = file;
                    file.seek(SeekFrom::Start(0))?;
                    std::io::copy(&mut file, &mut out)?;
                    (out, p)
                }
            };
            sm.install_received(file, &received, &want)
                .inspect_err(|_| {
                    let _ = std::fs::remove_file(&received);
                })
        })
        .await
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let sm = self.clone();
        let current = tokio::task::spawn_blocking(move || sm.current())
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))
            .and_then(|r| r)
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(current.map(|(header, f)| Snapshot {
            meta: header.meta,
            snapshot: Box::new(SnapshotFile::sending(f)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use openraft::CommittedLeaderId;

    use super::*;
    use crate::storage::{open, Options};

    /// A call with more than APPLY_CHUNK_BYTES of requests is applied in
    /// parts, and answers every entry in order as one call would.
    #[tokio::test]
    async fn a_long_apply_call_is_applied_in_parts() {
        use cairn_proto::etcdserverpb::PutRequest;
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(&Options::new(dir.path())).unwrap();
        let entries: Vec<_> = (1..=100u64)
            .map(|i| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
                payload: EntryPayload::Normal(crate::typ::Request::Put(PutRequest {
                    key: format!("k{i:03}").into_bytes(),
                    value: vec![b'v'; 4096],
                    ..Default::default()
                })),
            })
            .collect();
        struct Parts(std::sync::atomic::AtomicUsize);
        impl crate::Observer for Parts {
            fn applied(&self, _: crate::Changes) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
            fn replaced(&self, _: i64, _: i64) {}
        }
        let parts = Arc::new(Parts(Default::default()));
        let observer: Arc<dyn crate::Observer> = parts.clone();
        o.store.set_observer(Arc::downgrade(&observer));
        let responses = o.state_machine.apply(entries).await.unwrap();
        // 100 puts of 4 KiB in parts of 128 KiB: 4 parts.
        assert_eq!(parts.0.load(Ordering::SeqCst), 4);
        let revisions: Vec<i64> = responses
            .iter()
            .map(|r| match r {
                Response::Put(p) => p.header.as_ref().unwrap().revision,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(revisions, (2..=101).collect::<Vec<_>>());
        assert_eq!(o.store.revision(), 101);
        assert_eq!(o.store.applied_index(), Some(100));
    }

    /// A snapshot being received that is dropped without an install (a
    /// stream cut short, or one openraft finds outdated) leaves no file.
    #[tokio::test]
    async fn a_dropped_receiving_snapshot_leaves_no_file() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(&Options::new(dir.path())).unwrap();
        let mut f = o.state_machine.begin_receiving_snapshot().await.unwrap();
        f.write_all(b"part of a snapshot").await.unwrap();
        f.flush().await.unwrap();
        let files = || std::fs::read_dir(dir.path().join("snap")).unwrap().count();
        assert_eq!(files(), 1);
        drop(f);
        assert_eq!(files(), 0);
    }

    /// A received snapshot is checked whole before openraft is asked to
    /// install it: a damaged one, or another than the leader described, is
    /// refused; the whole one passes.
    #[tokio::test]
    async fn a_received_snapshot_is_checked_before_the_install() {
        use tokio::io::AsyncWriteExt;
        let src = tempfile::tempdir().unwrap();
        let mut a = open(&Options::new(src.path())).unwrap();
        a.store
            .apply(vec![Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
                payload: openraft::EntryPayload::Blank,
            }])
            .unwrap();
        let snap = a
            .state_machine
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let mut bytes = Vec::new();
        let mut sent = snap.snapshot;
        tokio::io::AsyncReadExt::read_to_end(&mut sent, &mut bytes)
            .await
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let o = open(&Options::new(dir.path())).unwrap();
        let receive = |bytes: Vec<u8>| {
            let sm = o.state_machine.clone();
            async move {
                let mut sm = sm;
                let mut f = sm.begin_receiving_snapshot().await.unwrap();
                f.write_all(&bytes).await.unwrap();
                f
            }
        };
        let mut whole = receive(bytes.clone()).await;
        whole.check(&snap.meta).await.unwrap();
        let mut other = snap.meta.clone();
        other.snapshot_id = "another".into();
        let err = whole.check(&other).await.unwrap_err().to_string();
        assert!(err.contains("the leader said"), "{err}");
        let mut damaged = bytes.clone();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 0xff;
        let err = receive(damaged).await.check(&snap.meta).await.unwrap_err();
        assert!(err.to_string().contains("snapshot"), "{err}");
        let err = receive(bytes[..bytes.len() - 3].to_vec())
            .await
            .check(&snap.meta)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cut short"), "{err}");
    }

    /// An install that finished while a build was copying makes the build's
    /// snapshot the older one: it must not replace `snap/current`.
    #[test]
    fn a_build_never_replaces_a_newer_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let o = open(&Options::new(dir.path())).unwrap();
        let applied = LogId::new(CommittedLeaderId::new(1, 1), 1);
        o.store
            .apply(vec![Entry {
                log_id: applied,
                payload: openraft::EntryPayload::Blank,
            }])
            .unwrap();
        let newer = LogId::new(CommittedLeaderId::new(3, 1), 99);
        *o.state_machine.current.lock() = Some(newer);
        let current = || snapshot::read_header(dir.path(), snapshot::CURRENT).unwrap();
        let (header, _) = o.state_machine.build_and_save().unwrap();
        assert_eq!(header.meta.last_log_id, Some(applied));
        assert!(current().is_none());
        assert_eq!(*o.state_machine.current.lock(), Some(newer));
        // The unlinked build left no scratch file behind.
        let snap = std::fs::read_dir(dir.path().join("snap")).unwrap().count();
        assert_eq!(snap, 0);

        *o.state_machine.current.lock() = None;
        o.state_machine.build_and_save().unwrap();
        assert_eq!(current().unwrap().meta.last_log_id, Some(applied));
    }
}
