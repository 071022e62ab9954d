//! The checker: one pass over a stream's responses, with one cursor over the
//! history a watcher.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::expected::Expected;
use super::history::Record;
use super::{Event, History, Response, Stream, Violation, WatchSpec};
use crate::{Error, Result};

/// What a check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Every broken guarantee, in the order found.
    pub violations: Vec<Violation>,
    /// Watchers created: Created responses that did not also cancel.
    pub watchers: usize,
    /// Events received, over all responses.
    pub events: usize,
    /// Progress notifications received.
    pub progress: usize,
}

impl Report {
    /// Whether the stream kept every guarantee checked.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// `Ok` if the stream kept every guarantee checked, for tests to
    /// `unwrap`.
    ///
    /// # Errors
    /// [`Error::Violations`] with the violations; its message lists the
    /// first 20, one a line.
    pub fn ensure(&self) -> Result<()> {
        if self.is_ok() {
            Ok(())
        } else {
            Err(Error::Violations(self.violations.clone()))
        }
    }
}

/// Checks `stream` against `history`. A stream may end at any point: events
/// not yet delivered at its end are not violations, but events skipped by a
/// later one are.
pub fn check(history: &History, stream: &Stream) -> Report {
    Checker::new(history, stream, None).run(stream)
}

/// Checks `stream` against `history` as [`check()`] does, and also that the
/// stream ended complete: every create was answered, no fragmented response
/// is unfinished, and every watcher not canceled received all its events up
/// to `through_revision` ([`Violation::Incomplete`]). For a test that ends
/// after its writes and drained the stream.
pub fn check_complete(history: &History, stream: &Stream, through_revision: i64) -> Report {
    Checker::new(history, stream, Some(through_revision)).run(stream)
}

/// The state of one pass over a stream.
struct Checker<'a> {
    history: &'a History,
    creates: &'a [WatchSpec],
    /// `Some(revision)` for [`check_complete`].
    through: Option<i64>,
    /// The create the next Created response answers.
    next_create: usize,
    /// Live watchers by watch id; a `BTreeMap` so that a progress
    /// notification for all of them reports in a stable order.
    active: BTreeMap<i64, Watcher<'a>>,
    /// Watch ids whose watcher was canceled or whose create failed.
    ended: BTreeSet<i64>,
    /// The first successful Created response of each watch id, to tell a
    /// response that came too early from one for a watch that never was.
    first_created: HashMap<i64, usize>,
    report: Report,
}

impl<'a> Checker<'a> {
    fn new(history: &'a History, stream: &'a Stream, through: Option<i64>) -> Self {
        let mut first_created = HashMap::new();
        for (i, r) in stream.responses.iter().enumerate() {
            if r.created && !r.canceled {
                first_created.entry(r.watch_id).or_insert(i);
            }
        }
        Checker {
            history,
            creates: &stream.creates,
            through,
            next_create: 0,
            active: BTreeMap::new(),
            ended: BTreeSet::new(),
            first_created,
            report: Report::default(),
        }
    }

    fn run(mut self, stream: &'a Stream) -> Report {
        for (i, r) in stream.responses.iter().enumerate() {
            self.report.events += r.events.len();
            self.response(i, r);
        }
        if self.through.is_some() {
            for create in self.next_create..self.creates.len() {
                self.report
                    .violations
                    .push(Violation::NeverCreated { create });
            }
        }
        let out = &mut self.report.violations;
        for (_, w) in std::mem::take(&mut self.active) {
            w.finish(self.history, self.through, out);
        }
        self.report
    }

    fn response(&mut self, i: usize, r: &'a Response) {
        let out = &mut self.report.violations;
        if r.created {
            self.created(i, r);
        } else if r.watch_id == -1 && r.events.is_empty() && !r.canceled && !r.fragment {
            // A progress notification for every watcher on the stream.
            self.report.progress += 1;
            future_progress(self.history, i, r, out);
            for w in self.active.values_mut() {
                w.progress(self.history, i, r.header_revision, out);
            }
        } else if let Some(w) = self.active.get_mut(&r.watch_id) {
            if w.pending.is_some() || r.fragment || !r.events.is_empty() {
                w.receive(self.history, i, r, out);
            } else if !r.canceled {
                // A progress notification for this watcher.
                self.report.progress += 1;
                future_progress(self.history, i, r, out);
                w.progress(self.history, i, r.header_revision, out);
            }
            self.after(i, r);
        } else {
            let watch_id = r.watch_id;
            out.push(if self.ended.contains(&watch_id) {
                Violation::AfterCancel {
                    response: i,
                    watch_id,
                }
            } else if self.first_created.get(&watch_id).is_some_and(|&c| c > i) {
                Violation::BeforeCreate {
                    response: i,
                    watch_id,
                }
            } else {
                Violation::UnknownWatch {
                    response: i,
                    watch_id,
                }
            });
        }
    }

