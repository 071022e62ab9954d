//! The Raft log's own write-ahead log: entries, the vote, and the
//! committed and purged ids, in segment files of checksummed records,
//! synced with `fdatasync`.
//!
//! # Why not sled
//! sled 0.34.7's flush is `pwrite` plus `sync_file_range`, which syncs
//! neither file metadata nor the disk's write cache, and sled never syncs
//! the files it keeps big items in. An acknowledged append could be lost
//! on power loss. Here an append is one `pwrite` and one `fdatasync`, as
//! etcd's WAL does.
//!
//! # On disk
//! ```text
//! <store>/wal/<seq, 16 hex digits>.wal    segments, oldest first
//! record:  len (u32 LE, of the body) | crc32 (u32 LE, of the body) | body
//! body:    tag (u8) | postcard value
//! ```
//! Tags: [`ENTRY`] (an openraft entry), [`VOTE`], [`COMMITTED`],
//! [`TRUNCATE`] (entries from this index on are gone) and [`PURGED`].
//! Each segment begins with the vote, committed and purged ids current when
//! it was begun, so deleting older segments loses nothing. A new segment is
//! begun by the first write after the newest one passes
//! [`SEGMENT_BYTES`]; purge deletes the oldest segments whose entries are
//! all purged.
//!
//! # Durability
//! - [`Wal::append`] and [`Wal::save_vote`] return once the segment is
//!   synced. Every other write is synced by the next of these (the file is
//!   written in order, and `fdatasync` covers all of it).
//! - [`Wal::purge`] syncs its record before it deletes a segment, so a
//!   replay never meets a gap that the record would have explained.
//! - A new segment is synced, and the directory too, before anything is
//!   written after its header.
//!
//! Segments are preallocated (sparse, [`SEGMENT_BYTES`]): a header of
//! zeros ends a segment's records.
//!
//! # Replay
//! [`Wal::open`] reads every segment in order. In the newest segment, a
//! record that the file cuts short, or that fails its checksum and has a
//! sector's worth of it still zeros, is the tail a crash cut short, never
//! acknowledged: it is cut off, with a warning. The newest segment is then
//! zeroed from its last whole record on, so that nothing a crash left
//! there is read as a record later. Any other bad record is
//! [`Error::Corruption`], and the data dir is refused.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read};
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{Entry, LogId, RaftLogId, Vote};
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::typ::{NodeId, TypeConfig};

/// A segment this long is closed; the next write begins a new one.
pub(crate) const SEGMENT_BYTES: u64 = 64 << 20;
/// Length and checksum.
const HEADER: usize = 8;

const ENTRY: u8 = 1;
const VOTE: u8 = 2;
const COMMITTED: u8 = 3;
const TRUNCATE: u8 = 4;
const PURGED: u8 = 5;

/// Where an entry's body is.
#[derive(Clone, Copy, Debug)]
struct Loc {
    log_id: LogId<NodeId>,
    seq: u64,
    /// Of the body, past the record's header.
    offset: u64,
    len: u32,
}

struct Segment {
    file: Arc<File>,
    /// The highest entry index written to it, truncated or not.
    last_index: Option<u64>,
}

/// The log, open. All methods block on file IO.
pub(crate) struct Wal {
    dir: PathBuf,
    /// [`SEGMENT_BYTES`], but for tests.
    segment_bytes: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// By sequence number; the last one is written to.
    segments: BTreeMap<u64, Segment>,
    /// The newest segment's length: where the next record goes.
    len: u64,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
    /// The live entries by index, all above `purged`. (openraft's log has
    /// no gaps, but its storage test suite writes some.)
    entries: BTreeMap<u64, Loc>,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

/// Creates a segment holding `bytes`, preallocated to `size` (sparse: an
/// `fdatasync` that need not record a new file size is about a third
/// faster here), and syncs it.
fn new_segment(path: &Path, bytes: &[u8], size: u64) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    file.set_len(size.max(bytes.len() as u64))?;
    file.write_all_at(bytes, 0)?;
    file.sync_all()?;
    Ok(file)
}

