//! The lease workload's history and checker: keys vanish only after their
//! lease expired, never while it was kept alive.
//!
//! # The rule, from etcd's semantics
//! A grant or a keepalive that returns TTL `t > 0` was processed by the
//! leader at some instant `s` with `invoke <= s`, and set the lease's
//! expiry to `s + t` or later (a new leader only pushes expiries further,
//! by refreshing every lease to its full TTL). Keys attached to a lease
//! are deleted exactly when the lease is revoked or expires, in one txn.
//! So with `protected(L)` the latest `invoke + t` over L's successful
//! grants and keepalives:
//!
//! - **early expiry**: a linearizable read that completes before
//!   `protected(L)`, invoked after the put that attached the key to L
//!   completed, must see the key;
//! - **outlived lease**: a read invoked after a keepalive of L answered
//!   "not found" (TTL <= 0) must not see the key;
//! - **resurrection**: a key read absent must not be read present later
//!   (each key is put once);
//! - **lingering**: once every lease was abandoned and its TTL passed (after
//!   recovery), every key must be gone;
//! - **TTL**: a grant gets at least the TTL asked for (etcd raises it to
//!   its minimum), and a keepalive renews to the granted TTL.
//!
//! Reads that see the key with another value than the one put are
//! reported too. Times are nanoseconds from the start of the run, on the
//! machine's monotonic clock, which the members share.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// What a lease client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Call {
    /// LeaseGrant with a requested TTL in seconds.
    Grant {
        /// Seconds asked for.
        ttl: i64,
    },
    /// A Put of `key` (once in the run) attached to `lease`.
    Put {
        /// The key.
        key: String,
        /// The value, unique in the run.
        value: u64,
        /// The lease.
        lease: i64,
    },
    /// One LeaseKeepAlive request and its response.
    KeepAlive {
        /// The lease.
        lease: i64,
    },
    /// A linearizable Range of `key`.
    Read {
        /// The key.
        key: String,
    },
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// A granted lease.
    Granted {
        /// Its ID.
        lease: i64,
        /// Its TTL, in seconds.
        ttl: i64,
    },
    /// A keepalive's answer: the new TTL, `<= 0` when the lease is gone.
    KeptAlive {
        /// Seconds.
        ttl: i64,
    },
    /// The put happened.
    Put,
    /// A read: the value, None when the key is absent.
    Read {
        /// The value read.
        value: Option<u64>,
    },
    /// Certainly did not happen.
    Fail {
        /// The error.
        error: String,
    },
    /// May or may not have happened.
    Info {
        /// The error or "timeout".
        error: String,
    },
}

/// One lease client request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The worker.
    pub process: u64,
    /// The member it went to.
    pub node: usize,
    /// Nanoseconds from the start to the invocation.
    pub invoke: u64,
    /// Nanoseconds from the start to the completion.
    pub complete: u64,
    /// The request.
    pub call: Call,
    /// The answer.
    pub outcome: Outcome,
}

/// Something wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Anomaly {
    /// The key was read absent while its lease was protected.
    EarlyExpiry {
        /// The key.
        key: String,
        /// Its lease.
        lease: i64,
        /// The read (its index in the history).
        read: usize,
        /// The keepalive or grant that protected the lease.
        by: usize,
        /// Until when (ns).
        protected_until: u64,
    },
    /// The key was read present after its lease was reported gone.
    OutlivedLease {
        /// The key.
        key: String,
        /// Its lease.
        lease: i64,
        /// The read.
        read: usize,
        /// The keepalive that found the lease gone.
        gone: usize,
    },
    /// The key came back after being read absent.
    Resurrected {
        /// The key.
        key: String,
        /// The read that saw it absent.
        absent: usize,
        /// The later read that saw it.
        present: usize,
    },
    /// A read returned a value that was not the one put.
    WrongValue {
        /// The key.
        key: String,
        /// The read.
        read: usize,
    },
    /// The key outlived every lease and its TTL.
    Lingering {
        /// The key.
        key: String,
        /// Its lease.
        lease: i64,
    },
    /// A grant or keepalive answered with the wrong TTL.
    Ttl {
        /// The op.
        op: usize,
        /// What was expected, at least.
        expected: i64,
        /// What came.
        got: i64,
    },
}

/// What the check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Leases granted.
    pub leases: usize,
    /// Keys put.
    pub keys: usize,
    /// Keys read absent at least once (expired while observed).
    pub expired: usize,
    /// Successful keepalives.
    pub keepalives: usize,
    /// Everything wrong.
    pub anomalies: Vec<Anomaly>,
}