    /// A Created response: answers the next create.
    fn created(&mut self, i: usize, r: &'a Response) {
        let out = &mut self.report.violations;
        let watch_id = r.watch_id;
        let Some(spec) = self.creates.get(self.next_create) else {
            out.push(Violation::UnmatchedCreated {
                response: i,
                watch_id,
            });
            return;
        };
        self.next_create += 1;
        if r.canceled {
            // A failed create (a duplicate watch id, a permission error):
            // nothing more comes for it. etcd names it -1, which is also the
            // id of progress for all, so only a real id is marked as ended;
            // and a duplicate must not end the watcher that holds the id.
            if watch_id != -1 && !self.active.contains_key(&watch_id) {
                self.ended.insert(watch_id);
            }
            if r.fragment || !r.events.is_empty() {
                out.push(malformed(i, watch_id, "a failed create carries events"));
            }
            return;
        }
        if watch_id == -1 {
            out.push(malformed(i, watch_id, "a watch created with id -1"));
            return;
        }
        if let Some(old) = self.active.remove(&watch_id) {
            out.push(Violation::DuplicateWatchId {
                response: i,
                watch_id,
            });
            old.end(self.history, out);
        }
        self.ended.remove(&watch_id);
        self.report.watchers += 1;
        let start = match spec.start_revision {
            0 => r.header_revision.saturating_add(1),
            start => start,
        };
        let mut w = Watcher::new(self.history, watch_id, spec, start);
        // etcd sends a Created response alone; should one carry events,
        // they are the watcher's first.
        if r.fragment || !r.events.is_empty() {
            w.receive(self.history, i, r, out);
        }
        self.active.insert(watch_id, w);
        self.after(i, r);
    }

    /// The end of a response for a live watcher: a cancel ends it.
    fn after(&mut self, i: usize, r: &Response) {
        let out = &mut self.report.violations;
        if !r.canceled {
            if r.compact_revision != 0 {
                out.push(malformed(
                    i,
                    r.watch_id,
                    "compact_revision on a response that does not cancel",
                ));
            }
            return;
        }
        if let Some(w) = self.active.remove(&r.watch_id) {
            w.cancel(self.history, i, r, out);
            self.ended.insert(r.watch_id);
        }
    }
}

/// Reports a progress notification above the history's latest revision.
fn future_progress(history: &History, i: usize, r: &Response, out: &mut Vec<Violation>) {
    if r.header_revision > history.revision() {
        out.push(Violation::FutureProgress {
            response: i,
            watch_id: r.watch_id,
            progress_revision: r.header_revision,
            latest: history.revision(),
        });
    }
}

fn malformed(response: usize, watch_id: i64, problem: &'static str) -> Violation {
    Violation::Malformed {
        response,
        watch_id,
        problem,
    }
}

/// One live watcher.
struct Watcher<'a> {
    id: i64,
    prev_kv: bool,
    /// The first revision it must receive.
    start: i64,
    /// The events it must receive that have not been delivered or skipped.
    expected: Expected<'a>,
    /// The furthest event delivered, as a log position.
    last: Option<usize>,
    /// Expected events jumped over by a later one, with the response that
    /// jumped: gaps, unless they arrive late (then they are reordered).
    skipped: BTreeMap<usize, usize>,
    /// The events so far of an unfinished fragmented response.
    pending: Option<Pending<'a>>,
    /// The undelivered event last reported under a dishonest progress
    /// notification, so that each is reported once.
    flagged: Option<usize>,
}

/// The fragments so far of one logical response.
struct Pending<'a> {
    /// The first fragment.
    first: usize,
    /// The events, each with its response.
    events: Vec<(usize, &'a Event)>,
}

impl<'a> Watcher<'a> {
    fn new(history: &'a History, id: i64, spec: &WatchSpec, start: i64) -> Self {
        Watcher {
            id,
            prev_kv: spec.prev_kv,
            start,
            expected: Expected::new(history, spec, start),
            last: None,
            skipped: BTreeMap::new(),
            pending: None,
            flagged: None,
        }
    }

    /// A response with events or fragments: adds to the fragmented response
    /// under way, and checks the logical response once it is complete.
    fn receive(&mut self, history: &History, i: usize, r: &'a Response, out: &mut Vec<Violation>) {
        if self.pending.is_none() && !r.fragment {
            // A whole logical response, the common case.
            self.deliver(history, r.events.iter().map(|e| (i, e)), i, out);
            return;
        }
        let continues = self.pending.is_some();
        let pending = self.pending.get_or_insert_with(|| Pending {
            first: i,
            events: Vec::new(),
        });
        pending.events.extend(r.events.iter().map(|e| (i, e)));
        if r.fragment && !r.canceled {
            return;
        }
        let Some(pending) = self.pending.take() else {
            return;
        };
        // A cancel cannot promise more fragments, and an empty cancel cuts
        // off the fragments before it.
        if r.canceled && (r.fragment || (continues && r.events.is_empty())) {
            out.push(Violation::UnfinishedFragment {
                response: pending.first,
                watch_id: self.id,
            });
        }
        self.deliver(history, pending.events, i, out);
    }

    /// Checks one logical response: its events, then that it did not end in
    /// the middle of a revision.
    fn deliver<'e>(
        &mut self,
        history: &History,
        events: impl IntoIterator<Item = (usize, &'e Event)>,
        last_response: usize,
        out: &mut Vec<Violation>,
    ) {
        let mut advanced = false;
        for (i, e) in events {
            advanced |= self.event(history, i, e, out);
        }
        let log = history.log();
        if let (true, Some(last), Some(next)) = (advanced, self.last, self.expected.peek()) {
            if log[next].revision == log[last].revision {
                out.push(Violation::SplitRevision {
                    response: last_response,
                    watch_id: self.id,
                    revision: log[next].revision,
                    key: log[next].kv.key.clone(),
                });
            }
        }
    }

