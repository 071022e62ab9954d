//! The KV service: Range, Put, DeleteRange, Txn and Compact.
//!
//! Each handler validates (`validate.rs`), then either reads the store
//! (Range, and a Txn whose every op is a Range, as etcd's `isTxnReadonly`)
//! or proposes through Raft (everything else), fills the top-level header,
//! and maps any failure with `status.rs`.

use cairn_proto::etcdserverpb::kv_server::Kv;
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use cairn_raft_storage::{read_only_ranges, Request as Proposal, Response as Applied, Store};
use tonic::{Request, Response, Status};

use crate::header::Header;
use crate::propose::Proposer;
use crate::quota::Quota;
use crate::read_index::ReadBarrier;
use crate::status::{unexpected, RequestError};
use crate::tracked::Tracker;
use crate::validate;

/// The KV service of one node.
pub(crate) struct KvService {
    store: Store,
    proposer: Proposer,
    reads: ReadBarrier,
    header: Header,
    max_txn_ops: usize,
    quota: Quota,
    /// Keeps the node's shutdown waiting while a connection still holds
    /// this service, and so a read handle on the storage.
    _tracker: Tracker,
}

/// What a KV service needs from the node.
pub(crate) struct KvParts {
    pub(crate) store: Store,
    pub(crate) proposer: Proposer,
    pub(crate) reads: ReadBarrier,
    pub(crate) header: Header,
    pub(crate) max_txn_ops: usize,
    pub(crate) quota: Quota,
    pub(crate) tracker: Tracker,
}

impl KvService {
    pub(crate) fn new(parts: KvParts) -> Self {
        KvService {
            store: parts.store,
            proposer: parts.proposer,
            reads: parts.reads,
            header: parts.header,
            max_txn_ops: parts.max_txn_ops,
            quota: parts.quota,
            _tracker: parts.tracker,
        }
    }

    async fn do_range(&self, req: RangeRequest) -> Result<RangeResponse, RequestError> {
        validate::range(&req)?;
        if !req.serializable {
            self.reads.wait().await?;
        }
        let mut resp = self.store.range(&req)?;
        resp.header = self.header.fill(resp.header);
        Ok(resp)
    }

    async fn do_put(&self, req: PutRequest) -> Result<PutResponse, RequestError> {
        validate::put(&req)?;
        let req = Proposal::Put(req);
        self.quota.admit(&req).await?;
        match self.proposer.propose(req).await? {
            Applied::Put(mut resp) => {
                resp.header = self.header.fill(resp.header);
                Ok(resp)
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn do_delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, RequestError> {
        validate::delete_range(&req)?;
        let req = Proposal::DeleteRange(req);
        self.quota.admit(&req).await?;
        match self.proposer.propose(req).await? {
            Applied::DeleteRange(mut resp) => {
                resp.header = self.header.fill(resp.header);
                Ok(resp)
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn do_txn(&self, req: TxnRequest) -> Result<TxnResponse, RequestError> {
        validate::txn(&req, self.max_txn_ops)?;
        // A read-only txn is a read, as on etcd: it passes the read barrier
        // unless every range in it is serializable, and skips the log.
        if let Some(ranges) = read_only_ranges(&req) {
            if !ranges.iter().all(|r| r.serializable) {
                self.reads.wait().await?;
            }
            if let Some(resp) = self.store.read_txn(&req) {
                let mut resp = resp?.map_err(RequestError::Apply)?;
                resp.header = self.header.fill(resp.header);
                return Ok(resp);
            }
        }
        let req = Proposal::Txn(req);
        self.quota.admit(&req).await?;
        match self.proposer.propose(req).await? {
            Applied::Txn(mut resp) => {
                resp.header = self.header.fill(resp.header);
                Ok(resp)
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn do_compact(&self, req: CompactionRequest) -> Result<CompactionResponse, RequestError> {
        let (revision, physical) = (req.revision, req.physical);
        let req = Proposal::Compaction(req);
        self.quota.admit(&req).await?;
        match self.proposer.propose(req).await? {
            Applied::Compaction(mut resp) => {
                if physical {
                    // etcd answers a physical compaction only once the old
                    // revisions are gone from the backend.
                    self.store.wait_compacted(revision).await;
                }
                resp.header = self.header.fill(resp.header);
                Ok(resp)
            }
            other => Err(unexpected(&other)),
        }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(self.do_range(request.into_inner()).await?))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(self.do_put(request.into_inner()).await?))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Ok(Response::new(
            self.do_delete_range(request.into_inner()).await?,
        ))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Ok(Response::new(self.do_txn(request.into_inner()).await?))
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Ok(Response::new(self.do_compact(request.into_inner()).await?))
    }
}
