//! The request checks etcd's API layer makes before proposing anything.
//!
//! Pure functions over the request messages, mirroring etcd's
//! `server/etcdserver/api/v3rpc/key.go`. Their errors are [`Invalid`]
//! values; `status.rs` gives each its etcd code and message.

use std::collections::HashSet;

use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

/// A request etcd would refuse before proposing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// An empty key (`etcdserver: key is not provided`).
    EmptyKey,
    /// `ignore_value` with a value.
    ValueProvided,
    /// `ignore_lease` with a lease.
    LeaseProvided,
    /// A sort order or target that is not a known enum value.
    SortOption,
    /// A txn with more compares or ops than `--max-txn-ops`.
    TooManyOps,
    /// Two writes to one key in a txn branch.
    DuplicateKey,
    /// A txn op with no request in it (etcd answers "key not found").
    EmptyOp,
}

/// Checks a Range, alone or inside a txn.
pub(crate) fn range(r: &RangeRequest) -> Result<(), Invalid> {
    if r.key.is_empty() {
        return Err(Invalid::EmptyKey);
    }
    if SortOrder::try_from(r.sort_order).is_err() || SortTarget::try_from(r.sort_target).is_err() {
        return Err(Invalid::SortOption);
    }
    Ok(())
}

/// Checks a Put, alone or inside a txn.
pub(crate) fn put(r: &PutRequest) -> Result<(), Invalid> {
    if r.key.is_empty() {
        return Err(Invalid::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(Invalid::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(Invalid::LeaseProvided);
    }
    Ok(())
}

/// Checks a DeleteRange, alone or inside a txn.
pub(crate) fn delete_range(r: &DeleteRangeRequest) -> Result<(), Invalid> {
    if r.key.is_empty() {
        return Err(Invalid::EmptyKey);
    }
    Ok(())
}

/// Checks a top-level Txn: the shape of every op at every depth first, then
/// the duplicate-key rule on each branch (after the shape, as etcd does, so
/// a huge request fails cheaply before the quadratic-looking part).
pub(crate) fn txn(r: &TxnRequest, max_txn_ops: usize) -> Result<(), Invalid> {
    txn_shape(r, max_txn_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

/// etcd's `checkTxnRequest`: op counts and each op's own checks,
/// recursively.
///
/// A txn may hold `max_txn_ops` compares, success ops and failure ops (each
/// list counted on its own); a nested txn gets what its parent leaves of
/// that budget, `max_txn_ops - ops`, where `ops` is the parent's longest
/// list. So with 128, a txn of 100 ranges and a nested txn may give the
/// nested one at most 27 ops.
fn txn_shape(r: &TxnRequest, max_txn_ops: usize) -> Result<(), Invalid> {
    let ops = r.compare.len().max(r.success.len()).max(r.failure.len());
    if ops > max_txn_ops {
        return Err(Invalid::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Invalid::EmptyKey);
    }
    let budget = max_txn_ops - ops;
    for op in r.success.iter().chain(&r.failure) {
        request_op(op, budget)?;
    }
    Ok(())
}

fn request_op(op: &RequestOp, max_txn_ops: usize) -> Result<(), Invalid> {
    match &op.request {
        Some(Op::RequestRange(r)) => range(r),
        Some(Op::RequestPut(r)) => put(r),
        Some(Op::RequestDeleteRange(r)) => delete_range(r),
        Some(Op::RequestTxn(r)) => txn_shape(r, max_txn_ops),
        None => Err(Invalid::EmptyOp),
    }
}

/// The keys a DeleteRange covers.
#[derive(Debug, Clone, Copy)]
struct Interval<'a> {
    key: &'a [u8],
    end: End<'a>,
}

#[derive(Debug, Clone, Copy)]
enum End<'a> {
    /// Empty `range_end`: the key alone.
    Point,
    /// `[key, end)`. As in etcd's check, a `range_end` of `"\0"` (every key
    /// from `key` on, for the delete itself) is taken literally here, so it
    /// covers nothing: etcd accepts a put inside such a delete, and so do we.
    Before(&'a [u8]),
}

impl<'a> Interval<'a> {
    fn of(r: &'a DeleteRangeRequest) -> Self {
        let end = match r.range_end.as_slice() {
            [] => End::Point,
            end => End::Before(end),
        };
        Interval { key: &r.key, end }
    }

    fn contains(&self, k: &[u8]) -> bool {
        match self.end {
            End::Point => k == self.key,
            End::Before(end) => self.key <= k && k < end,
        }
    }
}

type Puts<'a> = HashSet<&'a [u8]>;

/// etcd's `checkIntervals`: no key may be written twice by one branch of a
/// txn, counting puts in nested txns and keys inside the ranges deleted at
/// this level or below. A nested txn's success and failure branches exclude
/// each other, so the same key may be put in both.
///
/// Returns this level's puts and deletes, for the level above.
fn check_intervals(ops: &[RequestOp]) -> Result<(Puts<'_>, Vec<Interval<'_>>), Invalid> {
    let mut dels: Vec<Interval<'_>> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Op::RequestDeleteRange(d)) => Some(Interval::of(d)),
            _ => None,
        })
        .collect();
    let deleted = |dels: &[Interval<'_>], k: &[u8]| dels.iter().any(|iv| iv.contains(k));

    let mut puts = Puts::new();
    for op in ops {
        let Some(Op::RequestTxn(nested)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&nested.success)?;
        let (puts_else, dels_else) = check_intervals(&nested.failure)?;
        for &k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(Invalid::DuplicateKey);
            }
            puts.insert(k);
        }
        for &k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                return Err(Invalid::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }

    for op in ops {
        let Some(Op::RequestPut(p)) = &op.request else {
            continue;
        };
        let k = p.key.as_slice();
        if puts.contains(k) || deleted(&dels, k) {
            return Err(Invalid::DuplicateKey);
        }
        puts.insert(k);
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use cairn_proto::etcdserverpb::Compare;

    use super::*;

    fn put_op(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }

    fn del_op(k: &str, end: &[u8]) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.to_vec(),
                prev_kv: false,
            })),
        }
    }

    fn get_op(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestRange(RangeRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }

    fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestTxn(TxnRequest {
                compare: vec![],
                success,
                failure,
            })),
        }
    }

    fn txn_of(success: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure: vec![],
        }
    }

    #[test]
    fn single_requests() {
        let range_with = |key: &str, order: i32, target: i32| RangeRequest {
            key: key.into(),
            sort_order: order,
            sort_target: target,
            ..Default::default()
        };
        let ranges = [
            (range_with("a", 0, 0), Ok(())),
            (range_with("a", 2, 4), Ok(())),
            (range_with("", 0, 0), Err(Invalid::EmptyKey)),
            (range_with("a", 3, 0), Err(Invalid::SortOption)),
            (range_with("a", 0, 5), Err(Invalid::SortOption)),
            (range_with("a", -1, 0), Err(Invalid::SortOption)),
        ];
        for (r, want) in ranges {
            assert_eq!(range(&r), want, "{r:?}");
        }

        let put_with =
            |key: &str, value: &str, lease: i64, ignore_value: bool, ignore_lease: bool| {
                PutRequest {
                    key: key.into(),
                    value: value.into(),
                    lease,
                    prev_kv: false,
                    ignore_value,
                    ignore_lease,
                }
            };
        let puts = [
            (put_with("a", "v", 5, false, false), Ok(())),
            (put_with("a", "", 0, true, true), Ok(())),
            (put_with("", "v", 0, false, false), Err(Invalid::EmptyKey)),
            (
                put_with("a", "v", 0, true, false),
                Err(Invalid::ValueProvided),
            ),
            (
                put_with("a", "", 7, false, true),
                Err(Invalid::LeaseProvided),
            ),
        ];
        for (r, want) in puts {
            assert_eq!(put(&r), want, "{r:?}");
        }

        assert_eq!(
            delete_range(&DeleteRangeRequest::default()),
            Err(Invalid::EmptyKey)
        );
    }

    #[test]
    fn txn_shape_rules() {
        let many = |n: usize| (0..n).map(|i| put_op(&format!("k{i}"))).collect::<Vec<_>>();
        let compare = |k: &str| Compare {
            key: k.into(),
            ..Default::default()
        };
        let cases: Vec<(&str, TxnRequest, Result<(), Invalid>)> = vec![
            ("empty txn", txn_of(vec![]), Ok(())),
            ("at the limit", txn_of(many(4)), Ok(())),
            ("over the limit", txn_of(many(5)), Err(Invalid::TooManyOps)),
            (
                "too many compares",
                TxnRequest {
                    compare: (0..5).map(|i| compare(&format!("c{i}"))).collect(),
                    success: vec![],
                    failure: vec![],
                },
                Err(Invalid::TooManyOps),
            ),
            (
                "failure counted on its own",
                TxnRequest {
                    compare: vec![],
                    success: many(4),
                    failure: many(4),
                },
                Ok(()),
            ),
            (
                "nested over the limit",
                txn_of(vec![nested(many(5), vec![])]),
                Err(Invalid::TooManyOps),
            ),
            (
                "nested within what its parent leaves",
                txn_of(vec![get_op("a"), nested(many(2), vec![])]),
                Ok(()),
            ),
            (
                "nested over what its parent leaves",
                txn_of(vec![get_op("a"), nested(many(3), vec![])]),
                Err(Invalid::TooManyOps),
            ),
            (
                "nested in failure over what its parent leaves",
                TxnRequest {
                    compare: vec![compare("c"), compare("d")],
                    success: vec![],
                    failure: vec![nested(vec![], many(3))],
                },
                Err(Invalid::TooManyOps),
            ),
            (
                "budget shrinks at every depth",
                txn_of(vec![
                    get_op("a"),
                    nested(vec![get_op("b"), nested(many(2), vec![])], vec![]),
                ]),
                Err(Invalid::TooManyOps),
            ),
            (
                "empty compare key",
                TxnRequest {
                    compare: vec![compare("")],
                    success: vec![],
                    failure: vec![],
                },
                Err(Invalid::EmptyKey),
            ),
            (
                "empty op key",
                txn_of(vec![get_op("")]),
                Err(Invalid::EmptyKey),
            ),
            (
                "empty key in nested failure",
                txn_of(vec![nested(vec![], vec![del_op("", b"")])]),
                Err(Invalid::EmptyKey),
            ),
            (
                "empty op",
                txn_of(vec![RequestOp { request: None }]),
                Err(Invalid::EmptyOp),
            ),
            (
                "bad sort in an op",
                txn_of(vec![RequestOp {
                    request: Some(Op::RequestRange(RangeRequest {
                        key: "a".into(),
                        sort_order: 9,
                        ..Default::default()
                    })),
                }]),
                Err(Invalid::SortOption),
            ),
        ];
        for (name, r, want) in cases {
            assert_eq!(txn(&r, 4), want, "{name}");
        }
    }

    #[test]
    fn duplicate_keys() {
        let dup = Err(Invalid::DuplicateKey);
        let cases: Vec<(&str, Vec<RequestOp>, Result<(), Invalid>)> = vec![
            ("distinct puts", vec![put_op("a"), put_op("b")], Ok(())),
            ("same put twice", vec![put_op("a"), put_op("a")], dup),
            (
                "reads never conflict",
                vec![get_op("a"), put_op("a"), get_op("a")],
                Ok(()),
            ),
            (
                "put then delete of the key",
                vec![put_op("a"), del_op("a", b"")],
                dup,
            ),
            (
                "delete then put, other key",
                vec![del_op("a", b""), put_op("b")],
                Ok(()),
            ),
            (
                "put inside a deleted range",
                vec![del_op("a", b"c"), put_op("b")],
                dup,
            ),
            (
                "put at a range's end",
                vec![del_op("a", b"c"), put_op("c")],
                Ok(()),
            ),
            (
                "put below an open range",
                vec![del_op("b", b"\0"), put_op("a")],
                Ok(()),
            ),
            (
                "put inside an open range: etcd does not see it",
                vec![del_op("b", b"\0"), put_op("zzz")],
                Ok(()),
            ),
            (
                "two deletes overlap freely",
                vec![del_op("a", b"z"), del_op("b", b"")],
                Ok(()),
            ),
            (
                "nested put clashes with outer put",
                vec![put_op("a"), nested(vec![put_op("a")], vec![])],
                dup,
            ),
            (
                "nested put inside outer delete",
                vec![del_op("a", b"c"), nested(vec![put_op("b")], vec![])],
                dup,
            ),
            (
                "then and else may write the same key",
                vec![nested(vec![put_op("a")], vec![put_op("a")])],
                Ok(()),
            ),
            (
                "else clashes with an earlier nested txn",
                vec![
                    nested(vec![put_op("a")], vec![]),
                    nested(vec![put_op("b")], vec![put_op("a")]),
                ],
                dup,
            ),
            (
                "else may repeat its own then even after another txn",
                vec![
                    nested(vec![put_op("x")], vec![]),
                    nested(vec![put_op("a")], vec![put_op("a")]),
                ],
                Ok(()),
            ),
            (
                "outer put inside a nested delete",
                vec![nested(vec![del_op("a", b"c")], vec![]), put_op("b")],
                dup,
            ),
            (
                "outer put of a key nested else deletes",
                vec![nested(vec![], vec![del_op("b", b"")]), put_op("b")],
                dup,
            ),
            (
                "nested delete does not reach sibling nested puts",
                vec![
                    nested(vec![put_op("b")], vec![]),
                    nested(vec![del_op("a", b"c")], vec![]),
                ],
                Ok(()),
            ),
            (
                "doubly nested clash",
                vec![
                    put_op("k"),
                    nested(vec![nested(vec![put_op("k")], vec![])], vec![]),
                ],
                dup,
            ),
        ];
        for (name, success, want) in cases {
            assert_eq!(txn(&txn_of(success.clone()), 128), want, "{name} (success)");
            let as_failure = TxnRequest {
                compare: vec![],
                success: vec![],
                failure: success,
            };
            assert_eq!(txn(&as_failure, 128), want, "{name} (failure)");
        }
    }

    #[test]
    fn branches_are_checked_apart() {
        let r = TxnRequest {
            compare: vec![],
            success: vec![put_op("a")],
            failure: vec![put_op("a")],
        };
        assert_eq!(txn(&r, 128), Ok(()));
    }
}
