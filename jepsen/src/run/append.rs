//! The append workload's client: txns over 1–3 keys that read lists and
//! append unique elements to them.
//!
//! A list is stored as its elements, comma-separated, in one key. A txn
//! first reads its keys (one Range each), then commits with a Txn whose
//! compares pin every key's mod_revision to what was read and whose success
//! branch puts the new lists. The compare makes the reads and the appends
//! one atomic step at the Txn's revision; a failed compare changed nothing
//! and is recorded as a failed op.

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use std::collections::BTreeMap;

use super::client::{Ctx, Exec};
use super::register::revision;
use crate::history::{Call, Micro, Return};
use crate::rng::Rng;

/// Prefixes the error of a read before the Txn was sent.
pub const READ_PHASE: &str = "read phase: ";
/// The error of a Txn whose compare failed.
pub const COMPARE_FAILED: &str = "compare failed";

/// Keys in use at a time.
const KEYS: u64 = 6;
/// Txns on a group of keys before the next group: lists stay short.
const OPS_PER_GROUP: u64 = 300;

/// The next txn: 1–3 micro-ops, reads and appends in random order.
pub fn next(ctx: &Ctx, rng: &mut Rng) -> Call {
    let group = ctx.tick() / OPS_PER_GROUP;
    let n = rng.between(1, 3);
    let mut ops = Vec::new();
    for _ in 0..n {
        let key = format!("a/{}", group * KEYS + rng.below(KEYS));
        if rng.chance(0.5) {
            ops.push(Micro::Read { key, value: None });
        } else {
            ops.push(Micro::Append {
                key,
                value: ctx.unique(),
            });
        }
    }
    Call::Txn { ops }
}

/// Runs a txn: read, then compare-and-put.
///
/// # Errors
/// The gRPC status; a failed compare is `FailedPrecondition`, which the
/// caller records as a certain failure.
pub async fn execute(exec: &mut Exec, call: &Call) -> Result<(i64, Return), tonic::Status> {
    let Call::Txn { ops } = call else {
        return Err(tonic::Status::invalid_argument("not a txn"));
    };
    // key -> (list, mod_revision)
    let mut lists: BTreeMap<&str, (Vec<u64>, i64)> = BTreeMap::new();
    for m in ops {
        let key = match m {
            Micro::Read { key, .. } | Micro::Append { key, .. } => key.as_str(),
        };
        if lists.contains_key(key) {
            continue;
        }
        let resp = exec
            .kv
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                serializable: true,
                ..RangeRequest::default()
            })
            .await
            // Nothing was written yet: a certain failure.
            .map_err(|s| tonic::Status::new(s.code(), format!("{READ_PHASE}{}", s.message())))?
            .into_inner();
        let found = match resp.kvs.first() {
            Some(kv) => (parse_list(&kv.value)?, kv.mod_revision),
            None => (Vec::new(), 0),
        };
        lists.insert(key, found);
    }
    let mut compare = Vec::new();
    for (key, (_, mod_revision)) in &lists {
        compare.push(Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Mod as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(TargetUnion::ModRevision(*mod_revision)),
            ..Compare::default()
        });
    }
    // Apply the micro-ops to the lists read, in order.
    let mut done = Vec::new();
    let mut touched = std::collections::BTreeSet::new();
    for m in ops {
        match m {
            Micro::Read { key, .. } => done.push(Micro::Read {
                key: key.clone(),
                value: Some(lists[key.as_str()].0.clone()),
            }),
            Micro::Append { key, value } => {
                if let Some((list, _)) = lists.get_mut(key.as_str()) {
                    list.push(*value);
                }
                touched.insert(key.as_str());
                done.push(m.clone());
            }
        }
    }
    let success = touched
        .iter()
        .map(|key| RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.as_bytes().to_vec(),
                value: format_list(&lists[key].0).into_bytes(),
                ..PutRequest::default()
            })),
        })
        .collect();
    let resp = exec
        .kv
        .txn(TxnRequest {
            compare,
            success,
            failure: vec![],
        })
        .await?
        .into_inner();
    if !resp.succeeded {
        return Err(tonic::Status::failed_precondition(COMPARE_FAILED));
    }
    Ok((revision(resp.header), Return::Txn { ops: done }))
}

/// "1,2,3".
fn format_list(list: &[u64]) -> String {
    list.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses [`format_list`]'s output.
pub(super) fn parse_list(bytes: &[u8]) -> Result<Vec<u64>, tonic::Status> {
    let s =
        std::str::from_utf8(bytes).map_err(|_| tonic::Status::data_loss("list is not UTF-8"))?;
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|v| {
            v.parse()
                .map_err(|_| tonic::Status::data_loss(format!("not a list: {s:?}")))
        })
        .collect()
}
