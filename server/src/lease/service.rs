//! The Lease service: grant, revoke, keep-alive, time-to-live and list.

use std::pin::Pin;
use std::sync::Arc;

use cairn_proto::etcdserverpb::lease_server::Lease;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, ResponseHeader,
};
use cairn_raft_storage::Store;
use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use super::lessor::Lessor;
use crate::header::Header;
use crate::quota::Quota;
use crate::tracked::Tracker;

/// The Lease service of one node.
pub(crate) struct LeaseService {
    lessor: Arc<Lessor>,
    store: Store,
    header: Header,
    /// Turns true when the node stops: keep-alive streams end then, so
    /// that connections drain.
    stop: watch::Receiver<bool>,
    quota: Quota,
    _tracker: Tracker,
}

impl LeaseService {
    pub(crate) fn new(
        lessor: Arc<Lessor>,
        store: Store,
        header: Header,
        stop: watch::Receiver<bool>,
        quota: Quota,
        tracker: Tracker,
    ) -> Self {
        LeaseService {
            lessor,
            store,
            header,
            stop,
            quota,
            _tracker: tracker,
        }
    }

    /// The header of a lease answer: the current revision, as etcd's.
    fn current(&self) -> Option<ResponseHeader> {
        self.header.at(self.store.revision())
    }
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let req = request.into_inner();
        self.quota
            .admit(&cairn_raft_storage::Request::LeaseGrant(req))
            .await?;
        let mut resp = self.lessor.grant(req).await?;
        resp.header = self.header.fill(resp.header);
        Ok(Response::new(resp))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let id = request.into_inner().id;
        self.quota
            .admit(&cairn_raft_storage::Request::LeaseRevoke(
                LeaseRevokeRequest { id },
            ))
            .await?;
        let mut resp = self.lessor.revoke(id).await?;
        resp.header = self.header.fill(resp.header);
        Ok(Response::new(resp))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let (lessor, store, header) =
            (self.lessor.clone(), self.store.clone(), self.header.clone());
        let mut stop = self.stop.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let stream = request.into_inner().take_until(stopped).then(move |req| {
            let (lessor, store, header) = (lessor.clone(), store.clone(), header.clone());
            async move {
                let id = req?.id;
                // An unknown lease answers TTL 0, not an error.
                let ttl = lessor.keep_alive(id).await?;
                Ok(LeaseKeepAliveResponse {
                    header: header.at(store.revision()),
                    id,
                    ttl,
                })
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let header = self.current();
        // An unknown lease answers TTL -1, not an error.
        let resp = match self.store.lease(req.id) {
            // A lease the lessor has no deadline for yet (its grant's
            // proposer gave up waiting) has its whole TTL ahead.
            Some(lease) => LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: self.lessor.time_to_live(req.id).await?.unwrap_or(lease.ttl),
                granted_ttl: lease.ttl,
                keys: if req.keys { lease.keys } else { Vec::new() },
            },
            None => LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                ..Default::default()
            },
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let leases = self
            .store
            .lease_ids()
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: self.current(),
            leases,
        }))
    }
}
