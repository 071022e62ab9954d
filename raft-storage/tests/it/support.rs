//! Helpers shared by the test modules.

use cairn_proto::etcdserverpb::{
    compare, request_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, TxnRequest,
};
use cairn_raft_storage::{open, Opened, Options, Request, Response, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

pub fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

pub fn entry(index: u64, req: Request) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(req),
    }
}

pub fn open_dir(dir: &std::path::Path) -> Opened {
    open(&Options::new(dir)).expect("open store")
}

/// A state machine with a counter of log indexes, for tests that apply
/// requests directly.
pub struct Harness {
    pub opened: Opened,
    pub next: u64,
}

impl Harness {
    pub fn new(dir: &std::path::Path) -> Self {
        let opened = open_dir(dir);
        let next = opened.store.applied_index().unwrap_or(0) + 1;
        Harness { opened, next }
    }

    pub async fn apply(&mut self, req: Request) -> Response {
        let e = entry(self.next, req);
        self.next += 1;
        let mut out = self
            .opened
            .state_machine
            .apply(vec![e])
            .await
            .expect("apply");
        out.pop().expect("one response per entry")
    }

    pub async fn put(&mut self, key: &str, value: &str) -> Response {
        self.apply(Request::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }))
        .await
    }

    pub async fn delete(&mut self, key: &str, range_end: &str) -> Response {
        self.apply(Request::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            ..Default::default()
        }))
        .await
    }

    pub fn get(
        &self,
        key: &str,
        range_end: &str,
        revision: i64,
    ) -> cairn_raft_storage::Result<RangeResponse> {
        self.opened.store.range(&RangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            revision,
            ..Default::default()
        })
    }
}

pub fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })),
    }
}

pub fn cmp_version(key: &str, result: compare::CompareResult, version: i64) -> Compare {
    Compare {
        key: key.into(),
        result: result as i32,
        target: compare::CompareTarget::Version as i32,
        target_union: Some(compare::TargetUnion::Version(version)),
        range_end: vec![],
    }
}

pub fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> Request {
    Request::Txn(TxnRequest {
        compare,
        success,
        failure,
    })
}