    /// Checks one delivered event; returns whether it moved the watcher
    /// forward (was the next expected event, or later).
    fn event(&mut self, history: &History, i: usize, e: &Event, out: &mut Vec<Violation>) -> bool {
        let watch_id = self.id;
        let (key, revision) = (&e.kv.key, e.kv.mod_revision);
        let log = history.log();
        // In a correct stream each event is the next expected one, which
        // spares a lookup.
        let next = self
            .expected
            .peek()
            .filter(|&n| log[n].revision == revision && log[n].kv.key == *key);
        let Some(at) = next.or_else(|| history.find(key, revision)) else {
            out.push(Violation::WrongEvent {
                response: i,
                watch_id,
                kind: e.kind,
                kv: Box::new(e.kv.clone()),
                expected: None,
            });
            return false;
        };
        let record = &log[at];
        // Events the watcher must not get at all; they take no place in
        // its sequence.
        if !self.expected.covers(key) {
            out.push(Violation::OutOfRange {
                response: i,
                watch_id,
                key: key.clone(),
                revision,
            });
            return false;
        }
        if !self.expected.wants(record.kind) {
            out.push(Violation::Filtered {
                response: i,
                watch_id,
                kind: record.kind,
                key: key.clone(),
                revision,
            });
            return false;
        }
        if revision < self.start {
            out.push(Violation::BeforeStart {
                response: i,
                watch_id,
                key: key.clone(),
                revision,
                start: self.start,
            });
            return false;
        }
        // The event's content; wrong content still takes its place in the
        // sequence, so that one wrong field is not also a gap.
        if e.kind != record.kind || e.kv != record.kv {
            out.push(Violation::WrongEvent {
                response: i,
                watch_id,
                kind: e.kind,
                kv: Box::new(e.kv.clone()),
                expected: Some((record.kind, Box::new(record.kv.clone()))),
            });
        }
        self.check_prev_kv(history, i, e, record, out);
        // Its place: expected events before it are skipped (gaps unless
        // they come late), and an event already passed is late or again.
        while let Some(next) = self.expected.peek().filter(|&next| next < at) {
            self.skipped.insert(next, i);
            self.expected.advance();
        }
        if self.expected.peek() == Some(at) {
            self.expected.advance();
            self.last = Some(at);
            return true;
        }
        out.push(if self.skipped.remove(&at).is_some() {
            Violation::Reordered {
                response: i,
                watch_id,
                key: key.clone(),
                revision,
                after: self.last.map_or(0, |last| log[last].revision),
            }
        } else {
            Violation::Duplicate {
                response: i,
                watch_id,
                key: key.clone(),
                revision,
            }
        });
        false
    }

    /// prev_kv must be the key's kv at the previous revision when asked for
    /// (etcd may leave it out when that revision is compacted), and absent
    /// otherwise.
    fn check_prev_kv(
        &self,
        history: &History,
        i: usize,
        e: &Event,
        record: &Record,
        out: &mut Vec<Violation>,
    ) {
        let expected = record.prev.as_ref();
        let ok = if !self.prev_kv {
            e.prev_kv.is_none()
        } else {
            match (&e.prev_kv, expected) {
                (Some(delivered), Some(expected)) => delivered == expected,
                (None, None) => true,
                (None, Some(_)) => history.compacted().is_some_and(|c| c > record.revision - 1),
                (Some(_), None) => false,
            }
        };
        if !ok {
            out.push(Violation::WrongPrevKv {
                response: i,
                watch_id: self.id,
                key: e.kv.key.clone(),
                revision: e.kv.mod_revision,
                requested: self.prev_kv,
                delivered: e.prev_kv.clone().map(Box::new),
                expected: expected.cloned().map(Box::new),
            });
        }
    }

    /// A progress notification at `revision`: every event up to it must
    /// have been delivered.
    fn progress(&mut self, history: &History, i: usize, revision: i64, out: &mut Vec<Violation>) {
        let Some(next) = self.expected.peek() else {
            return;
        };
        let record = &history.log()[next];
        if record.revision <= revision && self.flagged != Some(next) {
            self.flagged = Some(next);
            out.push(Violation::DishonestProgress {
                response: i,
                watch_id: self.id,
                progress_revision: revision,
                key: record.kv.key.clone(),
                revision: record.revision,
            });
        }
    }

    /// A cancel; a compaction cancel must be justified by the history.
    fn cancel(self, history: &History, i: usize, r: &Response, out: &mut Vec<Violation>) {
        let compact_revision = r.compact_revision;
        if compact_revision > 0 {
            let needed = self.last.map_or(self.start, |last| {
                self.start.max(history.log()[last].revision + 1)
            });
            let compacted = history.compacted();
            if needed >= compact_revision || compacted.is_none_or(|c| compact_revision > c) {
                out.push(Violation::DishonestCompaction {
                    response: i,
                    watch_id: self.id,
                    compact_revision,
                    needed,
                    compacted,
                });
            }
        }
        self.end(history, out);
    }

    /// The watcher is over: what it skipped is a gap.
    fn end(self, history: &History, out: &mut Vec<Violation>) {
        if let Some((&first, &response)) = self.skipped.first_key_value() {
            let record = &history.log()[first];
            out.push(Violation::Gap {
                response,
                watch_id: self.id,
                key: record.kv.key.clone(),
                revision: record.revision,
                missing: self.skipped.len(),
            });
        }
    }

