//! The ways a watch stream can break etcd's guarantees.

use std::fmt;

use super::{EventKind, Kv};
use crate::escaped::Escaped;

/// One broken guarantee found in a watch stream.
///
/// `response` is an index into [`Stream::responses`](super::Stream::responses)
/// and `watch_id` the watcher concerned. An event is named by its `key` and
/// `revision` (its kv's mod_revision).
///
/// Each root cause is reported once: an event that arrives after a later one
/// is [`Reordered`](Violation::Reordered), not also a gap; a gap is reported
/// once per watcher, with the number of events missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A response for a watch id before its Created response.
    BeforeCreate {
        /// The response.
        response: usize,
        /// Its watch id.
        watch_id: i64,
    },
    /// A response for a watcher that was already canceled (or whose create
    /// failed).
    AfterCancel {
        /// The response.
        response: usize,
        /// Its watch id.
        watch_id: i64,
    },
    /// A response for a watch id never created on the stream, or events or
    /// a cancel for watch id -1.
    UnknownWatch {
        /// The response.
        response: usize,
        /// Its watch id.
        watch_id: i64,
    },
    /// A Created response beyond the creates recorded.
    UnmatchedCreated {
        /// The response.
        response: usize,
        /// Its watch id.
        watch_id: i64,
    },
    /// A successful Created response for a watch id that is still in use.
    DuplicateWatchId {
        /// The response.
        response: usize,
        /// Its watch id.
        watch_id: i64,
    },
    /// A create never answered ([`check_complete`](super::check_complete)
    /// only).
    NeverCreated {
        /// Its index in [`Stream::creates`](super::Stream::creates).
        create: usize,
    },
    /// A response whose shape etcd never sends, such as a compact_revision
    /// on a response that does not cancel.
    Malformed {
        /// The response.
        response: usize,
        /// Its watch id.
        watch_id: i64,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A fragmented response whose last fragment never came: the watcher was
    /// canceled first, or (with [`check_complete`](super::check_complete))
    /// the stream ended.
    UnfinishedFragment {
        /// The first fragment.
        response: usize,
        /// The watcher.
        watch_id: i64,
    },
    /// An event that differs from the history's change of that key at that
    /// revision, or that has no such change.
    WrongEvent {
        /// The response.
        response: usize,
        /// The watcher.
        watch_id: i64,
        /// The delivered event's type.
        kind: EventKind,
        /// The delivered event's kv.
        kv: Box<Kv>,
        /// The history's event there, if there is one.
        expected: Option<(EventKind, Box<Kv>)>,
    },
    /// An event's prev_kv differs from the key's kv at the previous
    /// revision, is missing where no compaction excuses it, or is present
    /// although the watch did not ask for it.
    WrongPrevKv {
        /// The response.
        response: usize,
        /// The watcher.
        watch_id: i64,
        /// The event's key.
        key: Vec<u8>,
        /// The event's revision.
        revision: i64,
        /// Whether the watch asked for prev_kv.
        requested: bool,
        /// The prev_kv delivered.
        delivered: Option<Box<Kv>>,
        /// The key's kv at `revision - 1`.
        expected: Option<Box<Kv>>,
    },
    /// An event for a key the watch does not cover.
    OutOfRange {
        /// The response.
        response: usize,
        /// The watcher.
        watch_id: i64,
        /// The event's key.
        key: Vec<u8>,
        /// The event's revision.
        revision: i64,
    },
    /// An event of a type the watch filters out (no_put or no_delete).
    Filtered {
        /// The response.
        response: usize,
        /// The watcher.
        watch_id: i64,
        /// The filtered type.
        kind: EventKind,
        /// The event's key.
        key: Vec<u8>,
        /// The event's revision.
        revision: i64,
    },
    /// An event below the watcher's start revision.
    BeforeStart {
        /// The response.
        response: usize,
        /// The watcher.
        watch_id: i64,
        /// The event's key.
        key: Vec<u8>,
        /// The event's revision.
        revision: i64,
        /// The watcher's start revision (resolved, for start_revision 0).
        start: i64,
    },
    /// An event delivered a second time.
    Duplicate {
        /// The response with the second copy.
        response: usize,
        /// The watcher.
        watch_id: i64,
        /// The event's key.
        key: Vec<u8>,
        /// The event's revision.
        revision: i64,
    },
    /// An event delivered after an event that follows it in the history.
    Reordered {
        /// The response with the late event.
        response: usize,
        /// The watcher.
        watch_id: i64,
        /// The event's key.
        key: Vec<u8>,
        /// The event's revision.
        revision: i64,
        /// The revision of the latest event delivered before it.
        after: i64,
    },
    /// Events skipped: a later event was delivered and they never came.
    Gap {
        /// The response whose event skipped the first missing one.
        response: usize,
        /// The watcher.
        watch_id: i64,
        /// The first missing event's key.
        key: Vec<u8>,
        /// The first missing event's revision.
        revision: i64,
        /// How many events the watcher is missing in all.
        missing: usize,
    },
    /// A (logical) response ended in the middle of a revision: a matching
    /// event of the last revision it delivered was left for later.
    SplitRevision {
        /// The response.
        response: usize,
        /// The watcher.
        watch_id: i64,
        /// The split revision.
        revision: i64,
        /// The first of its events left out.
        key: Vec<u8>,
    },
    /// A progress notification at `progress_revision` while a matching event
    /// at or below it was still undelivered.
    DishonestProgress {
        /// The progress notification.
        response: usize,
        /// The watcher the promise was broken to.
        watch_id: i64,
        /// Its header revision.
        progress_revision: i64,
        /// The undelivered event's key.
        key: Vec<u8>,
        /// The undelivered event's revision.
        revision: i64,
    },
    /// A progress notification above the history's latest revision.
    FutureProgress {
        /// The progress notification.
        response: usize,
        /// Its watch id.
        watch_id: i64,
        /// Its header revision.
        progress_revision: i64,
        /// The history's revision.
        latest: i64,
    },
    /// A compaction cancel that the history does not justify: the watcher's
    /// next needed revision is not below the compact revision, or the
    /// history has no compaction that high.
    DishonestCompaction {
        /// The cancel.
        response: usize,
        /// The watcher.
        watch_id: i64,
        /// The cancel's compact_revision.
        compact_revision: i64,
        /// The watcher's next needed revision: its start, or the last
        /// revision delivered + 1.
        needed: i64,
        /// The history's highest compaction.
        compacted: Option<i64>,
    },
    /// At the end of the stream, a live watcher still lacks events up to
    /// the revision it should have reached
    /// ([`check_complete`](super::check_complete) only).
    Incomplete {
        /// The watcher.
        watch_id: i64,
        /// The first undelivered event's key.
        key: Vec<u8>,
        /// The first undelivered event's revision.
        revision: i64,
        /// How many events up to `through` are undelivered.
        missing: usize,
        /// The revision the watcher should have reached.
        through: i64,
    },
}

