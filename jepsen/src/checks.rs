//! Checks over the whole history, beside the per-key searches: writes lost
//! after recovery, revisions going backwards, and one value with two
//! revisions.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::history::{Call, Op, Outcome, Return};

/// A key's value and mod_revision as one member's final read saw it.
pub type Final = BTreeMap<String, Option<(u64, i64)>>;

/// One broken global guarantee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Anomaly {
    /// An acknowledged write's revision is above the key's final
    /// mod_revision: the write was lost.
    LostWrite {
        /// The key.
        key: String,
        /// The history index of the acknowledged write.
        op: usize,
        /// Its revision.
        revision: i64,
        /// The key's value and mod_revision at the end.
        at_end: Option<(u64, i64)>,
    },
    /// The final state holds a value no write wrote.
    PhantomValue {
        /// The key.
        key: String,
        /// The value.
        value: u64,
    },
    /// A client saw a lower revision after a higher one.
    RevisionBackwards {
        /// The process.
        process: u64,
        /// History index of the earlier op.
        earlier: usize,
        /// Its header revision.
        earlier_revision: i64,
        /// History index of the later op.
        later: usize,
        /// Its header revision.
        later_revision: i64,
    },
    /// An op invoked after another completed answered with a lower header
    /// revision (real-time order, across clients).
    RevisionBackwardsRealTime {
        /// History index of the op that completed first.
        earlier: usize,
        /// Its header revision.
        earlier_revision: i64,
        /// History index of the op invoked after it.
        later: usize,
        /// Its header revision.
        later_revision: i64,
    },
    /// One value seen with two mod_revisions (each value is written once,
    /// so it has one).
    TwoRevisions {
        /// The key.
        key: String,
        /// The value.
        value: u64,
        /// The revisions.
        revisions: (i64, i64),
    },
}

/// Every acknowledged write is in the final state: its revision is at most
/// the key's final mod_revision (writes to one key are ordered by
/// revision), and the final value was written by somebody.
pub fn lost_writes(history: &[Op], at_end: &Final) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    let mut written: HashMap<&str, Vec<u64>> = HashMap::new();
    let mut latest: HashMap<&str, (i64, usize)> = HashMap::new();
    for (i, op) in history.iter().enumerate() {
        let (key, value) = match &op.call {
            Call::Write { key, value } | Call::Cas { key, value, .. } => (key.as_str(), *value),
            _ => continue,
        };
        if matches!(op.outcome, Outcome::Fail { .. }) {
            continue;
        }
        written.entry(key).or_default().push(value);
        let acknowledged = match &op.outcome {
            Outcome::Ok {
                result: Return::Cas { succeeded },
                ..
            } => *succeeded,
            Outcome::Ok { .. } => true,
            _ => false,
        };
        if let (true, Some(revision)) = (acknowledged, op.revision()) {
            let entry = latest.entry(key).or_insert((revision, i));
            if revision > entry.0 {
                *entry = (revision, i);
            }
        }
    }
    for (key, &(revision, op)) in &latest {
        let end = at_end.get(*key).copied().flatten();
        if end.is_none_or(|(_, mod_revision)| mod_revision < revision) {
            anomalies.push(Anomaly::LostWrite {
                key: (*key).to_owned(),
                op,
                revision,
                at_end: end,
            });
        }
    }
    for (key, end) in at_end {
        if let Some((value, _)) = end {
            let known = written
                .get(key.as_str())
                .is_some_and(|vs| vs.contains(value));
            if !known {
                anomalies.push(Anomaly::PhantomValue {
                    key: key.clone(),
                    value: *value,
                });
            }
        }
    }
    anomalies.sort_by_key(|a| format!("{a:?}"));
    anomalies
}

/// Header revisions never go backwards: for each process in its own order,
/// and for any two ops where one completed before the other was invoked.
pub fn revisions(history: &[Op]) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    let mut last: HashMap<u64, (usize, i64)> = HashMap::new();
    let mut order: Vec<usize> = (0..history.len()).collect();
    order.sort_by_key(|&i| history[i].invoke);
    for &i in &order {
        let op = &history[i];
        let Some(revision) = op.revision() else {
            continue;
        };
        if let Some(&(earlier, earlier_revision)) = last.get(&op.process) {
            if revision < earlier_revision {
                anomalies.push(Anomaly::RevisionBackwards {
                    process: op.process,
                    earlier,
                    earlier_revision,
                    later: i,
                    later_revision: revision,
                });
            }
        }
        last.insert(op.process, (i, revision));
    }
    // Real time: sweep invocations in order, keeping the highest revision
    // among the ops completed before each.
    let mut completed: Vec<usize> = (0..history.len()).filter(|&i| history[i].is_ok()).collect();
    completed.sort_by_key(|&i| history[i].complete);
    let mut next = 0;
    let mut highest: Option<(usize, i64)> = None;
    for &i in &order {
        while next < completed.len() && history[completed[next]].complete < history[i].invoke {
            let j = completed[next];
            let r = history[j]
                .revision()
                .expect("invariant: ok ops have a revision");
            if highest.is_none_or(|(_, h)| r > h) {
                highest = Some((j, r));
            }
            next += 1;
        }
        let (Some(revision), Some((earlier, earlier_revision))) = (history[i].revision(), highest)
        else {
            continue;
        };
        if revision < earlier_revision {
            anomalies.push(Anomaly::RevisionBackwardsRealTime {
                earlier,
                earlier_revision,
                later: i,
                later_revision: revision,
            });
        }
    }
    anomalies
}