/// How a segment's records end.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// In zeros (the preallocated space) or at the file's end.
    Clean,
    /// In a record a crash left unfinished.
    Torn,
    /// In a record that fails its checksum and was not torn.
    Damaged,
}

/// The unit a disk writes whole.
const SECTOR: u64 = 512;

/// Whether `record`, found at `pos` and failing its checksum, was torn by a
/// crash rather than damaged. A disk writes a sector whole or not at all,
/// and a segment is zeros where nothing was written; so a torn record has
/// a part within one sector that is all zeros. (etcd's WAL judges a bad
/// last record the same way.)
fn torn(pos: u64, record: &[u8]) -> bool {
    let mut at = 0;
    while at < record.len() {
        let sector_end = ((pos + at as u64) / SECTOR + 1) * SECTOR;
        let end = usize::try_from(sector_end - pos).map_or(record.len(), |e| e.min(record.len()));
        if record[at..end].iter().all(|b| *b == 0) {
            return true;
        }
        at = end;
    }
    false
}

/// Fills `buf` from `r`: false if `r` ends first (at once or part way).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<bool> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn record(tag: u8, value: &impl serde::Serialize, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.push(tag);
    postcard::to_io(value, &mut *out).expect("invariant: openraft's types always serialize");
    let body = &out[start + HEADER..];
    let len = u32::try_from(body.len()).expect("invariant: a record is under 4 GiB");
    let crc = crc32fast::hash(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Corruption(format!("raft log {what}: {e}")))
}

impl Inner {
    fn newest(&self) -> (u64, &Segment) {
        let (seq, s) = self.segments.last_key_value().expect("a wal has a segment");
        (*seq, s)
    }

    /// The records every segment begins with.
    fn header_records(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(v) = &self.vote {
            record(VOTE, v, &mut out);
        }
        record(COMMITTED, &self.committed, &mut out);
        if let Some(p) = &self.purged {
            record(PURGED, p, &mut out);
        }
        out
    }

    fn set_purged(&mut self, log_id: LogId<NodeId>) {
        if self.purged.is_some_and(|p| p.index >= log_id.index) {
            return;
        }
        self.purged = Some(log_id);
        self.entries = self.entries.split_off(&(log_id.index + 1));
    }

    fn truncate(&mut self, index: u64) {
        self.entries.split_off(&index);
    }

    /// Applies one replayed record, found at `offset` (of its body) in
    /// segment `seq`.
    fn replay(&mut self, seq: u64, offset: u64, body: &[u8]) -> Result<()> {
        let (tag, value) = body
            .split_first()
            .ok_or_else(|| Error::Corruption("raft log: an empty record".into()))?;
        match *tag {
            ENTRY => {
                // The log id is the entry's first field: the payload is
                // left for a read to decode.
                let (log_id, _): (LogId<NodeId>, _) = postcard::take_from_bytes(value)
                    .map_err(|e| Error::Corruption(format!("raft log entry: {e}")))?;
                let index = log_id.index;
                let segment = self.segments.get_mut(&seq).expect("replayed segment");
                segment.last_index = segment.last_index.max(Some(index));
                if self.purged.is_some_and(|p| index <= p.index) {
                    return Ok(());
                }
                self.entries.insert(
                    index,
                    Loc {
                        log_id,
                        seq,
                        offset,
                        len: u32::try_from(body.len()).expect("a record is under 4 GiB"),
                    },
                );
            }
            VOTE => self.vote = Some(decode("vote", value)?),
            COMMITTED => self.committed = decode("committed id", value)?,
            TRUNCATE => self.truncate(decode("truncate", value)?),
            PURGED => self.set_purged(decode("purged id", value)?),
            other => {
                return Err(Error::Corruption(format!(
                    "raft log: unknown record tag {other}"
                )))
            }
        }
        Ok(())
    }
}

