//! The watch workload's check: watchers that reconnect, against the KV
//! history.
//!
//! The [`watch`](crate::watch) validator needs the complete history of
//! committed writes, which a faulty run cannot know from its clients alone
//! (an indeterminate put may or may not have committed, at a revision
//! nobody was told). So the ground truth is built in two steps:
//!
//! 1. **The reference**: after recovery, one watch of every key from
//!    revision 1 on the leader, read up to the final revision (`head`). It
//!    must be *consistent with the clients' history*: every revision in
//!    `2..=head` has an event; every acknowledged put is there, at the
//!    revision its response named, with its value; every put of a workload
//!    key carries a value some client wrote with a put that did not
//!    certainly fail. The reference stream is itself validated against the
//!    history built from it (versions, create revisions, prev_kv).
//! 2. **The watchers**, checked against that history twice:
//!    - each *segment* (one stream, one create) on its own, which holds the
//!      server to the `start_revision` it was asked for;
//!    - the *stitched* watcher, its segments joined as a client library
//!      presents them (one create, the later Created responses dropped),
//!      which catches what no single segment shows: an event delivered
//!      again after a reconnection (a duplicate), or one never delivered
//!      because the reconnection resumed too late (a gap). A watcher that
//!      caught up at the end must hold every event through `head`.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::history::{Call, Op, Outcome, Return};
use crate::watch::{self, Change, EventKind, History, Stream};

/// One connection of a watcher: a stream with exactly one create.
#[derive(Debug, Clone, Default)]
pub struct Segment {
    /// The member it was opened on.
    pub member: usize,
    /// What was sent and received.
    pub stream: Stream,
}

/// One logical watcher: its segments, in order.
#[derive(Debug, Clone, Default)]
pub struct Watcher {
    /// The connections, in the order they were opened.
    pub segments: Vec<Segment>,
    /// It confirmed (by a progress notification at or above the reference's
    /// head) that it had received everything through the head.
    pub caught_up: bool,
}

/// The server's account of every committed write.
#[derive(Debug, Clone, Default)]
pub struct Reference {
    /// A watch of every key from revision 1.
    pub stream: Stream,
    /// The store's revision when the reference was read; the stream holds
    /// every event through it.
    pub head: i64,
}

/// Something wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Anomaly {
    /// The reference's events do not make a history (revisions going down,
    /// a key twice in one revision).
    Unusable {
        /// Why.
        why: String,
    },
    /// No event at this revision, although every revision up to the head
    /// is a committed write.
    MissingRevision {
        /// The revision.
        revision: i64,
    },
    /// An acknowledged put is not at the revision its response named.
    AckedPutMissing {
        /// The key.
        key: String,
        /// The value.
        value: u64,
        /// The revision of the response.
        revision: i64,
        /// What the reference has there instead.
        found: Option<String>,
    },
    /// A put of a value no client wrote, or whose write certainly failed.
    Phantom {
        /// The key.
        key: String,
        /// The value as committed.
        value: String,
        /// The revision.
        revision: i64,
    },
    /// The watch validator's verdict on one stream.
    Stream {
        /// `reference`, `watcher W segment S`, or `watcher W stitched`.
        stream: String,
        /// The broken guarantee.
        violation: String,
    },
}

/// What the check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Watchers checked.
    pub watchers: usize,
    /// Segments (connections) over all watchers.
    pub segments: usize,
    /// Events received by the watchers.
    pub events: usize,
    /// Progress notifications received by the watchers.
    pub progress: usize,
    /// Watchers that confirmed they were complete through the head.
    pub caught_up: usize,
    /// The reference's head revision.
    pub head: i64,
    /// Everything wrong.
    pub anomalies: Vec<Anomaly>,
}

impl Report {
    /// No anomaly.
    pub fn valid(&self) -> bool {
        self.anomalies.is_empty()
    }
}

