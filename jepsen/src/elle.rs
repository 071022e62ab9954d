//! A strict-serializability checker for list-append txns, after Elle
//! (Kingsbury & Alvaro): infer each key's version order from the lists the
//! reads returned, build the dependency graph between txns, and look for
//! cycles.
//!
//! # What is inferred
//! - **Version order.** Every read of a key must be a prefix of the
//!   longest read of it (else the key has no single order: an
//!   [`Anomaly::IncompatibleOrder`]); the longest read is the order of the
//!   appends seen. An element read twice in one list is a duplicate append,
//!   and an element no txn appended is garbage.
//! - **Edges** between txns (a txn is a node if it completed ok, or if it
//!   was indeterminate and one of its appends was read):
//!   - ww: the append of the i-th element precedes the append of the
//!     (i+1)-th;
//!   - wr: the append of a read list's last element precedes the read;
//!   - rw: a read of a list of i elements precedes the append of the
//!     (i+1)-th (an anti-dependency);
//!   - rev: write txns in the order of their revisions (etcd's commit
//!     order, which must agree with everything the data says). Real time
//!     is covered by [`crate::checks::revisions`]: revisions never go back
//!     across ops ordered in real time.
//! - A cycle (a strongly connected component of two or more txns) is an
//!   [`Anomaly::Cycle`], reported with one cycle through it and its edges.
//!
//! Acknowledged appends missing from the final read of their key are lost
//! writes.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;

use crate::history::{Call, Micro, Op, Outcome, Return};

/// A dependency between two txns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dep {
    /// Write then a later write of the same key.
    Ww,
    /// Write then a read that saw it.
    Wr,
    /// A read then a write it did not see.
    Rw,
    /// Commit order: revisions.
    Rev,
}

/// One anomaly of a list-append history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Anomaly {
    /// Two reads of a key that are not prefixes of one another.
    IncompatibleOrder {
        /// The key.
        key: String,
        /// The longest read.
        longest: Vec<u64>,
        /// The read that is not a prefix of it.
        read: Vec<u64>,
    },
    /// An element twice in one read.
    DuplicateAppend {
        /// The key.
        key: String,
        /// The element.
        value: u64,
    },
    /// An element no txn appended (or appended to another key).
    Garbage {
        /// The key.
        key: String,
        /// The element.
        value: u64,
    },
    /// An acknowledged append missing from the key's final read.
    LostAppend {
        /// The key.
        key: String,
        /// The element.
        value: u64,
        /// History index of the txn.
        op: usize,
    },
    /// Txns form a dependency cycle: no serial order explains them.
    Cycle {
        /// History indices of the txns around the cycle, with the edge from
        /// each to the next (the last wraps to the first).
        steps: Vec<(usize, Dep)>,
    },
}

/// What the checker found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Txns in the graph.
    pub txns: usize,
    /// Edges in the graph.
    pub edges: usize,
    /// Everything wrong.
    pub anomalies: Vec<Anomaly>,
}

impl Report {
    /// No anomaly.
    pub fn valid(&self) -> bool {
        self.anomalies.is_empty()
    }
}