impl Wal {
    /// Opens the log in `dir`, creating an empty one if `dir` does not
    /// exist.
    ///
    /// # Errors
    /// [`Error::Corruption`] for a damaged record before the newest
    /// segment's tail, a record of a kind this build does not know, or a
    /// value that does not decode; IO errors.
    pub(crate) fn open(dir: &Path) -> Result<Wal> {
        Wal::open_sized(dir, SEGMENT_BYTES)
    }

    fn open_sized(dir: &Path, segment_bytes: u64) -> Result<Wal> {
        if !dir.exists() {
            Wal::create(dir, None, None, None, Vec::new())?;
        }
        let mut seqs = Vec::new();
        for e in fs::read_dir(dir)? {
            let name = e?.file_name();
            let seq = name
                .to_str()
                .and_then(|n| n.strip_suffix(".wal"))
                .and_then(|n| u64::from_str_radix(n, 16).ok());
            match seq {
                Some(s) => seqs.push(s),
                None => {
                    return Err(Error::Corruption(format!(
                        "{}: unexpected file {name:?}",
                        dir.display()
                    )))
                }
            }
        }
        seqs.sort_unstable();
        let Some(&newest) = seqs.last() else {
            return Err(Error::Corruption(format!(
                "{}: a raft log with no segment",
                dir.display()
            )));
        };
        let mut inner = Inner::default();
        for seq in seqs {
            let path = segment_path(dir, seq);
            let file = Arc::new(OpenOptions::new().read(true).write(true).open(&path)?);
            inner.segments.insert(
                seq,
                Segment {
                    file: file.clone(),
                    last_index: None,
                },
            );
            let size = file.metadata()?.len();
            // Writes are positional, so reading moves no offset they use.
            let mut reader = BufReader::with_capacity(1 << 20, &*file);
            let (mut pos, mut header, mut body) = (0u64, [0u8; HEADER], Vec::new());
            let end = loop {
                if !read_full(&mut reader, &mut header)? {
                    // The file's end, or a header it cuts short.
                    break if pos == size { End::Clean } else { End::Torn };
                }
                let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
                let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
                if header == [0; HEADER] {
                    // Preallocated space: a body holds at least its tag.
                    break End::Clean;
                }
                if pos + (HEADER as u64) + u64::from(len) > size {
                    // A record the file cuts short (tested before reading,
                    // so that a damaged length allocates nothing).
                    break End::Torn;
                }
                body.resize(len as usize, 0);
                if !read_full(&mut reader, &mut body)? {
                    break End::Torn;
                }
                if crc32fast::hash(&body) != crc {
                    break if torn(pos, &[&header[..], &body].concat()) {
                        End::Torn
                    } else {
                        End::Damaged
                    };
                }
                inner.replay(seq, pos + HEADER as u64, &body)?;
                pos += (HEADER + body.len()) as u64;
            };
            match end {
                End::Clean | End::Torn if seq == newest => {
                    if end == End::Torn {
                        tracing::warn!(
                            segment = %path.display(),
                            at = pos,
                            "raft log: cutting off a record a crash left unfinished"
                        );
                    }
                    // Zeros from the end of the last record on: records a
                    // crash left after a hole, or after a torn one, are
                    // never read as records once new ones are written
                    // before them.
                    let file = &inner.segments[&seq].file;
                    file.set_len(pos)?;
                    file.set_len(segment_bytes.max(pos))?;
                    file.sync_all()?;
                }
                End::Clean => {}
                // A segment before the newest was synced whole before the
                // next one was begun.
                End::Torn | End::Damaged => {
                    return Err(Error::Corruption(format!(
                        "{}: damaged record at byte {pos}",
                        path.display()
                    )))
                }
            }
            inner.len = pos;
        }
        Ok(Wal {
            dir: dir.to_owned(),
            segment_bytes,
            inner: Mutex::new(inner),
        })
    }

