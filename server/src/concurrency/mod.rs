//! Locks and elections (etcd's v3lock and v3election services), built on
//! leases, revisions and watches, as etcd's `concurrency` package builds
//! them on a client.
//!
//! - A waiter's key is `<name>/<lease id in hex>`, put with its lease;
//!   its create revision orders the waiters.
//! - A waiter holds the lock (or leads) once no key under `<name>/` has a
//!   smaller create revision. It waits for the deletion of the key just
//!   before it, again and again, through an internal watcher on the hub.
//! - A request without a lease is refused: a server-made session would
//!   outlive the client (etcd grants one and keeps it alive).
//! - A waiter whose request is cancelled deletes its key, so it leaves no
//!   orphan behind its lease; a waiter whose lease expired while it waited
//!   is told so instead of being granted the lock (etcd #11456).
//!
//! - `lock`: the Lock service. `election`: the Election service.

mod election;
mod lock;

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::response_op::Response as OpResponse;
use cairn_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::KeyValue;
use cairn_raft_storage::{Request as Proposal, Response as Applied, Result as StoreResult, Store};

use crate::propose::Proposer;
use crate::status::{unexpected, RequestError};
use crate::watch::{Hub, Out, Spec};

pub(crate) use election::ElectionService;
pub(crate) use lock::LockService;

/// What the lock and election services share.
#[derive(Clone)]
pub(crate) struct Parts {
    pub(crate) store: Store,
    pub(crate) proposer: Proposer,
    pub(crate) hub: std::sync::Arc<Hub>,
}