/// Checks the txns of `history`; `at_end` is each key's list as the final
/// reads saw it (None: not read at the end, so lost appends go unchecked).
pub fn check(history: &[Op], at_end: Option<&BTreeMap<String, Vec<u64>>>) -> Report {
    let mut report = Report::default();
    // Who appended what: (key, value) -> history index.
    let mut appender: HashMap<(&str, u64), usize> = HashMap::new();
    // Reads by ok txns: (op, key, list).
    let mut reads: Vec<(usize, &str, &[u64])> = Vec::new();
    for (i, op) in history.iter().enumerate() {
        let Call::Txn { ops } = &op.call else {
            continue;
        };
        if matches!(op.outcome, Outcome::Fail { .. }) {
            continue;
        }
        for m in ops {
            if let Micro::Append { key, value } = m {
                appender.insert((key, *value), i);
            }
        }
        if let Outcome::Ok {
            result: Return::Txn { ops },
            ..
        } = &op.outcome
        {
            for m in ops {
                if let Micro::Read {
                    key,
                    value: Some(list),
                } = m
                {
                    reads.push((i, key, list));
                }
            }
        }
    }
    // Version orders.
    let mut longest: BTreeMap<&str, &[u64]> = BTreeMap::new();
    for &(_, key, list) in &reads {
        let l = longest.entry(key).or_insert(list);
        if list.len() > l.len() {
            *l = list;
        }
    }
    if let Some(end) = at_end {
        for (key, list) in end {
            let l = longest.entry(key).or_insert(list);
            if list.len() > l.len() {
                *l = list;
            }
        }
    }
    let finals = at_end
        .into_iter()
        .flatten()
        .map(|(k, l)| (k.as_str(), l.as_slice()));
    for (key, list) in reads.iter().map(|&(_, k, l)| (k, l)).chain(finals) {
        let l = longest[key];
        if !l.starts_with(list) {
            report.anomalies.push(Anomaly::IncompatibleOrder {
                key: key.to_owned(),
                longest: l.to_vec(),
                read: list.to_vec(),
            });
        }
    }
    report.anomalies.dedup();
    for (&key, list) in &longest {
        let mut seen = std::collections::HashSet::new();
        for &v in *list {
            if !seen.insert(v) {
                report.anomalies.push(Anomaly::DuplicateAppend {
                    key: key.to_owned(),
                    value: v,
                });
            }
            if !appender.contains_key(&(key, v)) {
                report.anomalies.push(Anomaly::Garbage {
                    key: key.to_owned(),
                    value: v,
                });
            }
        }
    }
    // Lost appends.
    if let Some(end) = at_end {
        for (&(key, value), &i) in &appender {
            if history[i].is_ok() && !end.get(key).is_some_and(|l| l.contains(&value)) {
                report.anomalies.push(Anomaly::LostAppend {
                    key: key.to_owned(),
                    value,
                    op: i,
                });
            }
        }
    }

    // The graph. Nodes: ok txns, and indeterminate ones whose appends were
    // read.
    let mut edges: BTreeMap<usize, Vec<(usize, Dep)>> = BTreeMap::new();
    let mut add = |from: usize, to: usize, dep: Dep| {
        if from != to {
            edges.entry(from).or_default().push((to, dep));
        }
    };
    for (&key, list) in &longest {
        let writers: Vec<Option<usize>> = list
            .iter()
            .map(|&v| appender.get(&(key, v)).copied())
            .collect();
        for w in writers.windows(2) {
            if let [Some(a), Some(b)] = w {
                add(*a, *b, Dep::Ww);
            }
        }
        for &(reader, k, read) in &reads {
            if k != key {
                continue;
            }
            if let Some(Some(w)) = read.last().map(|&v| appender.get(&(key, v)).copied()) {
                add(w, reader, Dep::Wr);
            }
            if let Some(Some(next)) = writers.get(read.len()) {
                add(reader, *next, Dep::Rw);
            }
        }
    }
    let mut committed: Vec<(i64, usize)> = history
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op.call, Call::Txn { .. }) && op.call.writes())
        .filter_map(|(i, op)| op.revision().map(|r| (r, i)))
        .collect();
    committed.sort_unstable();
    for w in committed.windows(2) {
        add(w[0].1, w[1].1, Dep::Rev);
    }
    report.txns = history
        .iter()
        .filter(|op| matches!(op.call, Call::Txn { .. }) && op.is_ok())
        .count();
    report.edges = edges.values().map(Vec::len).sum();
    for scc in components(&edges) {
        if let Some(steps) = cycle_in(&scc, &edges) {
            report.anomalies.push(Anomaly::Cycle { steps });
        }
    }
    report
}

/// Strongly connected components of two or more nodes (Tarjan, iterative).
fn components(edges: &BTreeMap<usize, Vec<(usize, Dep)>>) -> Vec<Vec<usize>> {
    let mut index: HashMap<usize, (usize, usize)> = HashMap::new(); // node -> (index, lowlink)
    let mut on_stack = std::collections::HashSet::new();
    let mut stack = Vec::new();
    let mut out = Vec::new();
    let mut next = 0;
    let empty = Vec::new();
    for &root in edges.keys() {
        if index.contains_key(&root) {
            continue;
        }
        // (node, position in its edge list)
        let mut work = vec![(root, 0usize)];
        index.insert(root, (next, next));
        next += 1;
        stack.push(root);
        on_stack.insert(root);
        while let Some(&mut (v, ref mut pos)) = work.last_mut() {
            let succ = edges.get(&v).unwrap_or(&empty);
            if *pos < succ.len() {
                let w = succ[*pos].0;
                *pos += 1;
                if let Some(&(wi, _)) = index.get(&w) {
                    if on_stack.contains(&w) {
                        let e = index.get_mut(&v).expect("visited");
                        e.1 = e.1.min(wi);
                    }
                } else {
                    index.insert(w, (next, next));
                    next += 1;
                    stack.push(w);
                    on_stack.insert(w);
                    work.push((w, 0));
                }
            } else {
                work.pop();
                let (vi, vl) = index[&v];
                if let Some(&(parent, _)) = work.last() {
                    let p = index.get_mut(&parent).expect("visited");
                    p.1 = p.1.min(vl);
                }
                if vi == vl {
                    let mut scc = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack.remove(&w);
                        scc.push(w);
                        if w == v {
                            break;
                        }
                    }
                    if scc.len() > 1 {
                        out.push(scc);
                    }
                }
            }
        }
    }
    out
}

