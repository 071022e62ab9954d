//! A linearizability checker for registers: the WGL search (Wing & Gong,
//! with Lowe's memoisation, as in Porcupine), written for this crate.
//!
//! The history is split by key first (a register per key is independent of
//! the others, so each key's sub-history is linearizable on its own or the
//! whole is not), then each key is searched separately.
//!
//! # The search
//! Every op becomes a call entry at its invocation and a return entry at its
//! completion, in one list sorted by time. Walking the list, a call entry
//! may be *linearized* (moved to the current point) if the model accepts it
//! from the current state; a return entry reached while its op is still not
//! linearized means the choices so far were wrong, so the search backtracks.
//! A set of (linearized ops, state) pairs already explored prunes repeats.
//!
//! Indeterminate ops ([`crate::history::Outcome::Info`]) return at infinity:
//! they may be linearized anywhere after their invocation, and the ones that
//! never took effect are linearized after everything else, where they change
//! nothing anybody saw. Their output is unknown, so the model accepts any.
//! Indeterminate reads change nothing and are dropped; failed ops are
//! dropped.
//!
//! # Register model
//! The state is the key's value, None when absent. Values are unique in a
//! run, so the CAS's compare on mod_revision is a compare on the value read
//! together with that mod_revision.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::history::{Call, Op, Outcome, Return};

/// How many search steps one key may take before the checker gives up and
/// calls the key unknown: a history with many concurrent indeterminate
/// writes can make the search exponential.
pub const STEP_LIMIT: u64 = 5_000_000;

/// A register op as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RegOp {
    Read(Option<u64>),
    Write(u64),
    /// expect, new value, outcome (None: unknown).
    Cas(Option<u64>, u64, Option<bool>),
}

/// The register's state: the value, None when absent.
type State = Option<u64>;

/// The model: the state after `op` from `state`, or None if `op` cannot
/// happen there.
fn step(state: State, op: RegOp) -> Option<State> {
    match op {
        RegOp::Read(v) => (v == state).then_some(state),
        RegOp::Write(v) => Some(Some(v)),
        RegOp::Cas(expect, v, Some(true)) => (state == expect).then_some(Some(v)),
        RegOp::Cas(expect, _, Some(false)) => (state != expect).then_some(state),
        RegOp::Cas(expect, v, None) => Some(if state == expect { Some(v) } else { state }),
    }
}

/// One op of a key's sub-history.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Index of the op in the full history.
    index: usize,
    invoke: u64,
    /// None: indeterminate, returns at infinity.
    complete: Option<u64>,
    op: RegOp,
}

/// The verdict for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// A linearization exists.
    Linearizable,
    /// None exists.
    Anomaly {
        /// History indices of the ops in the longest linearizable prefix
        /// found, in linearization order (the last few, for the report).
        prefix_tail: Vec<usize>,
        /// The op whose completion no linearization could reach with the op
        /// placed before it: the first op that could not be explained.
        stuck: usize,
        /// Values the register could hold where `stuck` had to take effect.
        states: Vec<Option<u64>>,
    },
    /// The search hit [`STEP_LIMIT`].
    Unknown,
}

/// The result for every key.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Keys checked.
    pub keys: usize,
    /// Ops checked (ok and indeterminate, reads and writes).
    pub ops: usize,
    /// Keys with no linearization, with the verdict.
    pub anomalies: BTreeMap<String, Verdict>,
    /// Keys the search gave up on.
    pub unknown: Vec<String>,
}

impl Report {
    /// No anomaly was found (unknown keys are not anomalies).
    pub fn valid(&self) -> bool {
        self.anomalies.is_empty()
    }
}