    /// Writes a log with one segment holding these ids and entries at
    /// `dir`, which must not exist, in one step: it is built beside `dir`
    /// and renamed into place once synced.
    pub(crate) fn create(
        dir: &Path,
        vote: Option<Vote<NodeId>>,
        committed: Option<LogId<NodeId>>,
        purged: Option<LogId<NodeId>>,
        entries: Vec<Entry<TypeConfig>>,
    ) -> Result<()> {
        let tmp = dir.with_extension("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        let inner = Inner {
            vote,
            committed,
            purged,
            ..Inner::default()
        };
        let mut bytes = inner.header_records();
        for e in &entries {
            record(ENTRY, e, &mut bytes);
        }
        new_segment(&segment_path(&tmp, 0), &bytes, SEGMENT_BYTES)?;
        crate::engine::sync_dir(&tmp)?;
        fs::rename(&tmp, dir)?;
        crate::engine::sync_dir(dir.parent().expect("the wal is in the store dir"))?;
        Ok(())
    }

    /// Writes `bytes` after everything else, first beginning a new segment
    /// if the newest is full. Returns the file written to, for a sync, and
    /// where the bytes went.
    fn write(&self, inner: &mut Inner, bytes: &[u8]) -> Result<(Arc<File>, u64, u64)> {
        if inner.len >= self.segment_bytes {
            self.begin_segment(inner)?;
        }
        let (seq, segment) = inner.newest();
        let file = segment.file.clone();
        let at = inner.len;
        file.write_all_at(bytes, at)?;
        inner.len += bytes.len() as u64;
        Ok((file, seq, at))
    }

    fn begin_segment(&self, inner: &mut Inner) -> Result<()> {
        let (seq, old) = inner.newest();
        // Whatever the old segment holds unsynced is synced before
        // anything can depend on the new one.
        old.file.sync_data()?;
        let seq = seq + 1;
        let header = inner.header_records();
        let file = new_segment(&segment_path(&self.dir, seq), &header, self.segment_bytes)?;
        crate::engine::sync_dir(&self.dir)?;
        inner.segments.insert(
            seq,
            Segment {
                file: Arc::new(file),
                last_index: None,
            },
        );
        inner.len = header.len() as u64;
        Ok(())
    }