impl Report {
    /// No anomaly.
    pub fn valid(&self) -> bool {
        self.anomalies.is_empty()
    }
}

/// Checks `history` (in invocation order). `remaining` are the keys still
/// present at the end, read after every lease was abandoned and its TTL
/// passed; None when there was no final read (no recovery).
pub fn check(history: &[Op], remaining: Option<&[String]>) -> Report {
    let mut report = Report::default();
    let out = &mut report.anomalies;
    // Per lease: its TTL, the latest protection (until, op), the first
    // "gone" answer (complete, op).
    let mut ttl: HashMap<i64, i64> = HashMap::new();
    let mut protected: HashMap<i64, (u64, usize)> = HashMap::new();
    let mut gone: HashMap<i64, (u64, usize)> = HashMap::new();
    // Per key: lease, value, the put's completion.
    let mut keys: HashMap<&str, (i64, u64, u64)> = HashMap::new();
    for (i, op) in history.iter().enumerate() {
        match (&op.call, &op.outcome) {
            (Call::Grant { ttl: asked }, Outcome::Granted { lease, ttl: got }) => {
                report.leases += 1;
                if got < asked {
                    out.push(Anomaly::Ttl {
                        op: i,
                        expected: *asked,
                        got: *got,
                    });
                }
                ttl.insert(*lease, *got);
                protect(&mut protected, *lease, op.invoke, *got, i);
            }
            (Call::KeepAlive { lease }, Outcome::KeptAlive { ttl: got }) if *got > 0 => {
                report.keepalives += 1;
                if let Some(&granted) = ttl.get(lease) {
                    if *got != granted {
                        out.push(Anomaly::Ttl {
                            op: i,
                            expected: granted,
                            got: *got,
                        });
                    }
                }
                protect(&mut protected, *lease, op.invoke, *got, i);
            }
            (Call::KeepAlive { lease }, Outcome::KeptAlive { .. }) => {
                let entry = gone.entry(*lease).or_insert((op.complete, i));
                if op.complete < entry.0 {
                    *entry = (op.complete, i);
                }
            }
            (Call::Put { key, value, lease }, Outcome::Put) => {
                report.keys += 1;
                keys.insert(key, (*lease, *value, op.complete));
            }
            _ => {}
        }
    }
    let mut absent_at: HashMap<&str, usize> = HashMap::new();
    for (i, op) in history.iter().enumerate() {
        let (Call::Read { key }, Outcome::Read { value }) = (&op.call, &op.outcome) else {
            continue;
        };
        let Some(&(lease, put_value, put_done)) = keys.get(key.as_str()) else {
            continue;
        };
        match value {
            None => {
                if op.invoke > put_done {
                    absent_at.entry(key).or_insert(i);
                    if let Some(&(until, by)) = protected.get(&lease) {
                        if op.complete < until {
                            out.push(Anomaly::EarlyExpiry {
                                key: key.clone(),
                                lease,
                                read: i,
                                by,
                                protected_until: until,
                            });
                        }
                    }
                }
            }
            Some(v) => {
                if *v != put_value {
                    out.push(Anomaly::WrongValue {
                        key: key.clone(),
                        read: i,
                    });
                }
                if let Some(&(at, g)) = gone.get(&lease) {
                    if op.invoke > at {
                        out.push(Anomaly::OutlivedLease {
                            key: key.clone(),
                            lease,
                            read: i,
                            gone: g,
                        });
                    }
                }
                if let Some(&absent) = absent_at.get(key.as_str()) {
                    if history[absent].complete < op.invoke {
                        out.push(Anomaly::Resurrected {
                            key: key.clone(),
                            absent,
                            present: i,
                        });
                    }
                }
            }
        }
    }
    report.expired = absent_at.len();
    for key in remaining.unwrap_or_default() {
        let lease = keys.get(key.as_str()).map_or(0, |k| k.0);
        out.push(Anomaly::Lingering {
            key: key.clone(),
            lease,
        });
    }
    report
}

