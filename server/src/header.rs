//! The top-level response header every answer carries.

use cairn_proto::etcdserverpb::ResponseHeader;
use cairn_raft_storage::Member;
use cairn_raft_storage::{NodeId, Raft};
use openraft::RaftMetrics;
use tokio::sync::watch;

use crate::member::MemberIds;

/// Fills `cluster_id`, `member_id` and `raft_term` into the header of a
/// response whose `revision` the store or apply already set. Nested headers
/// (inside a txn's responses) are left as apply made them, as etcd does.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    ids: MemberIds,
    metrics: watch::Receiver<RaftMetrics<NodeId, Member>>,
}

impl Header {
    pub(crate) fn new(ids: MemberIds, raft: &Raft) -> Self {
        Header {
            ids,
            metrics: raft.metrics(),
        }
    }

    /// The complete header, keeping `header.revision`.
    pub(crate) fn fill(&self, header: Option<ResponseHeader>) -> Option<ResponseHeader> {
        self.at(header.map_or(0, |h| h.revision))
    }

    /// The complete header of an answer at `revision`.
    pub(crate) fn at(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.ids.cluster_id,
            member_id: self.ids.member_id,
            revision,
            raft_term: self.metrics.borrow().current_term,
        })
    }
}