    /// Appends `entries` and returns once they are on disk.
    pub(crate) fn append(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> Result<()> {
        let file = {
            let mut inner = self.inner.lock();
            let mut bytes = Vec::new();
            let mut added = Vec::new();
            for e in entries {
                let start = bytes.len();
                record(ENTRY, &e, &mut bytes);
                added.push((*e.get_log_id(), start, bytes.len() - start - HEADER));
            }
            let Some(&(last, _, _)) = added.last() else {
                return Ok(());
            };
            let (file, seq, at) = self.write(&mut inner, &bytes)?;
            for (log_id, start, len) in added {
                inner.entries.insert(
                    log_id.index,
                    Loc {
                        log_id,
                        seq,
                        offset: at + (start + HEADER) as u64,
                        len: u32::try_from(len).expect("a record is under 4 GiB"),
                    },
                );
            }
            let newest = inner.segments.get_mut(&seq).expect("just written");
            newest.last_index = newest.last_index.max(Some(last.index));
            file
        };
        crate::crash::point(crate::crash::BEFORE_LOG_FLUSH);
        file.sync_data()?;
        crate::crash::point(crate::crash::AFTER_LOG_FLUSH);
        Ok(())
    }

    /// Records `vote` and returns once it is on disk.
    pub(crate) fn save_vote(&self, vote: &Vote<NodeId>) -> Result<()> {
        let file = {
            let mut inner = self.inner.lock();
            let mut bytes = Vec::new();
            record(VOTE, vote, &mut bytes);
            let (file, _, _) = self.write(&mut inner, &bytes)?;
            inner.vote = Some(*vote);
            file
        };
        file.sync_data()?;
        Ok(())
    }

    /// Records the committed id, unsynced: a lost one is learned again.
    pub(crate) fn save_committed(&self, committed: Option<LogId<NodeId>>) -> Result<()> {
        let mut inner = self.inner.lock();
        let mut bytes = Vec::new();
        record(COMMITTED, &committed, &mut bytes);
        self.write(&mut inner, &bytes)?;
        inner.committed = committed;
        Ok(())
    }

    /// Removes the entries from `index` on, unsynced: entries that come
    /// back after a crash are a conflict openraft resolves again.
    pub(crate) fn truncate(&self, index: u64) -> Result<()> {
        let mut inner = self.inner.lock();
        let mut bytes = Vec::new();
        record(TRUNCATE, &index, &mut bytes);
        self.write(&mut inner, &bytes)?;
        inner.truncate(index);
        Ok(())
    }

    /// Removes the entries up to `log_id`, syncs that, and deletes the
    /// segments that hold nothing else. The caller has made the state
    /// machine durable past `log_id`.
    pub(crate) fn purge(&self, log_id: LogId<NodeId>) -> Result<()> {
        let mut inner = self.inner.lock();
        let mut bytes = Vec::new();
        record(PURGED, &log_id, &mut bytes);
        let (file, _, _) = self.write(&mut inner, &bytes)?;
        inner.set_purged(log_id);
        file.sync_data()?;
        let (newest, _) = inner.newest();
        let done: Vec<u64> = inner
            .segments
            .iter()
            .take_while(|(seq, s)| {
                **seq != newest && s.last_index.is_none_or(|l| l <= log_id.index)
            })
            .map(|(seq, _)| *seq)
            .collect();
        for seq in done {
            inner.segments.remove(&seq);
            fs::remove_file(segment_path(&self.dir, seq))?;
        }
        Ok(())
    }

    pub(crate) fn vote(&self) -> Option<Vote<NodeId>> {
        self.inner.lock().vote
    }

    pub(crate) fn committed(&self) -> Option<LogId<NodeId>> {
        self.inner.lock().committed
    }

    pub(crate) fn purged(&self) -> Option<LogId<NodeId>> {
        self.inner.lock().purged
    }

    /// The last entry's id, or the purged id if there is none.
    pub(crate) fn last_log_id(&self) -> Option<LogId<NodeId>> {
        let inner = self.inner.lock();
        inner
            .entries
            .last_key_value()
            .map(|(_, l)| l.log_id)
            .or(inner.purged)
    }

    /// How many live entries there are.
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// The live entries in `range`, read from the segments. Entries next to
    /// each other in a segment are read in one call.
    pub(crate) fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry<TypeConfig>>> {
        let (locs, files) = {
            let inner = self.inner.lock();
            let from = match range.start_bound() {
                Bound::Included(&i) => i,
                Bound::Excluded(&i) => i.saturating_add(1),
                Bound::Unbounded => 0,
            };
            let to = match range.end_bound() {
                Bound::Included(&i) => i.checked_add(1),
                Bound::Excluded(&i) => Some(i),
                Bound::Unbounded => None,
            };
            // `BTreeMap::range` panics on a range that ends before it
            // starts; such a range holds nothing.
            let locs: Vec<Loc> = match to {
                Some(to) if to <= from => Vec::new(),
                Some(to) => inner.entries.range(from..to).map(|(_, l)| *l).collect(),
                None => inner.entries.range(from..).map(|(_, l)| *l).collect(),
            };
            if locs.is_empty() {
                return Ok(Vec::new());
            }
            let files: BTreeMap<u64, Arc<File>> = inner
                .segments
                .range(locs[0].seq..=locs[locs.len() - 1].seq)
                .map(|(seq, s)| (*seq, s.file.clone()))
                .collect();
            (locs, files)
        };
        let mut out = Vec::with_capacity(locs.len());
        let mut buf = Vec::new();
        let mut rest = &locs[..];
        while let Some(head) = rest.first() {
            // The run of entries that follow one another in this segment.
            let mut n = 1;
            let mut end = head.offset + u64::from(head.len);
            while let Some(next) = rest.get(n) {
                if next.seq != head.seq || next.offset != end + HEADER as u64 {
                    break;
                }
                end = next.offset + u64::from(next.len);
                n += 1;
            }
            buf.resize((end - head.offset) as usize, 0);
            files[&head.seq].read_exact_at(&mut buf, head.offset)?;
            for l in &rest[..n] {
                let at = (l.offset - head.offset) as usize;
                // Skip the tag: only entries are indexed.
                out.push(decode("entry", &buf[at + 1..at + l.len as usize])?);
            }
            rest = &rest[n..];
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn log_id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn indexes(wal: &Wal) -> Vec<(u64, u64)> {
        wal.entries(..)
            .unwrap()
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    /// Everything written comes back from a reopen: entries after a
    /// truncate and a purge, the vote and the committed id.
    #[test]
    fn a_reopen_replays_what_was_written() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("wal");
        {
            let wal = Wal::open(&dir).unwrap();
            wal.append((1..=6).map(|i| entry(1, i))).unwrap();
            wal.truncate(4).unwrap();
            wal.append((4..=8).map(|i| entry(2, i))).unwrap();
            wal.save_vote(&Vote::new(2, 1)).unwrap();
            wal.save_committed(Some(log_id(2, 5))).unwrap();
            wal.purge(log_id(1, 2)).unwrap();
        }
        let wal = Wal::open(&dir).unwrap();
        let want: Vec<_> = [(1, 3), (2, 4), (2, 5), (2, 6), (2, 7), (2, 8)].into();
        assert_eq!(indexes(&wal), want);
        assert_eq!(wal.vote(), Some(Vote::new(2, 1)));
        assert_eq!(wal.committed(), Some(log_id(2, 5)));
        assert_eq!(wal.purged(), Some(log_id(1, 2)));
        assert_eq!(wal.last_log_id(), Some(log_id(2, 8)));
        let some: Vec<_> = wal
            .entries(5..7)
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(some, [5, 6]);
        assert!(wal.entries(9..).unwrap().is_empty());
        assert!(wal.entries(..3).unwrap().is_empty());
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 7..5;
        assert!(wal.entries(backwards).unwrap().is_empty());
    }

    /// Purged segments are deleted; the ids they began with survive in the
    /// newer ones' headers, and a purge past the last entry leaves none.
    #[test]
    fn segments_roll_over_and_purge_deletes_them() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("wal");
        // Two of these fill a segment.
        let big = |i| put(1, i, 500);
        let open = || Wal::open_sized(&dir, 1024).unwrap();
        let wal = open();
        wal.save_vote(&Vote::new(1, 1)).unwrap();
        for i in 1..=10 {
            wal.append([big(i)]).unwrap();
        }
        let count = || fs::read_dir(&dir).unwrap().count();
        assert_eq!(count(), 5);
        wal.purge(log_id(1, 6)).unwrap();
        // The purge record begins a sixth segment.
        assert_eq!(count(), 3, "the segments of entries 1 to 6 go");
        drop(wal);
        let wal = open();
        assert_eq!(wal.vote(), Some(Vote::new(1, 1)));
        let left: Vec<_> = wal
            .entries(..)
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(left, [7, 8, 9, 10]);
        wal.purge(log_id(3, 20)).unwrap();
        assert_eq!(count(), 1);
        drop(wal);
        let wal = open();
        assert_eq!(wal.last_log_id(), Some(log_id(3, 20)));
        wal.append([entry(3, 21)]).unwrap();
        drop(wal);
        assert_eq!(indexes(&open()), [(3, 21)]);
    }

    /// An entry whose record spans sectors; no run of its bytes is zeros.
    fn put(term: u64, index: u64, value_len: usize) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(crate::Request::Put(
                cairn_proto::etcdserverpb::PutRequest {
                    key: vec![b'k'],
                    value: vec![0x5a; value_len],
                    ..Default::default()
                },
            )),
        }
    }