/// Each value has one mod_revision: whatever reads saw it with, and what
/// the write that made it was acknowledged with.
pub fn value_revisions(history: &[Op]) -> Vec<Anomaly> {
    let mut seen: HashMap<(&str, u64), i64> = HashMap::new();
    let mut anomalies = Vec::new();
    for op in history {
        let (key, value, revision) = match (&op.call, &op.outcome) {
            (
                Call::Read { key },
                Outcome::Ok {
                    result:
                        Return::Read {
                            value: Some((value, mod_revision)),
                        },
                    ..
                },
            ) => (key.as_str(), *value, *mod_revision),
            (Call::Write { key, value }, Outcome::Ok { revision, .. }) => {
                (key.as_str(), *value, *revision)
            }
            (
                Call::Cas { key, value, .. },
                Outcome::Ok {
                    revision,
                    result: Return::Cas { succeeded: true },
                },
            ) => (key.as_str(), *value, *revision),
            _ => continue,
        };
        let first = *seen.entry((key, value)).or_insert(revision);
        if first != revision {
            anomalies.push(Anomaly::TwoRevisions {
                key: key.to_owned(),
                value,
                revisions: (first, revision),
            });
        }
    }
    anomalies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(process: u64, t: (u64, u64), call: Call, outcome: Outcome) -> Op {
        Op {
            process,
            node: 0,
            invoke: t.0,
            complete: t.1,
            call,
            outcome,
        }
    }
    fn put(t: (u64, u64), value: u64, revision: i64) -> Op {
        op(
            0,
            t,
            Call::Write {
                key: "k".into(),
                value,
            },
            Outcome::Ok {
                revision,
                result: Return::Done,
            },
        )
    }
    fn get(process: u64, t: (u64, u64), revision: i64) -> Op {
        op(
            process,
            t,
            Call::Read { key: "k".into() },
            Outcome::Ok {
                revision,
                result: Return::Read { value: None },
            },
        )
    }

    #[test]
    fn lost_write_is_caught() {
        let history = vec![put((0, 1), 1, 2), put((2, 3), 2, 3)];
        let mut end = Final::new();
        end.insert("k".into(), Some((1, 2)));
        let found = lost_writes(&history, &end);
        assert!(
            matches!(&found[..], [Anomaly::LostWrite { revision: 3, .. }]),
            "{found:?}"
        );
        end.insert("k".into(), Some((2, 3)));
        assert_eq!(lost_writes(&history, &end), vec![]);
        end.insert("k".into(), None);
        assert_eq!(lost_writes(&history, &end).len(), 1);
        end.insert("k".into(), Some((9, 3)));
        assert!(matches!(
            &lost_writes(&history, &end)[..],
            [Anomaly::PhantomValue { value: 9, .. }]
        ));
    }

    #[test]
    fn backwards_revisions_are_caught() {
        // Per process.
        let history = vec![get(1, (0, 1), 5), get(1, (2, 3), 4)];
        let found = revisions(&history);
        assert!(found
            .iter()
            .any(|a| matches!(a, Anomaly::RevisionBackwards { process: 1, .. })));
        // Across processes, in real time.
        let history = vec![get(1, (0, 1), 5), get(2, (2, 3), 4)];
        assert!(matches!(
            &revisions(&history)[..],
            [Anomaly::RevisionBackwardsRealTime { later: 1, .. }]
        ));
        // Concurrent ops may answer in any order.
        let history = vec![get(1, (0, 3), 5), get(2, (1, 4), 4)];
        assert_eq!(revisions(&history), vec![]);
    }

    #[test]
    fn one_value_two_revisions_is_caught() {
        let mut read = get(1, (2, 3), 9);
        read.outcome = Outcome::Ok {
            revision: 9,
            result: Return::Read {
                value: Some((1, 4)),
            },
        };
        let history = vec![put((0, 1), 1, 2), read];
        assert!(matches!(
            &value_revisions(&history)[..],
            [Anomaly::TwoRevisions {
                revisions: (2, 4),
                ..
            }]
        ));
    }
}