/// Checks `watchers` and `reference` against the clients' `ops`.
pub fn check(ops: &[Op], reference: &Reference, watchers: &[Watcher]) -> Report {
    let mut report = Report {
        watchers: watchers.len(),
        head: reference.head,
        ..Report::default()
    };
    let out = &mut report.anomalies;
    let Some(history) = rebuild(reference, out) else {
        return report;
    };
    against_ops(ops, &history, out);
    streams(
        "reference".into(),
        watch::check_complete(&history, &reference.stream, reference.head),
        out,
    );
    for (w, watcher) in watchers.iter().enumerate() {
        report.segments += watcher.segments.len();
        report.caught_up += usize::from(watcher.caught_up);
        for (s, segment) in watcher.segments.iter().enumerate() {
            streams(
                format!("watcher {w} segment {s}"),
                watch::check(&history, &segment.stream),
                out,
            );
        }
        let joined = stitch(watcher);
        let verdict = if watcher.caught_up {
            watch::check_complete(&history, &joined, reference.head)
        } else {
            watch::check(&history, &joined)
        };
        report.events += verdict.events;
        report.progress += verdict.progress;
        streams(format!("watcher {w} stitched"), verdict, out);
    }
    report
}

/// The history the reference's events make, and its gaps.
fn rebuild(reference: &Reference, out: &mut Vec<Anomaly>) -> Option<History> {
    let mut by_revision: BTreeMap<i64, Vec<Change>> = BTreeMap::new();
    let mut order = Vec::new();
    for r in &reference.stream.responses {
        for e in &r.events {
            let revision = e.kv.mod_revision;
            if order.last() != Some(&revision) {
                order.push(revision);
            }
            by_revision.entry(revision).or_default().push(match e.kind {
                EventKind::Put => Change::Put {
                    key: e.kv.key.clone(),
                    value: e.kv.value.clone(),
                    lease: e.kv.lease,
                },
                EventKind::Delete => Change::delete(e.kv.key.clone()),
            });
        }
    }
    let mut history = History::new();
    // Revisions in stream order: one out of order makes commit refuse.
    let mut committed = std::collections::BTreeSet::new();
    for revision in order {
        if !committed.insert(revision) {
            out.push(Anomaly::Unusable {
                why: format!("revision {revision} comes in two separate runs of events"),
            });
            return None;
        }
        let changes = by_revision.remove(&revision).unwrap_or_default();
        if let Err(e) = history.commit(revision, changes) {
            out.push(Anomaly::Unusable { why: e.to_string() });
            return None;
        }
    }
    for revision in 2..=reference.head {
        if !committed.contains(&revision) {
            out.push(Anomaly::MissingRevision { revision });
        }
    }
    Some(history)
}

/// Every acknowledged put is in the history where its response said; every
/// put of a workload key was written by a client.
fn against_ops(ops: &[Op], history: &History, out: &mut Vec<Anomaly>) {
    // Value → (key, may have committed).
    let mut written: HashMap<u64, (&str, bool)> = HashMap::new();
    let mut keys = std::collections::BTreeSet::new();
    for op in ops {
        let (key, value) = match &op.call {
            Call::Write { key, value } | Call::Cas { key, value, .. } => (key, value),
            _ => continue,
        };
        keys.insert(key.as_bytes().to_vec());
        // A CAS whose compare failed put nothing.
        let put = match &op.outcome {
            Outcome::Ok { result, .. } => !matches!(result, Return::Cas { succeeded: false }),
            Outcome::Info { .. } => true,
            Outcome::Fail { .. } => false,
        };
        written.insert(*value, (key.as_str(), put));
        if let (true, Outcome::Ok { revision, .. }) = (put, &op.outcome) {
            let revision = *revision;
            let kv = history.get(key.as_bytes(), revision);
            let ok = kv.as_ref().is_some_and(|kv| {
                kv.mod_revision == revision && kv.value == value.to_string().as_bytes()
            });
            if !ok {
                out.push(Anomaly::AckedPutMissing {
                    key: key.clone(),
                    value: *value,
                    revision,
                    found: kv.map(|kv| kv.to_string()),
                });
            }
        }
    }
    for key in &keys {
        for revision in 2..=history.revision() {
            let Some(kv) = history.get(key, revision) else {
                continue;
            };
            if kv.mod_revision != revision {
                continue;
            }
            let value = String::from_utf8_lossy(&kv.value).into_owned();
            let by_client = value
                .parse::<u64>()
                .ok()
                .and_then(|v| written.get(&v))
                .is_some_and(|&(k, possible)| possible && k.as_bytes() == key.as_slice());
            if !by_client {
                out.push(Anomaly::Phantom {
                    key: String::from_utf8_lossy(key).into_owned(),
                    value,
                    revision,
                });
            }
        }
    }
}