    /// The stream ended with the watcher live. With `through`
    /// ([`check_complete`]), it must have finished its fragments and
    /// received every event up to that revision.
    fn finish(mut self, history: &History, through: Option<i64>, out: &mut Vec<Violation>) {
        if let Some(through) = through {
            if let Some(pending) = self.pending.take() {
                out.push(Violation::UnfinishedFragment {
                    response: pending.first,
                    watch_id: self.id,
                });
                let last = pending.events.last().map_or(pending.first, |&(i, _)| i);
                self.deliver(history, pending.events, last, out);
            }
            let log = history.log();
            let mut first = None;
            let mut missing = 0;
            while let Some(next) = self.expected.peek().filter(|&n| log[n].revision <= through) {
                first.get_or_insert(next);
                missing += 1;
                self.expected.advance();
            }
            if let Some(first) = first {
                out.push(Violation::Incomplete {
                    watch_id: self.id,
                    key: log[first].kv.key.clone(),
                    revision: log[first].revision,
                    missing,
                    through,
                });
            }
        }
        self.end(history, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::range::KeyRange;
    use crate::watch::{Change, EventKind, Kv};

    /// The fixture, compacted at 5:
    ///
    /// ```text
    /// rev 2  put a=1
    /// rev 3  put b=1 (lease 7)
    /// rev 4  txn: put a=2, put c=1, delete b
    /// rev 5  delete a
    /// rev 6  put a=3      (a new life of a)
    /// rev 7  put d=1
    /// rev 8  put d=2
    /// ```
    fn history() -> History {
        let mut h = History::new();
        h.commit(2, [Change::put("a", "1")]).unwrap();
        h.commit(
            3,
            [Change::Put {
                key: b"b".to_vec(),
                value: b"1".to_vec(),
                lease: 7,
            }],
        )
        .unwrap();
        h.commit(
            4,
            [
                Change::put("a", "2"),
                Change::put("c", "1"),
                Change::delete("b"),
            ],
        )
        .unwrap();
        h.commit(5, [Change::delete("a")]).unwrap();
        h.commit(6, [Change::put("a", "3")]).unwrap();
        h.commit(7, [Change::put("d", "1")]).unwrap();
        h.commit(8, [Change::put("d", "2")]).unwrap();
        h.compact(5).unwrap();
        h
    }

    /// The history's event for `key` at `revision`, without prev_kv.
    fn ev(h: &History, key: &str, revision: i64) -> Event {
        let at = h
            .find(key.as_bytes(), revision)
            .expect("a change in the fixture");
        let record = &h.log()[at];
        Event {
            kind: record.kind,
            kv: record.kv.clone(),
            prev_kv: None,
        }
    }

    /// The same with the right prev_kv.
    fn evp(h: &History, key: &str, revision: i64) -> Event {
        Event {
            prev_kv: h.get(key.as_bytes(), revision - 1),
            ..ev(h, key, revision)
        }
    }

    fn created(watch_id: i64, header_revision: i64) -> Response {
        Response {
            watch_id,
            header_revision,
            created: true,
            ..Response::default()
        }
    }

    fn failed_create(watch_id: i64) -> Response {
        Response {
            canceled: true,
            ..created(watch_id, 8)
        }
    }

    fn events(watch_id: i64, events: Vec<Event>) -> Response {
        Response {
            watch_id,
            header_revision: 8,
            events,
            ..Response::default()
        }
    }

    fn fragment(watch_id: i64, events: Vec<Event>) -> Response {
        Response {
            fragment: true,
            ..self::events(watch_id, events)
        }
    }

    fn progress(watch_id: i64, header_revision: i64) -> Response {
        Response {
            watch_id,
            header_revision,
            ..Response::default()
        }
    }

    fn cancel(watch_id: i64, compact_revision: i64) -> Response {
        Response {
            watch_id,
            header_revision: 8,
            canceled: true,
            compact_revision,
            ..Response::default()
        }
    }

    #[test]
    fn accepts_a_correct_stream() {
        let h = history();
        let a4_without_prev = ev(&h, "a", 4); // excused: revision 3 is compacted
        let stream = Stream {
            creates: vec![
                WatchSpec::key("a").starting_at(2).with_prev_kv(),
                WatchSpec::range("a", "c").starting_at(2).without_deletes(),
                WatchSpec::from_key("b").starting_at(2).without_puts(),
                WatchSpec::range("", "\0"),
                WatchSpec::key("a").starting_at(2),
                WatchSpec::key("a"),
            ],
            responses: vec![
                created(0, 8),
                created(1, 8),
                created(2, 8),
                // Start revision 0: from revision 4 on.
                created(3, 3),
                created(4, 8),
                failed_create(-1),
                // Needs revision 2, compacted at 5.
                cancel(4, 5),
                // Catch-up: two revisions in one response.
                events(0, vec![evp(&h, "a", 2), a4_without_prev]),
                // Revision 4 for [a, c) without deletes is a@4 alone.
                events(1, vec![ev(&h, "a", 2), ev(&h, "b", 3), ev(&h, "a", 4)]),
                // The txn's revision in two fragments.
                fragment(3, vec![ev(&h, "a", 4), ev(&h, "c", 4)]),
                events(3, vec![ev(&h, "b", 4)]),
                events(2, vec![ev(&h, "b", 4)]),
                events(0, vec![evp(&h, "a", 5), evp(&h, "a", 6)]),
                progress(0, 8),
                events(1, vec![ev(&h, "a", 6)]),
                events(3, vec![ev(&h, "a", 5), ev(&h, "a", 6)]),
                progress(3, 6),
                events(3, vec![ev(&h, "d", 7), ev(&h, "d", 8)]),
                progress(-1, 8),
                cancel(0, 0),
            ],
        };
        let report = check(&h, &stream);
        report.ensure().unwrap();
        assert_eq!(
            (report.watchers, report.events, report.progress),
            (5, 16, 3)
        );
        check_complete(&h, &stream, 8).ensure().unwrap();
    }

    #[test]
    fn accepts_edge_cases() {
        let h = history();
        for (name, creates, responses) in [
            (
                "a watch id reused after its cancel",
                vec![WatchSpec::key("a").starting_at(2), WatchSpec::key("d")],
                vec![
                    created(0, 8),
                    events(0, vec![ev(&h, "a", 2)]),
                    cancel(0, 0),
                    created(0, 6),
                    events(0, vec![ev(&h, "d", 7), ev(&h, "d", 8)]),
                ],
            ),
            (
                "fragments of two watchers interleaved",
                vec![WatchSpec::range("", "\0").starting_at(4); 2],
                vec![
                    created(0, 8),
                    created(1, 8),
                    fragment(0, vec![ev(&h, "a", 4)]),
                    fragment(1, vec![ev(&h, "a", 4), ev(&h, "c", 4)]),
                    fragment(0, vec![ev(&h, "c", 4)]),
                    events(1, vec![ev(&h, "b", 4)]),
                    events(0, vec![ev(&h, "b", 4)]),
                ],
            ),
            (
                "progress for a watcher with a future start",
                vec![WatchSpec::key("a").starting_at(20)],
                vec![created(0, 8), progress(0, 8), progress(-1, 8)],
            ),
            (
                "a stream that ends before the events",
                vec![WatchSpec::key("a").starting_at(2)],
                vec![created(0, 8), events(0, vec![ev(&h, "a", 2)])],
            ),
            (
                "a failed create with a real id",
                vec![WatchSpec::key("a")],
                vec![failed_create(3), progress(-1, 8)],
            ),
        ] {
            let stream = Stream { creates, responses };
            let report = check(&h, &stream);
            assert!(report.is_ok(), "{name}: {}", report.ensure().unwrap_err());
        }
    }

    /// A case that must produce exactly one violation, of the given shape.
    struct Case {
        name: &'static str,
        creates: Vec<WatchSpec>,
        responses: Vec<Response>,
        /// `Some` to run [`check_complete`] through that revision.
        through: Option<i64>,
        expect: fn(&Violation) -> bool,
    }

    #[test]
    fn rejects_each_broken_guarantee() {
        let h = history();
        let key_a = || vec![WatchSpec::key("a").starting_at(2)];
        let all_from_4 = || vec![WatchSpec::range("", "\0").starting_at(4)];
        let case = |name, creates, responses, expect| Case {
            name,
            creates,
            responses,
            through: None,
            expect,
        };
        let mut a4_version_3 = ev(&h, "a", 4);
        a4_version_3.kv.version = 3;
        let a5_as_put = Event {
            kind: EventKind::Put,
            ..ev(&h, "a", 5)
        };
        let a3 = Event {
            kind: EventKind::Put,
            kv: Kv {
                mod_revision: 3,
                ..ev(&h, "a", 2).kv
            },
            prev_kv: None,
        };
        let a4_prev_a4 = Event {
            prev_kv: Some(ev(&h, "a", 4).kv),
            ..ev(&h, "a", 4)
        };
        let a6_prev_a4 = Event {
            prev_kv: Some(ev(&h, "a", 4).kv),
            ..ev(&h, "a", 6)
        };
        let cases = vec![
            // The sequence.
            case(
                "gap",
                key_a(),
                vec![
                    created(0, 8),
                    events(0, vec![ev(&h, "a", 2)]),
                    events(0, vec![ev(&h, "a", 5)]),
                ],
                |v| matches!(v, Violation::Gap { response: 2, watch_id: 0, key, revision: 4, missing: 1 } if key == b"a"),
            ),
            case(
                "duplicate in a later response",
                key_a(),
                vec![
                    created(0, 8),
                    events(0, vec![ev(&h, "a", 2)]),
                    events(0, vec![ev(&h, "a", 4)]),
                    events(0, vec![ev(&h, "a", 4)]),
                ],
                |v| {
                    matches!(
                        v,
                        Violation::Duplicate {
                            response: 3,
                            revision: 4,
                            ..
                        }
                    )
                },
            ),
            case(
                "duplicate in one response",
                key_a(),
                vec![
                    created(0, 8),
                    events(0, vec![ev(&h, "a", 2), ev(&h, "a", 2)]),
                ],
                |v| {
                    matches!(
                        v,
                        Violation::Duplicate {
                            response: 1,
                            revision: 2,
                            ..
                        }
                    )
                },
            ),
            case(
                "reordering",
                key_a(),
                vec![
                    created(0, 8),
                    events(0, vec![ev(&h, "a", 4)]),
                    events(0, vec![ev(&h, "a", 2)]),
                ],
                |v| {
                    matches!(
                        v,
                        Violation::Reordered {
                            response: 2,
                            revision: 2,
                            after: 4,
                            ..
                        }
                    )
                },
            ),
            case(
                "reordering within a revision",
                all_from_4(),
                vec![
                    created(0, 8),
                    events(0, vec![ev(&h, "c", 4), ev(&h, "a", 4), ev(&h, "b", 4)]),
                ],
                |v| matches!(v, Violation::Reordered { response: 1, revision: 4, key, .. } if key == b"a"),
            ),
            case(
                "split revision",
                all_from_4(),
                vec![
                    created(0, 8),
                    events(0, vec![ev(&h, "a", 4), ev(&h, "c", 4)]),
                    events(0, vec![ev(&h, "b", 4)]),
                ],
                |v| matches!(v, Violation::SplitRevision { response: 1, revision: 4, key, .. } if key == b"b"),
            ),
            // The events.
            case(
                "wrong version",
                key_a(),
                vec![created(0, 8), events(0, vec![ev(&h, "a", 2), a4_version_3])],
                |v| matches!(v, Violation::WrongEvent { kv, expected: Some((EventKind::Put, _)), .. } if kv.version == 3),
            ),
            case(
                "wrong type",
                vec![WatchSpec::key("a").starting_at(5)],
                vec![created(0, 8), events(0, vec![a5_as_put])],
                |v| {
                    matches!(
                        v,
                        Violation::WrongEvent {
                            kind: EventKind::Put,
                            expected: Some((EventKind::Delete, _)),
                            ..
                        }
                    )
                },
            ),
            case(
                "no such change",
                key_a(),
                vec![created(0, 8), events(0, vec![ev(&h, "a", 2), a3])],
                |v| matches!(v, Violation::WrongEvent { expected: None, .. }),
            ),
            case(
                "wrong prev_kv",
                vec![WatchSpec::key("a").starting_at(4).with_prev_kv()],
                vec![created(0, 8), events(0, vec![a4_prev_a4])],
                |v| {
                    matches!(
                        v,
                        Violation::WrongPrevKv {
                            requested: true,
                            revision: 4,
                            delivered: Some(_),
                            expected: Some(_),
                            ..
                        }
                    )
                },
            ),
            case(
                "prev_kv of a key that did not exist",
                vec![WatchSpec::key("a").starting_at(6).with_prev_kv()],
                vec![created(0, 8), events(0, vec![a6_prev_a4])],
                |v| {
                    matches!(
                        v,
                        Violation::WrongPrevKv {
                            requested: true,
                            revision: 6,
                            expected: None,
                            ..
                        }
                    )
                },
            ),
            case(
                "prev_kv left out above the compaction",
                vec![WatchSpec::key("d").starting_at(8).with_prev_kv()],
                vec![created(0, 8), events(0, vec![ev(&h, "d", 8)])],
                |v| {
                    matches!(
                        v,
                        Violation::WrongPrevKv {
                            requested: true,
                            revision: 8,
                            delivered: None,
                            ..
                        }
                    )
                },
            ),
            case(
                "prev_kv not asked for",
                vec![WatchSpec::key("d").starting_at(8)],
                vec![created(0, 8), events(0, vec![evp(&h, "d", 8)])],
                |v| {
                    matches!(
                        v,
                        Violation::WrongPrevKv {
                            requested: false,
                            ..
                        }
                    )
                },
            ),
            case(
                "delete despite no_delete",
                vec![WatchSpec::key("a").starting_at(2).without_deletes()],
                vec![
                    created(0, 8),
                    events(0, vec![ev(&h, "a", 2), ev(&h, "a", 4)]),
                    events(0, vec![ev(&h, "a", 5)]),
                ],
                |v| {
                    matches!(
                        v,
                        Violation::Filtered {
                            kind: EventKind::Delete,
                            revision: 5,
                            ..
                        }
                    )
                },
            ),
            case(
                "put despite no_put",
                vec![WatchSpec::key("a").starting_at(2).without_puts()],
                vec![created(0, 8), events(0, vec![ev(&h, "a", 2)])],
                |v| {
                    matches!(
                        v,
                        Violation::Filtered {
                            kind: EventKind::Put,
                            revision: 2,
                            ..
                        }
                    )
                },
            ),
            case(
                "outside the range",
                vec![WatchSpec::range("a", "c").starting_at(4)],
                vec![
                    created(0, 8),
                    events(0, vec![ev(&h, "a", 4), ev(&h, "c", 4), ev(&h, "b", 4)]),
                ],
                |v| matches!(v, Violation::OutOfRange { key, revision: 4, .. } if key == b"c"),
            ),
            case(
                "below the start revision",
                vec![WatchSpec::key("a").starting_at(4)],
                vec![created(0, 8), events(0, vec![ev(&h, "a", 2)])],
                |v| {
                    matches!(
                        v,
                        Violation::BeforeStart {
                            revision: 2,
                            start: 4,
                            ..
                        }
                    )
                },
            ),
            case(
                "at the Created header with start 0",
                vec![WatchSpec::key("a")],
                vec![created(0, 4), events(0, vec![ev(&h, "a", 4)])],
                |v| {
                    matches!(
                        v,
                        Violation::BeforeStart {
                            revision: 4,
                            start: 5,
                            ..
                        }
                    )
                },
            ),
            // Progress.
            case(
                "dishonest progress for one watch",
                key_a(),
                vec![
                    created(0, 8),
                    events(0, vec![ev(&h, "a", 2)]),
                    progress(0, 4),
                ],
                |v| {
                    matches!(
                        v,
                        Violation::DishonestProgress {
                            response: 2,
                            watch_id: 0,
                            progress_revision: 4,
                            revision: 4,
                            ..
                        }
                    )
                },
            ),
            case(
                "dishonest progress for all, reported once",
                key_a(),
                vec![
                    created(0, 8),
                    events(0, vec![ev(&h, "a", 2)]),
                    progress(-1, 5),
                    progress(-1, 6),
                ],
                |v| {
                    matches!(
                        v,
                        Violation::DishonestProgress {
                            response: 2,
                            watch_id: 0,
                            progress_revision: 5,
                            revision: 4,
                            ..
                        }
                    )
                },
            ),
            case(
                "progress from the future",
                vec![WatchSpec::key("a").starting_at(10)],
                vec![created(0, 8), progress(-1, 9)],
                |v| {
                    matches!(
                        v,
                        Violation::FutureProgress {
                            response: 1,
                            watch_id: -1,
                            progress_revision: 9,
                            latest: 8
                        }
                    )
                },
            ),
            // Lifecycle.
            case(
                "event after cancel",
                key_a(),
                vec![created(0, 8), cancel(0, 0), events(0, vec![ev(&h, "a", 2)])],
                |v| {
                    matches!(
                        v,
                        Violation::AfterCancel {
                            response: 2,
                            watch_id: 0
                        }
                    )
                },
            ),
            case(
                "event after a failed create",
                key_a(),
                vec![failed_create(5), events(5, vec![ev(&h, "a", 2)])],
                |v| {
                    matches!(
                        v,
                        Violation::AfterCancel {
                            response: 1,
                            watch_id: 5
                        }
                    )
                },
            ),
            case(
                "event before created",
                key_a(),
                vec![events(0, vec![ev(&h, "a", 2)]), created(0, 8)],
                |v| {
                    matches!(
                        v,
                        Violation::BeforeCreate {
                            response: 0,
                            watch_id: 0
                        }
                    )
                },
            ),
            case(
                "unknown watch",
                key_a(),
                vec![created(0, 8), events(7, vec![ev(&h, "a", 2)])],
                |v| {
                    matches!(
                        v,
                        Violation::UnknownWatch {
                            response: 1,
                            watch_id: 7
                        }
                    )
                },
            ),
            case(
                "events for watch -1",
                key_a(),
                vec![created(0, 8), events(-1, vec![ev(&h, "a", 2)])],
                |v| {
                    matches!(
                        v,
                        Violation::UnknownWatch {
                            response: 1,
                            watch_id: -1
                        }
                    )
                },
            ),
            case(
                "Created without a create",
                vec![],
                vec![created(0, 8)],
                |v| {
                    matches!(
                        v,
                        Violation::UnmatchedCreated {
                            response: 0,
                            watch_id: 0
                        }
                    )
                },
            ),
            case(
                "watch id in use",
                vec![WatchSpec::key("a"); 2],
                vec![created(0, 8), created(0, 8)],
                |v| {
                    matches!(
                        v,
                        Violation::DuplicateWatchId {
                            response: 1,
                            watch_id: 0
                        }
                    )
                },
            ),
            case(
                "compact_revision without a cancel",
                key_a(),
                vec![
                    created(0, 8),
                    Response {
                        compact_revision: 5,
                        ..progress(0, 1)
                    },
                ],
                |v| matches!(v, Violation::Malformed { response: 1, .. }),
            ),
            case(
                "fragment cut off by a cancel",
                key_a(),
                vec![
                    created(0, 8),
                    fragment(0, vec![ev(&h, "a", 2)]),
                    cancel(0, 0),
                ],
                |v| {
                    matches!(
                        v,
                        Violation::UnfinishedFragment {
                            response: 1,
                            watch_id: 0
                        }
                    )
                },
            ),
            // Compaction.
            case(
                "compaction cancel past what was needed",
                key_a(),
                vec![
                    created(0, 8),
                    events(0, vec![ev(&h, "a", 2), ev(&h, "a", 4), ev(&h, "a", 5)]),
                    cancel(0, 5),
                ],
                |v| {
                    matches!(
                        v,
                        Violation::DishonestCompaction {
                            response: 2,
                            compact_revision: 5,
                            needed: 6,
                            compacted: Some(5),
                            ..
                        }
                    )
                },
            ),
            case(
                "compaction cancel above the history's compaction",
                key_a(),
                vec![created(0, 8), cancel(0, 7)],
                |v| {
                    matches!(
                        v,
                        Violation::DishonestCompaction {
                            compact_revision: 7,
                            needed: 2,
                            compacted: Some(5),
                            ..
                        }
                    )
                },
            ),
            // Completeness.
            Case {
                through: Some(8),
                ..case(
                    "incomplete at the end",
                    key_a(),
                    vec![created(0, 8), events(0, vec![ev(&h, "a", 2)])],
                    |v| {
                        matches!(
                            v,
                            Violation::Incomplete {
                                watch_id: 0,
                                revision: 4,
                                missing: 3,
                                through: 8,
                                ..
                            }
                        )
                    },
                )
            },
            Case {
                through: Some(8),
                ..case(
                    "create never answered",
                    vec![WatchSpec::key("d").starting_at(7), WatchSpec::key("a")],
                    vec![
                        created(0, 8),
                        events(0, vec![ev(&h, "d", 7), ev(&h, "d", 8)]),
                    ],
                    |v| matches!(v, Violation::NeverCreated { create: 1 }),
                )
            },
            Case {
                through: Some(8),
                ..case(
                    "fragment never finished",
                    vec![WatchSpec::key("d").starting_at(7)],
                    vec![
                        created(0, 8),
                        fragment(0, vec![ev(&h, "d", 7), ev(&h, "d", 8)]),
                    ],
                    |v| {
                        matches!(
                            v,
                            Violation::UnfinishedFragment {
                                response: 1,
                                watch_id: 0
                            }
                        )
                    },
                )
            },
        ];
        for Case {
            name,
            creates,
            responses,
            through,
            expect,
        } in cases
        {
            let stream = Stream { creates, responses };
            let report = match through {
                Some(through) => check_complete(&h, &stream, through),
                None => check(&h, &stream),
            };
            assert!(
                report.violations.len() == 1 && expect(&report.violations[0]),
                "{name}: got {:#?}",
                report.violations
            );
            // Every violation reads as one line.
            let shown = report.violations[0].to_string();
            assert!(!shown.contains('\n'), "{name}: {shown}");
        }
    }

    #[test]
    fn a_compaction_cancel_needs_a_compaction() {
        let mut h = History::new();
        h.commit(2, [Change::put("a", "1")]).unwrap();
        let stream = Stream {
            creates: vec![WatchSpec::key("a").starting_at(1)],
            responses: vec![created(0, 2), cancel(0, 2)],
        };
        let report = check(&h, &stream);
        assert!(
            matches!(
                report.violations.as_slice(),
                [Violation::DishonestCompaction {
                    compacted: None,
                    needed: 1,
                    ..
                }]
            ),
            "{report:#?}"
        );
        h.compact(2).unwrap();
        check(&h, &stream).ensure().unwrap();
    }

    #[test]
    fn ensure_lists_the_first_twenty() {
        let h = history();
        let stream = Stream {
            creates: vec![],
            responses: (0..25).map(|id| events(id, vec![])).collect(),
        };
        let report = check(&h, &stream);
        assert_eq!(report.violations.len(), 25);
        let message = report.ensure().unwrap_err().to_string();
        let lines: Vec<&str> = message.lines().collect();
        assert_eq!(lines.len(), 22, "{message}");
        assert_eq!(lines[0], "25 watch violation(s):");
        assert_eq!(
            lines[1],
            "  1. response 0, watch 0: no such watch on the stream"
        );
        assert_eq!(lines[21], "  … and 5 more");
    }

    /// A deterministic generator (an LCG), to avoid a dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// The stream etcd would send for `specs`, created at `created_at`: each
    /// watcher's events by brute force over the log, cut into responses of
    /// whole revisions, big ones fragmented, the watchers interleaved.
    fn correct_stream(h: &History, specs: &[WatchSpec], created_at: i64, rng: &mut Rng) -> Stream {
        let mut queues: Vec<std::collections::VecDeque<Response>> = Vec::new();
        for (id, spec) in specs.iter().enumerate() {
            let id = id as i64;
            let range = KeyRange::of(spec);
            let start = match spec.start_revision {
                0 => created_at + 1,
                s => s,
            };
            let mut by_revision: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
            for r in h.log() {
                let wanted = match r.kind {
                    EventKind::Put => !spec.no_put,
                    EventKind::Delete => !spec.no_delete,
                };
                if r.revision >= start && wanted && range.contains(&r.kv.key) {
                    let prev_kv = if spec.prev_kv {
                        h.get(&r.kv.key, r.revision - 1)
                    } else {
                        None
                    };
                    by_revision.entry(r.revision).or_default().push(Event {
                        kind: r.kind,
                        kv: r.kv.clone(),
                        prev_kv,
                    });
                }
            }
            let mut queue = std::collections::VecDeque::new();
            let mut revisions = by_revision.into_values().peekable();
            while revisions.peek().is_some() {
                let take = 1 + rng.below(3) as usize;
                let batch: Vec<Event> = revisions.by_ref().take(take).flatten().collect();
                let mut chunks = batch.chunks(4).peekable();
                while let Some(chunk) = chunks.next() {
                    queue.push_back(Response {
                        fragment: chunks.peek().is_some(),
                        ..events(id, chunk.to_vec())
                    });
                }
            }
            queues.push(queue);
        }
        let mut responses: Vec<Response> = (0..specs.len() as i64)
            .map(|id| created(id, created_at))
            .collect();
        while queues.iter().any(|q| !q.is_empty()) {
            let q = rng.below(queues.len() as u64) as usize;
            // A whole fragmented response at once keeps the generator simple.
            while let Some(r) = queues[q].pop_front() {
                let more = r.fragment;
                responses.push(r);
                if !more {
                    break;
                }
            }
        }
        responses.push(progress(-1, h.revision()));
        Stream {
            creates: specs.to_vec(),
            responses,
        }
    }

    /// Many keys and revisions, txns of several keys, watchers of every
    /// shape: the merge and scan cursors both agree with brute force, and a
    /// dropped or repeated response is caught.
    #[test]
    fn scale_against_brute_force() {
        let mut rng = Rng(7);
        let key = |k: u64| format!("k{:03}", k);
        let mut h = History::new();
        for revision in 2..=600 {
            let mut keys = std::collections::BTreeSet::new();
            for _ in 0..1 + rng.below(4) {
                keys.insert(rng.below(120));
            }
            let changes: Vec<Change> = keys
                .into_iter()
                .map(|k| match rng.below(4) {
                    0 => Change::delete(key(k)),
                    _ => Change::put(key(k), format!("v{revision}")),
                })
                .collect();
            // A txn of only absent deletes changes nothing: skip it.
            if h.commit(revision, changes.clone()).is_err() {
                h.commit(revision, [Change::put(key(0), "filler")]).unwrap();
            }
        }
        h.compact(100).unwrap();
        let mut specs = Vec::new();
        for _ in 0..150 {
            let a = rng.below(120);
            let mut spec = match rng.below(4) {
                0 => WatchSpec::key(key(a)),
                1 => WatchSpec::range(key(a), key(a + rng.below(20))),
                2 => WatchSpec::prefix(format!("k{}", a % 10)),
                _ => WatchSpec::from_key(key(a)),
            };
            spec.start_revision = [0, 1, 50, 300][rng.below(4) as usize];
            spec.no_put = rng.below(5) == 0;
            spec.no_delete = rng.below(5) == 0;
            spec.prev_kv = rng.below(2) == 0;
            specs.push(spec);
        }
        let stream = correct_stream(&h, &specs, 200, &mut rng);
        let report = check_complete(&h, &stream, h.revision());
        report.ensure().unwrap();
        assert!(report.events > 10_000, "{}", report.events);

        // Drop one response with events (not a fragment, so the rest stay
        // well formed): a gap, or a dishonest progress at the end if it was
        // the watcher's last.
        let at = (0..stream.responses.len())
            .rev()
            .find(|&i| {
                let r = &stream.responses[i];
                !r.fragment && r.events.len() > 1 && !stream.responses[i - 1].fragment
            })
            .unwrap();
        let mut dropped = stream.clone();
        dropped.responses.remove(at);
        let violations = check(&h, &dropped).violations;
        assert!(
            !violations.is_empty()
                && violations.iter().all(|v| matches!(
                    v,
                    Violation::Gap { .. } | Violation::DishonestProgress { .. }
                )),
            "{violations:#?}"
        );

        // Repeat one: duplicates only.
        let mut repeated = stream.clone();
        repeated
            .responses
            .insert(at + 1, stream.responses[at].clone());
        let violations = check(&h, &repeated).violations;
        assert_eq!(violations.len(), stream.responses[at].events.len());
        assert!(violations
            .iter()
            .all(|v| matches!(v, Violation::Duplicate { .. })));
    }
}
