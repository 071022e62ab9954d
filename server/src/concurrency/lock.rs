//! The Lock service (etcd's v3lockpb).

use cairn_proto::v3lockpb::lock_server::Lock;
use cairn_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::{Request, Response, Status};

use super::{prefix, waiter_key, Abandon, Parts};
use crate::header::Header;
use crate::status::RequestError;
use crate::tracked::Tracker;

/// The Lock service of one node.
pub(crate) struct LockService {
    parts: Parts,
    header: Header,
    _tracker: Tracker,
}

impl LockService {
    pub(crate) fn new(parts: Parts, header: Header, tracker: Tracker) -> Self {
        LockService {
            parts,
            header,
            _tracker: tracker,
        }
    }

    async fn lock(&self, req: LockRequest) -> Result<LockResponse, RequestError> {
        if req.lease == 0 {
            return Err(RequestError::NoLease);
        }
        let key = waiter_key(&req.name, req.lease);
        let rev = self.parts.enqueue(&key, req.lease, b"").await?;
        let abandon = Abandon::new(&self.parts, key.clone());
        self.parts.wait_turn(&prefix(&req.name), rev).await?;
        // The lease may have expired while we waited: then the key is gone
        // and the lock is not ours (etcd #11456).
        match self.parts.get(&key)? {
            Some(kv) if kv.create_revision == rev => {}
            _ => return Err(RequestError::SessionExpired),
        }
        abandon.keep();
        Ok(LockResponse {
            header: self.header.at(self.parts.store.revision()),
            key,
        })
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        Ok(Response::new(
            LockService::lock(self, request.into_inner()).await?,
        ))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let rev = self
            .parts
            .delete(&request.into_inner().key)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(UnlockResponse {
            header: self.header.at(rev),
        }))
    }
}