/// Joins a watcher's segments into the one stream a client library would
/// present: the first successful create, then every response, the later
/// Created responses dropped and watch ids renamed to the first one's.
pub fn stitch(watcher: &Watcher) -> Stream {
    let mut joined = Stream::default();
    let mut id = None;
    for segment in &watcher.segments {
        let Some(created) = segment
            .stream
            .responses
            .iter()
            .position(|r| r.created && !r.canceled)
        else {
            continue;
        };
        let this = segment.stream.responses[created].watch_id;
        let later = id.is_some();
        let first = *id.get_or_insert(this);
        if !later {
            if let Some(spec) = segment.stream.creates.first() {
                joined.creates.push(spec.clone());
            }
        }
        for (i, r) in segment.stream.responses.iter().enumerate() {
            if i == created && later {
                continue;
            }
            let mut r = r.clone();
            if r.watch_id == this {
                r.watch_id = first;
            }
            joined.responses.push(r);
        }
    }
    joined
}

fn streams(name: String, verdict: watch::Report, out: &mut Vec<Anomaly>) {
    for v in verdict.violations {
        out.push(Anomaly::Stream {
            stream: name.clone(),
            violation: v.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::{Event, Kv, Response, WatchSpec};

    fn put(process: u64, key: &str, value: u64, outcome: Outcome) -> Op {
        Op {
            process,
            node: 0,
            invoke: 0,
            complete: 1,
            call: Call::Write {
                key: key.into(),
                value,
            },
            outcome,
        }
    }

    fn ok(revision: i64) -> Outcome {
        Outcome::Ok {
            revision,
            result: Return::Done,
        }
    }

    /// Puts w/a=1 (rev 2), w/b=2 (rev 3), w/a=3 (rev 4).
    fn ops() -> Vec<Op> {
        vec![
            put(0, "w/a", 1, ok(2)),
            put(1, "w/b", 2, ok(3)),
            put(
                2,
                "w/a",
                3,
                Outcome::Info {
                    error: "timeout".into(),
                },
            ),
        ]
    }

    fn kv(key: &str, value: u64, create: i64, revision: i64, version: i64) -> Kv {
        Kv {
            key: key.into(),
            value: value.to_string().into_bytes(),
            create_revision: create,
            mod_revision: revision,
            version,
            lease: 0,
        }
    }

    fn events() -> Vec<Event> {
        vec![
            Event {
                kind: EventKind::Put,
                kv: kv("w/a", 1, 2, 2, 1),
                prev_kv: None,
            },
            Event {
                kind: EventKind::Put,
                kv: kv("w/b", 2, 3, 3, 1),
                prev_kv: None,
            },
            Event {
                kind: EventKind::Put,
                kv: kv("w/a", 3, 2, 4, 2),
                prev_kv: None,
            },
        ]
    }

    fn created(id: i64, revision: i64) -> Response {
        Response {
            watch_id: id,
            header_revision: revision,
            created: true,
            ..Response::default()
        }
    }

    fn deliver(id: i64, revision: i64, events: &[Event]) -> Response {
        Response {
            watch_id: id,
            header_revision: revision,
            events: events.to_vec(),
            ..Response::default()
        }
    }

    fn reference() -> Reference {
        Reference {
            stream: Stream {
                creates: vec![WatchSpec::from_key("\0").starting_at(1)],
                responses: vec![created(0, 4), deliver(0, 4, &events())],
            },
            head: 4,
        }
    }

    /// A watcher of `w/` from revision 1 whose first connection delivers
    /// events `..split` and whose second, opened at `resume`, delivers
    /// `from..`.
    fn reconnecting(split: usize, resume: i64, from: usize) -> Watcher {
        let e = events();
        let spec = WatchSpec::prefix("w/");
        Watcher {
            segments: vec![
                Segment {
                    member: 0,
                    stream: Stream {
                        creates: vec![spec.clone().starting_at(1)],
                        responses: vec![created(7, 2), deliver(7, 3, &e[..split])],
                    },
                },
                Segment {
                    member: 1,
                    stream: Stream {
                        creates: vec![spec.starting_at(resume)],
                        // Ids restart on each stream: the same id must not confuse.
                        responses: vec![created(7, 4), deliver(7, 4, &e[from..])],
                    },
                },
            ],
            caught_up: true,
        }
    }

    #[test]
    fn a_clean_reconnection_is_valid() {
        let report = check(&ops(), &reference(), &[reconnecting(2, 4, 2)]);
        assert!(report.valid(), "{:?}", report.anomalies);
        assert_eq!((report.segments, report.events), (2, 3));
    }

    #[test]
    fn a_duplicate_after_reconnecting_is_caught() {
        // The second connection resumes at 4 but gets revision 3 again.
        let report = check(&ops(), &reference(), &[reconnecting(2, 4, 1)]);
        let found: Vec<String> = report.anomalies.iter().map(|a| format!("{a:?}")).collect();
        assert!(
            found
                .iter()
                .any(|a| a.contains("stitched") && a.contains("twice")),
            "{found:?}"
        );
        assert!(found.iter().any(|a| a.contains("segment 1")), "{found:?}");
    }

    #[test]
    fn a_gap_across_a_reconnection_is_caught() {
        // The client resumed at 4 after seeing only revision 2: revision 3
        // is never delivered, though each segment alone looks fine.
        let report = check(&ops(), &reference(), &[reconnecting(1, 4, 2)]);
        let found: Vec<String> = report.anomalies.iter().map(|a| format!("{a:?}")).collect();
        assert!(
            found
                .iter()
                .any(|a| a.contains("stitched") && a.contains("skipped")),
            "{found:?}"
        );
        assert!(!found.iter().any(|a| a.contains("segment")), "{found:?}");
    }

    #[test]
    fn the_reference_must_agree_with_the_clients() {
        // An acknowledged put (w/b=2 at 3) the reference does not have, a
        // put nobody made (w/b=9), and a hole at revision 5.
        let mut bad = reference();
        bad.stream.responses[1].events[1].kv.value = b"9".to_vec();
        bad.head = 5;
        let report = check(&ops(), &bad, &[]);
        let kinds: Vec<&Anomaly> = report.anomalies.iter().collect();
        assert!(kinds
            .iter()
            .any(|a| matches!(a, Anomaly::AckedPutMissing { revision: 3, .. })));
        assert!(kinds
            .iter()
            .any(|a| matches!(a, Anomaly::Phantom { revision: 3, .. })));
        assert!(kinds
            .iter()
            .any(|a| matches!(a, Anomaly::MissingRevision { revision: 5 })));
        // A failed write that shows up is a phantom too.
        let mut failed = ops();
        failed[1].outcome = Outcome::Fail {
            error: "no leader".into(),
        };
        let report = check(&failed, &reference(), &[]);
        assert!(report
            .anomalies
            .iter()
            .any(|a| matches!(a, Anomaly::Phantom { revision: 3, .. })));
    }

    #[test]
    fn an_incomplete_watcher_that_claims_to_have_caught_up_is_caught() {
        let mut w = reconnecting(2, 4, 2);
        w.segments.pop();
        let report = check(&ops(), &reference(), &[w.clone()]);
        assert!(!report.valid());
        w.caught_up = false;
        assert!(check(&ops(), &reference(), &[w]).valid());
    }
}