/// Extends lease's protection to `invoke + ttl` seconds if that is later.
fn protect(
    protected: &mut HashMap<i64, (u64, usize)>,
    lease: i64,
    invoke: u64,
    ttl: i64,
    op: usize,
) {
    let secs = u64::try_from(ttl).unwrap_or(0);
    let until = invoke.saturating_add(secs.saturating_mul(1_000_000_000));
    let entry = protected.entry(lease).or_insert((until, op));
    if until > entry.0 {
        *entry = (until, op);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

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

    fn read(at: u64, value: Option<u64>) -> Op {
        op(
            at,
            at + S / 100,
            Call::Read { key: "l/1".into() },
            Outcome::Read { value },
        )
    }

    /// Lease 5 granted at 0 with TTL 2, key l/1=10 put at 0.1 s, kept alive
    /// at 1 s and 2 s (protected until 4 s), then abandoned.
    fn kept() -> Vec<Op> {
        vec![
            op(
                0,
                S / 20,
                Call::Grant { ttl: 2 },
                Outcome::Granted { lease: 5, ttl: 2 },
            ),
            op(
                S / 10,
                S / 5,
                Call::Put {
                    key: "l/1".into(),
                    value: 10,
                    lease: 5,
                },
                Outcome::Put,
            ),
            op(
                S,
                S + 1,
                Call::KeepAlive { lease: 5 },
                Outcome::KeptAlive { ttl: 2 },
            ),
            op(
                2 * S,
                2 * S + 1,
                Call::KeepAlive { lease: 5 },
                Outcome::KeptAlive { ttl: 2 },
            ),
            read(3 * S, Some(10)),
        ]
    }

    #[test]
    fn expiry_after_protection_is_valid() {
        let mut h = kept();
        h.push(read(4 * S + 1, None));
        h.push(op(
            5 * S,
            5 * S + 1,
            Call::KeepAlive { lease: 5 },
            Outcome::KeptAlive { ttl: 0 },
        ));
        h.push(read(6 * S, None));
        let report = check(&h, Some(&[]));
        assert!(report.valid(), "{:?}", report.anomalies);
        assert_eq!(
            (
                report.leases,
                report.keys,
                report.expired,
                report.keepalives
            ),
            (1, 1, 1, 2)
        );
    }

    #[test]
    fn a_key_gone_while_kept_alive_is_caught() {
        let mut h = kept();
        h.push(read(3 * S + S / 2, None));
        let report = check(&h, Some(&[]));
        assert!(
            matches!(
                &report.anomalies[..],
                [Anomaly::EarlyExpiry { lease: 5, by: 3, protected_until, .. }] if *protected_until == 4 * S
            ),
            "{:?}",
            report.anomalies
        );
    }

    #[test]
    fn a_key_outliving_its_lease_is_caught() {
        let mut h = kept();
        h.push(op(
            5 * S,
            5 * S + 1,
            Call::KeepAlive { lease: 5 },
            Outcome::KeptAlive { ttl: -1 },
        ));
        h.push(read(6 * S, Some(10)));
        let report = check(&h, Some(&[]));
        assert!(
            matches!(
                &report.anomalies[..],
                [Anomaly::OutlivedLease {
                    read: 6,
                    gone: 5,
                    ..
                }]
            ),
            "{:?}",
            report.anomalies
        );
    }

    #[test]
    fn resurrection_lingering_values_and_ttls_are_caught() {
        let mut h = kept();
        h.push(read(5 * S, None));
        h.push(read(6 * S, Some(11)));
        h.push(op(
            7 * S,
            7 * S + 1,
            Call::Grant { ttl: 3 },
            Outcome::Granted { lease: 6, ttl: 2 },
        ));
        h.push(op(
            7 * S,
            7 * S + 1,
            Call::KeepAlive { lease: 6 },
            Outcome::KeptAlive { ttl: 9 },
        ));
        let remaining = vec!["l/1".to_owned()];
        let report = check(&h, Some(&remaining));
        let kinds: Vec<&str> = report
            .anomalies
            .iter()
            .map(|a| match a {
                Anomaly::Resurrected { .. } => "resurrected",
                Anomaly::WrongValue { .. } => "value",
                Anomaly::Ttl { .. } => "ttl",
                Anomaly::Lingering { .. } => "lingering",
                _ => "other",
            })
            .collect();
        assert_eq!(
            kinds,
            ["ttl", "ttl", "value", "resurrected", "lingering"],
            "{:?}",
            report.anomalies
        );
    }

    #[test]
    fn a_failed_keepalive_does_not_protect() {
        let mut h = kept();
        h.push(op(
            3 * S,
            3 * S + 1,
            Call::KeepAlive { lease: 5 },
            Outcome::Info {
                error: "timeout".into(),
            },
        ));
        h.push(read(4 * S + 1, None));
        assert!(check(&h, Some(&[])).valid());
    }
}