    fn record_len(e: &Entry<TypeConfig>) -> usize {
        let mut v = Vec::new();
        record(ENTRY, e, &mut v);
        v.len()
    }

    /// Writes entries 0 to 3 (about 1 KiB each) to a new log in `dir`, and
    /// returns the segment's bytes and where the last record begins.
    fn four_entries(dir: &Path) -> (Vec<u8>, usize) {
        let wal = Wal::open(dir).unwrap();
        wal.append((0..4).map(|i| put(1, i, 1000))).unwrap();
        let end = wal.inner.lock().len as usize;
        (
            fs::read(segment_path(dir, 0)).unwrap(),
            end - record_len(&put(1, 3, 1000)),
        )
    }

    /// With the segment rewritten to `bytes`, the log opens with entries 0
    /// to 2, and an entry 3 appended in the last one's place is what a
    /// reopen finds.
    fn opens_without_entry_3(dir: &Path, bytes: &[u8]) {
        fs::write(segment_path(dir, 0), bytes).unwrap();
        let wal = Wal::open(dir).unwrap();
        assert_eq!(wal.last_log_id(), Some(log_id(1, 2)));
        wal.append([put(2, 3, 1000)]).unwrap();
        drop(wal);
        assert_eq!(Wal::open(dir).unwrap().last_log_id(), Some(log_id(2, 3)));
    }

