//! The lock workload's checker: mutual exclusion, with fencing by revision.
//!
//! etcd's lock (v3lockpb) puts a key `<name>/<lease>` under the caller's
//! lease and grants the lock to the live key with the smallest
//! create_revision. So while a holder's key exists, it holds the lock, and
//! its create_revision is its fencing token. A [`Hold`] is one successful
//! Lock call, then linearizable reads of the returned key:
//!
//! - the first read after the Lock response gives the key's
//!   create_revision (the token) and confirms the hold at its invocation;
//! - the last read that still sees the key with that create_revision
//!   confirms the hold up to its invocation.
//!
//! The holder certainly held the lock over `[acquired, confirmed]`: from
//! the Lock response's completion (the grant happened before it) to the
//! last confirming read's invocation (the read saw the key after it). A
//! hold whose key was already gone at the first read proves nothing and is
//! only counted.
//!
//! **Mutual exclusion**: no two holds' confirmed intervals overlap.
//! **Fencing**: in the order of their Lock responses, the tokens of
//! confirmed holds strictly increase. A later response with a smaller token
//! means that key was alive, and older, when the earlier holder got the
//! lock, which it then should not have got; this catches double grants
//! that real-time intervals alone cannot (a slow response).

use serde::{Deserialize, Serialize};

/// One successful Lock call and what the holder's reads confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The worker.
    pub process: u64,
    /// The member the Lock went to.
    pub node: usize,
    /// The lock key the server returned.
    pub key: String,
    /// The session's lease.
    pub lease: i64,
    /// Nanoseconds from the start: the Lock call's invocation.
    pub invoked: u64,
    /// The Lock call's completion.
    pub acquired: u64,
    /// The key's create_revision, read after acquiring; None if the key was
    /// gone (the lease expired) or the read failed.
    pub token: Option<i64>,
    /// The invocation of the last read that saw the key with `token`.
    pub confirmed: Option<u64>,
}

/// Something wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Anomaly {
    /// Two holders held the lock at the same time (indices into the holds).
    HeldTwice {
        /// The hold that began first.
        first: usize,
        /// The one that began while `first` was confirmed.
        second: usize,
    },
    /// A later holder's token is not above an earlier one's.
    TokenNotIncreasing {
        /// The earlier hold.
        earlier: usize,
        /// The later hold.
        later: usize,
    },
}

/// What the check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Successful Lock calls.
    pub holds: usize,
    /// Holds confirmed by a read of their key.
    pub confirmed: usize,
    /// Everything wrong.
    pub anomalies: Vec<Anomaly>,
}

impl Report {
    /// No anomaly.
    pub fn valid(&self) -> bool {
        self.anomalies.is_empty()
    }
}

/// Checks `holds`.
pub fn check(holds: &[Hold]) -> Report {
    let mut report = Report {
        holds: holds.len(),
        ..Report::default()
    };
    // Confirmed holds, in the order of their Lock responses.
    let mut order: Vec<(usize, u64, u64, i64)> = holds
        .iter()
        .enumerate()
        .filter_map(|(i, h)| Some((i, h.acquired, h.confirmed?, h.token?)))
        .collect();
    order.sort_by_key(|&(i, acquired, ..)| (acquired, i));
    report.confirmed = order.len();
    let out = &mut report.anomalies;
    // Sorted by start, an overlap is with a still-open earlier interval:
    // keep the one reaching furthest.
    let mut furthest: Option<(usize, u64)> = None;
    for &(i, start, end, _) in &order {
        if let Some((j, until)) = furthest {
            if start <= until {
                out.push(Anomaly::HeldTwice {
                    first: j,
                    second: i,
                });
            }
        }
        if furthest.is_none_or(|(_, until)| end > until) {
            furthest = Some((i, end));
        }
    }
    for pair in order.windows(2) {
        let ((earlier, .., a), (later, .., b)) = (pair[0], pair[1]);
        if b <= a {
            out.push(Anomaly::TokenNotIncreasing { earlier, later });
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(acquired: u64, confirmed: Option<u64>, token: Option<i64>) -> Hold {
        Hold {
            process: 0,
            node: 0,
            key: format!("lk/{acquired}"),
            lease: 1,
            invoked: 0,
            acquired,
            token,
            confirmed,
        }
    }

    #[test]
    fn one_after_another_is_valid() {
        let holds = [
            hold(10, Some(20), Some(5)),
            hold(25, Some(30), Some(8)),
            // Lost its key before the first read: proves nothing.
            hold(26, None, None),
            hold(40, Some(41), Some(9)),
        ];
        let report = check(&holds);
        assert!(report.valid(), "{:?}", report.anomalies);
        assert_eq!((report.holds, report.confirmed), (4, 3));
    }

    #[test]
    fn a_lock_held_twice_is_caught() {
        let holds = [hold(10, Some(30), Some(5)), hold(25, Some(40), Some(8))];
        assert_eq!(
            check(&holds).anomalies,
            [Anomaly::HeldTwice {
                first: 0,
                second: 1
            }]
        );
        // Nested inside a long hold, after a short one ended.
        let holds = [
            hold(10, Some(100), Some(5)),
            hold(20, Some(30), Some(6)),
            hold(50, Some(60), Some(7)),
        ];
        let found = check(&holds).anomalies;
        assert!(found.contains(&Anomaly::HeldTwice {
            first: 0,
            second: 2
        }));
    }

    #[test]
    fn a_token_going_down_is_caught() {
        // Disjoint in real time, but the later holder's key is older: it
        // was alive when the first holder was granted the lock.
        let holds = [hold(10, Some(20), Some(8)), hold(30, Some(40), Some(5))];
        assert_eq!(
            check(&holds).anomalies,
            [Anomaly::TokenNotIncreasing {
                earlier: 0,
                later: 1
            }]
        );
    }
}
