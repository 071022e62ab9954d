//! The register workload's client: per-key get, put and CAS.
//!
//! Keys rotate, as in Jepsen's independent keys: the active keys change
//! every [`OPS_PER_GROUP`] ops, so each key's sub-history stays small
//! enough for the linearizability search however long the run.

use std::collections::HashMap;

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};

use super::client::{Ctx, Exec};
use crate::history::{Call, Return};
use crate::rng::Rng;

/// Keys in use at a time.
const KEYS: u64 = 8;
/// Ops on a group of [`KEYS`] keys before the next group.
const OPS_PER_GROUP: u64 = KEYS * 120;

/// What a register worker remembers between ops: the last value and
/// mod_revision it saw per key, to compare against in a CAS.
#[derive(Default)]
pub struct Register {
    seen: HashMap<String, (Option<u64>, i64)>,
}

impl Register {
    /// The next op on a key under `prefix`: half reads, three tenths
    /// writes, a fifth CASes.
    pub fn next(&mut self, ctx: &Ctx, rng: &mut Rng, prefix: &str) -> Call {
        let group = ctx.tick() / OPS_PER_GROUP;
        let key = format!("{prefix}{}", group * KEYS + rng.below(KEYS));
        match rng.below(10) {
            0..=4 => Call::Read { key },
            5..=7 => Call::Write {
                key,
                value: ctx.unique(),
            },
            _ => {
                let (expect, expect_revision) = self.seen.get(&key).copied().unwrap_or((None, 0));
                Call::Cas {
                    key,
                    expect,
                    expect_revision,
                    value: ctx.unique(),
                }
            }
        }
    }

    /// Learns from a completed op.
    pub fn learn(&mut self, call: &Call, result: &Return, revision: i64) {
        match (call, result) {
            (Call::Read { key }, Return::Read { value }) => {
                let seen = value.map_or((None, 0), |(v, r)| (Some(v), r));
                self.seen.insert(key.clone(), seen);
            }
            (Call::Write { key, value }, Return::Done)
            | (Call::Cas { key, value, .. }, Return::Cas { succeeded: true }) => {
                self.seen.insert(key.clone(), (Some(*value), revision));
            }
            _ => {}
        }
    }
}

/// Sends `call` to `exec`'s member.
///
/// # Errors
/// The gRPC status, for the caller to classify.
pub async fn execute(exec: &mut Exec, call: &Call) -> Result<(i64, Return), tonic::Status> {
    match call {
        Call::Read { key } => {
            let resp = exec
                .kv
                .range(RangeRequest {
                    key: key.clone().into_bytes(),
                    ..RangeRequest::default()
                })
                .await?
                .into_inner();
            let value = match resp.kvs.first() {
                Some(kv) => Some((parse(&kv.value)?, kv.mod_revision)),
                None => None,
            };
            Ok((revision(resp.header), Return::Read { value }))
        }
        Call::Write { key, value } => {
            let resp = exec
                .kv
                .put(PutRequest {
                    key: key.clone().into_bytes(),
                    value: value.to_string().into_bytes(),
                    ..PutRequest::default()
                })
                .await?
                .into_inner();
            Ok((revision(resp.header), Return::Done))
        }
        Call::Cas {
            key,
            expect_revision,
            value,
            ..
        } => {
            let resp = exec
                .kv
                .txn(TxnRequest {
                    compare: vec![Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Mod as i32,
                        key: key.clone().into_bytes(),
                        target_union: Some(TargetUnion::ModRevision(*expect_revision)),
                        ..Compare::default()
                    }],
                    success: vec![RequestOp {
                        request: Some(Request::RequestPut(PutRequest {
                            key: key.clone().into_bytes(),
                            value: value.to_string().into_bytes(),
                            ..PutRequest::default()
                        })),
                    }],
                    failure: vec![],
                })
                .await?
                .into_inner();
            Ok((
                revision(resp.header),
                Return::Cas {
                    succeeded: resp.succeeded,
                },
            ))
        }
        Call::Txn { .. } => Err(tonic::Status::invalid_argument("not a register op")),
    }
}

/// A header's revision; 0 when the server sent none (which the revision
/// checks then report as going backwards).
pub(super) fn revision(header: Option<cairn_proto::etcdserverpb::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision)
}

/// A value this harness wrote: a decimal u64.
pub(super) fn parse(bytes: &[u8]) -> Result<u64, tonic::Status> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            tonic::Status::data_loss(format!("not a value this harness wrote: {bytes:?}"))
        })
}