/// One cycle through the component, by BFS from its first node back to it.
fn cycle_in(
    scc: &[usize],
    edges: &BTreeMap<usize, Vec<(usize, Dep)>>,
) -> Option<Vec<(usize, Dep)>> {
    let members: std::collections::HashSet<usize> = scc.iter().copied().collect();
    let start = *scc.iter().min()?;
    let mut parent: HashMap<usize, (usize, Dep)> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &(w, dep) in edges.get(&v).into_iter().flatten() {
            if !members.contains(&w) {
                continue;
            }
            if w == start {
                let mut steps = vec![(v, dep)];
                let mut at = v;
                while at != start {
                    let (p, d) = parent[&at];
                    steps.push((p, d));
                    at = p;
                }
                steps.reverse();
                return Some(steps);
            }
            if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(w) {
                e.insert((v, dep));
                queue.push_back(w);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(t: (u64, u64), revision: i64, ops: Vec<Micro>) -> Op {
        Op {
            process: 0,
            node: 0,
            invoke: t.0,
            complete: t.1,
            call: Call::Txn {
                ops: ops
                    .iter()
                    .map(|m| match m {
                        Micro::Read { key, .. } => Micro::Read {
                            key: key.clone(),
                            value: None,
                        },
                        m => m.clone(),
                    })
                    .collect(),
            },
            outcome: Outcome::Ok {
                revision,
                result: Return::Txn { ops },
            },
        }
    }
    fn r(key: &str, list: &[u64]) -> Micro {
        Micro::Read {
            key: key.into(),
            value: Some(list.to_vec()),
        }
    }
    fn a(key: &str, value: u64) -> Micro {
        Micro::Append {
            key: key.into(),
            value,
        }
    }

    #[test]
    fn serial_history_is_valid() {
        let h = vec![
            txn((0, 1), 2, vec![a("x", 1)]),
            txn((2, 3), 3, vec![r("x", &[1]), a("x", 2), a("y", 3)]),
            txn((4, 5), 3, vec![r("x", &[1, 2]), r("y", &[3])]),
        ];
        let end = BTreeMap::from([("x".to_owned(), vec![1, 2]), ("y".to_owned(), vec![3])]);
        let report = check(&h, Some(&end));
        assert!(report.valid(), "{report:?}");
        assert!(report.edges > 0);
    }

    #[test]
    fn rejects_bad_histories() {
        type Case = (&'static str, Vec<Op>, fn(&Anomaly) -> bool);
        let cases: Vec<Case> = vec![
            (
                "write skew: each reads the other's key empty, then appends",
                vec![
                    txn((0, 5), 2, vec![r("x", &[]), a("y", 1)]),
                    txn((0, 5), 3, vec![r("y", &[]), a("x", 2)]),
                    txn((6, 7), 3, vec![r("x", &[2]), r("y", &[1])]),
                ],
                |a| matches!(a, Anomaly::Cycle { .. }),
            ),
            (
                "stale read against revision order",
                vec![
                    txn((0, 1), 2, vec![a("x", 1)]),
                    txn((2, 3), 3, vec![a("x", 2)]),
                    // Revision 4 comes after 3, yet reads x without 2.
                    txn((4, 5), 4, vec![r("x", &[1]), a("y", 9)]),
                    txn((6, 7), 4, vec![r("x", &[1, 2])]),
                ],
                |a| matches!(a, Anomaly::Cycle { .. }),
            ),
            (
                "incompatible orders",
                vec![
                    txn((0, 1), 2, vec![a("x", 1)]),
                    txn((0, 1), 3, vec![a("x", 2)]),
                    txn((2, 3), 3, vec![r("x", &[1, 2])]),
                    txn((2, 3), 3, vec![r("x", &[2, 1])]),
                ],
                |a| matches!(a, Anomaly::IncompatibleOrder { .. }),
            ),
            (
                "duplicate append",
                vec![
                    txn((0, 1), 2, vec![a("x", 1)]),
                    txn((2, 3), 2, vec![r("x", &[1, 1])]),
                ],
                |a| matches!(a, Anomaly::DuplicateAppend { .. }),
            ),
            ("garbage", vec![txn((2, 3), 2, vec![r("x", &[7])])], |a| {
                matches!(a, Anomaly::Garbage { .. })
            }),
        ];
        for (name, h, expected) in cases {
            let report = check(&h, None);
            assert!(report.anomalies.iter().any(expected), "{name}: {report:?}");
        }
    }

    #[test]
    fn lost_append_is_caught() {
        let h = vec![
            txn((0, 1), 2, vec![a("x", 1)]),
            txn((2, 3), 3, vec![a("x", 2)]),
        ];
        let end = BTreeMap::from([("x".to_owned(), vec![1])]);
        let report = check(&h, Some(&end));
        assert!(
            matches!(
                &report.anomalies[..],
                [Anomaly::LostAppend { value: 2, .. }]
            ),
            "{report:?}"
        );
    }
}