    /// A last record with a sector of it unwritten is a torn tail: cut off.
    #[test]
    fn a_torn_tail_is_cut() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("wal");
        let (mut bytes, last) = four_entries(&dir);
        let end = last + record_len(&put(1, 3, 1000));
        let sector = (end - 1) / 512 * 512;
        assert!(sector > last, "the record spans a sector boundary");
        bytes[sector..end].fill(0);
        opens_without_entry_3(&dir, &bytes);
    }

    /// The disk wrote the end of the last record and a record after it,
    /// but not the last record's first sector. The open ends the log at
    /// the hole and zeroes what follows; otherwise the record after would
    /// be read once an append of the same length fills the hole.
    #[test]
    fn what_follows_a_hole_is_never_read() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("wal");
        let (mut bytes, last) = four_entries(&dir);
        let end = last + record_len(&put(1, 3, 1000));
        bytes[last..(last / 512 + 1) * 512].fill(0);
        let mut stray = Vec::new();
        record(ENTRY, &put(9, 4, 10), &mut stray);
        bytes[end..end + stray.len()].copy_from_slice(&stray);
        opens_without_entry_3(&dir, &bytes);
    }

    /// A flipped byte is damage, not a torn write, in the newest segment
    /// as in an older one: the log is refused.
    #[test]
    fn damage_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("wal");
        let (mut bytes, last) = four_entries(&dir);
        bytes[last + 100] ^= 0xff;
        let seg = segment_path(&dir, 0);
        fs::write(&seg, &bytes).unwrap();
        let err = Wal::open(&dir).err().expect("refused");
        assert!(
            err.to_string()
                .contains(&format!("damaged record at byte {last}")),
            "{err}"
        );

        bytes[last + 100] ^= 0xff;
        bytes[HEADER] ^= 0xff;
        fs::write(&seg, &bytes).unwrap();
        fs::write(segment_path(&dir, 1), b"").unwrap();
        let err = Wal::open(&dir).err().expect("refused");
        assert!(
            err.to_string().contains("damaged record at byte 0"),
            "{err}"
        );
    }

    /// A header a crash left half written may claim any length: it is a
    /// torn tail like any other.
    #[test]
    fn a_wild_length_is_a_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("wal");
        let end = {
            let wal = Wal::open(&dir).unwrap();
            wal.append((1..=2).map(|i| entry(1, i))).unwrap();
            let len = wal.inner.lock().len;
            len
        };
        let f = OpenOptions::new()
            .write(true)
            .open(segment_path(&dir, 0))
            .unwrap();
        f.write_all_at(&[0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0], end)
            .unwrap();
        drop(f);
        assert_eq!(Wal::open(&dir).unwrap().last_log_id(), Some(log_id(1, 2)));
    }
}