/// `PUT "a"="1" (...)`, or `nothing` for no kv.
struct Shown<'a>(Option<&'a Kv>);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(kv) => write!(f, "{kv}"),
            None => f.write_str("none"),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Violation::*;
        match self {
            BeforeCreate { response, watch_id } => write!(
                f,
                "response {response}, watch {watch_id}: arrived before the watch was created"
            ),
            AfterCancel { response, watch_id } => write!(
                f,
                "response {response}, watch {watch_id}: arrived after the watch was canceled"
            ),
            UnknownWatch { response, watch_id } => write!(
                f,
                "response {response}, watch {watch_id}: no such watch on the stream"
            ),
            UnmatchedCreated { response, watch_id } => write!(
                f,
                "response {response}, watch {watch_id}: Created response without a create request"
            ),
            DuplicateWatchId { response, watch_id } => write!(
                f,
                "response {response}, watch {watch_id}: created again while still in use"
            ),
            NeverCreated { create } => write!(f, "create {create}: never answered"),
            Malformed {
                response,
                watch_id,
                problem,
            } => write!(f, "response {response}, watch {watch_id}: {problem}"),
            UnfinishedFragment { response, watch_id } => write!(
                f,
                "response {response}, watch {watch_id}: fragmented response never finished"
            ),
            WrongEvent {
                response,
                watch_id,
                kind,
                kv,
                expected,
            } => {
                write!(
                    f,
                    "response {response}, watch {watch_id}: delivered {kind} {kv}, but the history has "
                )?;
                match expected {
                    Some((kind, kv)) => write!(f, "{kind} {kv}"),
                    None => f.write_str("no change of that key at that revision"),
                }
            }
            WrongPrevKv {
                response,
                watch_id,
                key,
                revision,
                requested,
                delivered,
                expected,
            } => {
                let (delivered, expected) = (Shown(delivered.as_deref()), Shown(expected.as_deref()));
                let key = Escaped(key);
                if *requested {
                    write!(
                        f,
                        "response {response}, watch {watch_id}: event {key}@{revision} has prev_kv {delivered}, expected {expected}"
                    )
                } else {
                    write!(
                        f,
                        "response {response}, watch {watch_id}: event {key}@{revision} has prev_kv {delivered}, not requested"
                    )
                }
            }
            OutOfRange {
                response,
                watch_id,
                key,
                revision,
            } => write!(
                f,
                "response {response}, watch {watch_id}: event {}@{revision} is outside the watched range",
                Escaped(key)
            ),
            Filtered {
                response,
                watch_id,
                kind,
                key,
                revision,
            } => write!(
                f,
                "response {response}, watch {watch_id}: {kind} event {}@{revision} despite the watch's filter",
                Escaped(key)
            ),
            BeforeStart {
                response,
                watch_id,
                key,
                revision,
                start,
            } => write!(
                f,
                "response {response}, watch {watch_id}: event {}@{revision} is below the start revision {start}",
                Escaped(key)
            ),
            Duplicate {
                response,
                watch_id,
                key,
                revision,
            } => write!(
                f,
                "response {response}, watch {watch_id}: event {}@{revision} delivered twice",
                Escaped(key)
            ),
            Reordered {
                response,
                watch_id,
                key,
                revision,
                after,
            } => write!(
                f,
                "response {response}, watch {watch_id}: event {}@{revision} delivered after an event of revision {after}",
                Escaped(key)
            ),
            Gap {
                response,
                watch_id,
                key,
                revision,
                missing,
            } => write!(
                f,
                "response {response}, watch {watch_id}: skipped event {}@{revision} ({missing} event(s) missing in all)",
                Escaped(key)
            ),
            SplitRevision {
                response,
                watch_id,
                revision,
                key,
            } => write!(
                f,
                "response {response}, watch {watch_id}: revision {revision} split across responses, {} left out",
                Escaped(key)
            ),
            DishonestProgress {
                response,
                watch_id,
                progress_revision,
                key,
                revision,
            } => write!(
                f,
                "response {response}, watch {watch_id}: progress at {progress_revision} before event {}@{revision}",
                Escaped(key)
            ),
            FutureProgress {
                response,
                watch_id,
                progress_revision,
                latest,
            } => write!(
                f,
                "response {response}, watch {watch_id}: progress at {progress_revision}, beyond the latest revision {latest}"
            ),
            DishonestCompaction {
                response,
                watch_id,
                compact_revision,
                needed,
                compacted,
            } => {
                write!(
                    f,
                    "response {response}, watch {watch_id}: canceled as compacted at {compact_revision} while it needed revision {needed}; "
                )?;
                match compacted {
                    Some(c) => write!(f, "the history is compacted at {c}"),
                    None => f.write_str("the history has no compaction"),
                }
            }
            Incomplete {
                watch_id,
                key,
                revision,
                missing,
                through,
            } => write!(
                f,
                "watch {watch_id}: never received event {}@{revision} ({missing} event(s) up to revision {through} missing)",
                Escaped(key)
            ),
        }
    }
}