/// Checks every register key of `history` (reads, writes and CASes).
pub fn check(history: &[Op]) -> Report {
    let mut by_key: BTreeMap<&str, Vec<Entry>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        let Some(entry) = entry(index, op) else {
            continue;
        };
        let key = op
            .call
            .key()
            .expect("invariant: register calls have one key");
        by_key.entry(key).or_default().push(entry);
    }
    let mut report = Report::default();
    for (key, entries) in by_key {
        report.keys += 1;
        report.ops += entries.len();
        match search(&entries) {
            Verdict::Linearizable => {}
            Verdict::Unknown => report.unknown.push(key.to_owned()),
            anomaly => {
                report.anomalies.insert(key.to_owned(), anomaly);
            }
        }
    }
    report
}

/// The model's view of `op`, or None if it does not take part (failed, an
/// indeterminate read, not a register op).
fn entry(index: usize, op: &Op) -> Option<Entry> {
    let (complete, result) = match &op.outcome {
        Outcome::Ok { result, .. } => (Some(op.complete), Some(result)),
        Outcome::Info { .. } => (None, None),
        Outcome::Fail { .. } => return None,
    };
    let reg = match (&op.call, result) {
        (Call::Read { .. }, Some(Return::Read { value })) => RegOp::Read(value.map(|(v, _)| v)),
        (Call::Read { .. }, _) => return None,
        (Call::Write { value, .. }, _) => RegOp::Write(*value),
        (Call::Cas { expect, value, .. }, Some(Return::Cas { succeeded })) => {
            RegOp::Cas(*expect, *value, Some(*succeeded))
        }
        (Call::Cas { expect, value, .. }, _) => RegOp::Cas(*expect, *value, None),
        (Call::Txn { .. }, _) => return None,
    };
    Some(Entry {
        index,
        invoke: op.invoke,
        complete,
        op: reg,
    })
}

/// A node of the doubly linked list of call and return entries.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// The op (index into the key's entries).
    op: usize,
    is_call: bool,
    /// For a call: the node of its return.
    matching: usize,
    prev: usize,
    next: usize,
}

const NIL: usize = usize::MAX;