/// `<name>/`: the prefix of a lock's or an election's waiters.
fn prefix(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// The end of the range of keys starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A waiter's key: `<name>/<lease in hex>`.
fn waiter_key(name: &[u8], lease: i64) -> Vec<u8> {
    let mut k = prefix(name);
    k.extend_from_slice(format!("{lease:x}").as_bytes());
    k
}

impl Parts {
    async fn txn(&self, txn: TxnRequest) -> Result<TxnResponse, RequestError> {
        match self.proposer.propose(Proposal::Txn(txn)).await? {
            Applied::Txn(resp) => Ok(resp),
            Applied::Rejected(e) => Err(RequestError::Apply(e)),
            other => Err(unexpected(&other)),
        }
    }

    /// Puts `key` with `lease` unless it exists; returns its create
    /// revision either way.
    async fn enqueue(&self, key: &[u8], lease: i64, value: &[u8]) -> Result<i64, RequestError> {
        let txn = TxnRequest {
            compare: vec![Compare {
                key: key.to_vec(),
                target: CompareTarget::Create as i32,
                result: CompareResult::Equal as i32,
                target_union: Some(TargetUnion::CreateRevision(0)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    lease,
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(Op::RequestRange(RangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                })),
            }],
        };
        let resp = self.txn(txn).await?;
        if resp.succeeded {
            return Ok(resp.header.map_or(0, |h| h.revision));
        }
        match resp.responses.first().and_then(|r| r.response.as_ref()) {
            Some(OpResponse::ResponseRange(r)) if !r.kvs.is_empty() => Ok(r.kvs[0].create_revision),
            // Deleted between the compare and now cannot happen in one txn.
            _ => Err(RequestError::UnexpectedResponse("lock txn")),
        }
    }

    /// The waiter just before `rev` under `prefix` (the greatest create
    /// revision below it), and the revision the read saw.
    fn predecessor(&self, prefix: &[u8], rev: i64) -> StoreResult<(Option<KeyValue>, i64)> {
        self.one_waiter(prefix, rev - 1, SortOrder::Descend)
    }

    /// The first waiter under `prefix` (the least create revision), and
    /// the revision the read saw.
    fn first(&self, prefix: &[u8]) -> StoreResult<(Option<KeyValue>, i64)> {
        self.one_waiter(prefix, 0, SortOrder::Ascend)
    }

    /// The first waiter under `prefix` in create-revision `order`, among
    /// those created at or below `max_create` (0: all).
    fn one_waiter(
        &self,
        prefix: &[u8],
        max_create: i64,
        order: SortOrder,
    ) -> StoreResult<(Option<KeyValue>, i64)> {
        let resp = self.store.range(&RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            max_create_revision: max_create,
            sort_order: order as i32,
            sort_target: SortTarget::Create as i32,
            limit: 1,
            ..Default::default()
        })?;
        let at = resp.header.map_or(0, |h| h.revision);
        Ok((resp.kvs.into_iter().next(), at))
    }

    /// The live value of `key`.
    fn get(&self, key: &[u8]) -> StoreResult<Option<KeyValue>> {
        let resp = self.store.range(&RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })?;
        Ok(resp.kvs.into_iter().next())
    }

    async fn delete(&self, key: &[u8]) -> Result<i64, RequestError> {
        let req = DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        match self.proposer.propose(Proposal::DeleteRange(req)).await? {
            Applied::DeleteRange(resp) => Ok(resp.header.map_or(0, |h| h.revision)),
            other => Err(unexpected(&other)),
        }
    }

    /// Waits until the waiter with create revision `rev` under `prefix`
    /// is first in line.
    async fn wait_turn(&self, prefix: &[u8], rev: i64) -> Result<(), RequestError> {
        loop {
            let (before, at) = self.predecessor(prefix, rev)?;
            let Some(before) = before else {
                return Ok(());
            };
            self.wait_change(&before.key, &[], at + 1, true).await?;
        }
    }

    /// Waits for a change to `key` (to `[key, range_end)` when `range_end`
    /// is not empty) at or after revision `from`: any change, or only a
    /// delete. A compaction past `from` also ends the wait; the caller
    /// reads again either way.
    async fn wait_change(
        &self,
        key: &[u8],
        range_end: &[u8],
        from: i64,
        deletes_only: bool,
    ) -> Result<(), RequestError> {
        let (id, tx, mut rx) = self.hub.open_stream().ok_or(RequestError::Stopped)?;
        let _close = CloseStream(&self.hub, id);
        let permit = tx.reserve().await.map_err(|_| RequestError::Stopped)?;
        let spec = Spec {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            start: Some(from),
            watch_id: None,
            no_put: deletes_only,
            no_delete: false,
            prev_kv: false,
            fragment: false,
            progress_notify: false,
        };
        self.hub.create(id, spec, permit);
        drop(tx);
        while let Some(out) = rx.recv().await {
            match out {
                Out::Events { .. } | Out::Canceled { .. } => return Ok(()),
                _ => {}
            }
        }
        Err(RequestError::Stopped)
    }
}

/// Closes an internal watch stream when the wait ends or is cancelled.
struct CloseStream<'a>(&'a Hub, crate::watch::StreamId);

impl Drop for CloseStream<'_> {
    fn drop(&mut self) {
        self.0.close_stream(self.1);
    }
}

/// Deletes a waiter's key if the request that queued it is dropped before
/// it is answered (the client went away), so it leaves nothing behind.
struct Abandon {
    parts: Option<Parts>,
    key: Vec<u8>,
}

impl Abandon {
    fn new(parts: &Parts, key: Vec<u8>) -> Self {
        Abandon {
            parts: Some(parts.clone()),
            key,
        }
    }

    /// The request is answered: keep the key.
    fn keep(mut self) {
        self.parts = None;
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(parts) = self.parts.take() {
            let key = std::mem::take(&mut self.key);
            tokio::spawn(async move {
                if let Err(e) = parts.delete(&key).await {
                    tracing::warn!(error = ?e, "could not delete an abandoned waiter's key");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ranges() {
        assert_eq!(waiter_key(b"lk", 0x694d), b"lk/694d".to_vec());
        assert_eq!(prefix_end(b"lk/"), b"lk0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