/// WGL over one key's entries.
fn search(entries: &[Entry]) -> Verdict {
    // Events sorted by time; at equal times calls come first, so that ops
    // touching in time count as concurrent (the lenient reading).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(entries.len() * 2);
    for (i, e) in entries.iter().enumerate() {
        events.push((e.invoke, false, i));
        events.push((e.complete.unwrap_or(u64::MAX), true, i));
    }
    events.sort_by_key(|&(t, is_return, i)| (t, is_return, i));
    // Node 0 is the head sentinel; event k is node k + 1.
    let mut nodes = vec![Node {
        op: NIL,
        is_call: false,
        matching: NIL,
        prev: NIL,
        next: 1,
    }];
    let mut return_node = vec![NIL; entries.len()];
    for (k, &(_, is_return, i)) in events.iter().enumerate() {
        let id = k + 1;
        nodes.push(Node {
            op: i,
            is_call: !is_return,
            matching: NIL,
            prev: k,
            next: if k + 1 < events.len() { id + 1 } else { NIL },
        });
        if is_return {
            return_node[i] = id;
        }
    }
    if events.is_empty() {
        return Verdict::Linearizable;
    }
    for node in nodes.iter_mut().skip(1) {
        if node.is_call {
            node.matching = return_node[node.op];
        }
    }

    let words = entries.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    // (call node, state before it)
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state: State = None;
    let mut cursor = nodes[0].next;
    let mut steps = 0u64;
    // The deepest point reached, for the report.
    let mut best: (usize, Vec<usize>, usize, Vec<State>) = (0, Vec::new(), NIL, Vec::new());

    let lift = |nodes: &mut Vec<Node>, n: usize| {
        for id in [n, nodes[n].matching] {
            let (p, q) = (nodes[id].prev, nodes[id].next);
            nodes[p].next = q;
            if q != NIL {
                nodes[q].prev = p;
            }
        }
    };
    let unlift = |nodes: &mut Vec<Node>, n: usize| {
        for id in [nodes[n].matching, n] {
            let (p, q) = (nodes[id].prev, nodes[id].next);
            nodes[p].next = id;
            if q != NIL {
                nodes[q].prev = id;
            }
        }
    };

    while nodes[0].next != NIL {
        steps += 1;
        if steps > STEP_LIMIT {
            return Verdict::Unknown;
        }
        if cursor == NIL {
            // Only possible after every return was passed, which lifts all.
            break;
        }
        let node = nodes[cursor];
        if node.is_call {
            let op = node.op;
            if let Some(next) = step(state, entries[op].op) {
                let mut with = linearized.clone();
                with[op / 64] |= 1 << (op % 64);
                if cache.insert((with.clone(), next)) {
                    stack.push((cursor, state));
                    state = next;
                    linearized = with;
                    lift(&mut nodes, cursor);
                    cursor = nodes[0].next;
                    continue;
                }
            }
            cursor = node.next;
        } else {
            // A return whose op is not linearized yet: backtrack.
            if best.2 == NIL || stack.len() > best.0 {
                let prefix: Vec<usize> = stack
                    .iter()
                    .map(|&(n, _)| entries[nodes[n].op].index)
                    .collect();
                let tail = prefix[prefix.len().saturating_sub(8)..].to_vec();
                best = (stack.len(), tail, entries[node.op].index, vec![state]);
            } else if stack.len() == best.0
                && best.2 == entries[node.op].index
                && !best.3.contains(&state)
            {
                best.3.push(state);
            }
            let Some((call, before)) = stack.pop() else {
                let (_, prefix_tail, stuck, states) = best;
                return Verdict::Anomaly {
                    prefix_tail,
                    stuck,
                    states,
                };
            };
            let op = nodes[call].op;
            linearized[op / 64] &= !(1 << (op % 64));
            state = before;
            unlift(&mut nodes, call);
            cursor = nodes[call].next;
        }
    }
    Verdict::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Call, Op, Outcome, Return};

    fn op(invoke: u64, complete: u64, call: Call, outcome: Outcome) -> Op {
        Op {
            process: 0,
            node: 0,
            invoke,
            complete,
            call,
            outcome,
        }
    }
    fn write(t: (u64, u64), v: u64) -> Op {
        op(
            t.0,
            t.1,
            Call::Write {
                key: "k".into(),
                value: v,
            },
            Outcome::Ok {
                revision: 0,
                result: Return::Done,
            },
        )
    }
    fn write_info(t: (u64, u64), v: u64) -> Op {
        op(
            t.0,
            t.1,
            Call::Write {
                key: "k".into(),
                value: v,
            },
            Outcome::Info {
                error: "timeout".into(),
            },
        )
    }
    fn read(t: (u64, u64), v: Option<u64>) -> Op {
        op(
            t.0,
            t.1,
            Call::Read { key: "k".into() },
            Outcome::Ok {
                revision: 0,
                result: Return::Read {
                    value: v.map(|v| (v, 0)),
                },
            },
        )
    }
    fn cas(t: (u64, u64), expect: Option<u64>, v: u64, ok: Option<bool>) -> Op {
        op(
            t.0,
            t.1,
            Call::Cas {
                key: "k".into(),
                expect,
                expect_revision: 0,
                value: v,
            },
            match ok {
                Some(succeeded) => Outcome::Ok {
                    revision: 0,
                    result: Return::Cas { succeeded },
                },
                None => Outcome::Info {
                    error: "timeout".into(),
                },
            },
        )
    }

    /// (name, history, linearizable?)
    fn cases() -> Vec<(&'static str, Vec<Op>, bool)> {
        vec![
            ("empty read", vec![read((0, 1), None)], true),
            (
                "read of nothing written",
                vec![read((0, 1), Some(1))],
                false,
            ),
            (
                "sequential write then read",
                vec![write((0, 1), 1), read((2, 3), Some(1))],
                true,
            ),
            (
                "stale read: the write completed before the read began",
                vec![write((0, 1), 1), write((2, 3), 2), read((4, 5), Some(1))],
                false,
            ),
            (
                "concurrent read may see either",
                vec![write((0, 1), 1), write((2, 6), 2), read((3, 4), Some(1))],
                true,
            ),
            (
                "lost write: a later read sees the value before it",
                vec![
                    write((0, 1), 1),
                    write((2, 3), 2),
                    read((4, 5), Some(2)),
                    read((6, 7), Some(1)),
                ],
                false,
            ),
            (
                "acknowledged write lost: reads see nothing",
                vec![write((0, 1), 1), read((2, 3), None)],
                false,
            ),
            (
                "indeterminate write may take effect late",
                vec![
                    write_info((0, 1), 1),
                    read((2, 3), None),
                    read((10, 11), Some(1)),
                ],
                true,
            ),
            (
                "indeterminate write may never take effect",
                vec![write_info((0, 1), 1), read((2, 3), None)],
                true,
            ),
            (
                "indeterminate write cannot take effect before its invocation",
                vec![read((0, 1), Some(1)), write_info((2, 3), 1)],
                false,
            ),
            (
                "once seen, an indeterminate write cannot vanish",
                vec![
                    write((0, 1), 1),
                    write_info((2, 3), 2),
                    read((4, 5), Some(2)),
                    read((6, 7), Some(1)),
                ],
                false,
            ),
            (
                "cas succeeds on the expected value",
                vec![
                    write((0, 1), 1),
                    cas((2, 3), Some(1), 2, Some(true)),
                    read((4, 5), Some(2)),
                ],
                true,
            ),
            (
                "cas cannot succeed on the wrong value",
                vec![write((0, 1), 1), cas((2, 3), Some(5), 2, Some(true))],
                false,
            ),
            (
                "cas cannot fail on the expected value",
                vec![write((0, 1), 1), cas((2, 3), Some(1), 2, Some(false))],
                false,
            ),
            (
                "two cas from the same value cannot both succeed",
                vec![
                    write((0, 1), 1),
                    cas((2, 5), Some(1), 2, Some(true)),
                    cas((3, 6), Some(1), 3, Some(true)),
                ],
                false,
            ),
            (
                "indeterminate cas may have applied",
                vec![
                    write((0, 1), 1),
                    cas((2, 3), Some(1), 2, None),
                    read((4, 5), Some(2)),
                ],
                true,
            ),
        ]
    }

    #[test]
    fn verdicts() {
        for (name, history, valid) in cases() {
            let report = check(&history);
            assert_eq!(report.valid(), valid, "{name}: {report:?}");
            assert!(report.unknown.is_empty(), "{name}");
        }
    }

    #[test]
    fn keys_are_independent() {
        let mut history = vec![write((0, 1), 1), read((2, 3), Some(1))];
        let mut other = read((0, 1), Some(1));
        other.call = Call::Read { key: "j".into() };
        history.push(other);
        let report = check(&history);
        assert_eq!(report.keys, 2);
        assert_eq!(report.anomalies.keys().collect::<Vec<_>>(), vec!["j"]);
    }

    #[test]
    fn anomaly_names_the_stuck_op() {
        let history = vec![write((0, 1), 1), write((2, 3), 2), read((4, 5), Some(1))];
        let report = check(&history);
        let Some(Verdict::Anomaly { stuck, .. }) = report.anomalies.get("k") else {
            panic!("{report:?}");
        };
        assert_eq!(*stuck, 2);
    }

    #[test]
    fn many_concurrent_ops_finish() {
        // 8 concurrent writers, each followed by a read of its own value,
        // 50 rounds: linearizable, and the search must not blow up.
        let mut history = Vec::new();
        let mut v = 0;
        for round in 0..50u64 {
            let t = round * 100;
            for w in 0..8u64 {
                v += 1;
                history.push(write((t + w, t + 50 + w), v));
            }
            history.push(read((t + 60, t + 61), Some(v)));
        }
        let report = check(&history);
        assert!(report.valid() && report.unknown.is_empty(), "{report:?}");
    }
}
