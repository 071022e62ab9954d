//! The Election service (etcd's v3electionpb).

use std::pin::Pin;

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RequestOp, ResponseHeader, TxnRequest,
};
use cairn_proto::v3electionpb::election_server::Election;
use cairn_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::{prefix, prefix_end, waiter_key, Abandon, Parts};
use crate::header::Header;
use crate::status::RequestError;
use crate::tracked::Tracker;

/// The Election service of one node.
pub(crate) struct ElectionService {
    parts: Parts,
    header: Header,
    tracker: Tracker,
}

impl ElectionService {
    pub(crate) fn new(parts: Parts, header: Header, tracker: Tracker) -> Self {
        ElectionService {
            parts,
            header,
            tracker,
        }
    }

    fn current(&self) -> Option<ResponseHeader> {
        self.header.at(self.parts.store.revision())
    }

    /// A txn guarded by "`leader` still holds its key".
    fn as_leader(leader: &LeaderKey, op: Op) -> TxnRequest {
        TxnRequest {
            compare: vec![Compare {
                key: leader.key.clone(),
                target: CompareTarget::Create as i32,
                result: CompareResult::Equal as i32,
                target_union: Some(TargetUnion::CreateRevision(leader.rev)),
                ..Default::default()
            }],
            success: vec![RequestOp { request: Some(op) }],
            failure: vec![],
        }
    }

    async fn proclaim(&self, leader: &LeaderKey, value: Vec<u8>) -> Result<(), RequestError> {
        let put = Op::RequestPut(PutRequest {
            key: leader.key.clone(),
            value,
            ignore_lease: true,
            ..Default::default()
        });
        let resp = self.parts.txn(Self::as_leader(leader, put)).await?;
        if resp.succeeded {
            Ok(())
        } else {
            Err(RequestError::NotLeader)
        }
    }

    async fn campaign(&self, req: CampaignRequest) -> Result<CampaignResponse, RequestError> {
        if req.lease == 0 {
            return Err(RequestError::NoLease);
        }
        let key = waiter_key(&req.name, req.lease);
        let rev = self.parts.enqueue(&key, req.lease, &req.value).await?;
        let leader = LeaderKey {
            name: req.name.clone(),
            key: key.clone(),
            rev,
            lease: req.lease,
        };
        let abandon = Abandon::new(&self.parts, key.clone());
        // A campaign already queued with this lease takes the new value.
        if self
            .parts
            .get(&key)?
            .is_some_and(|kv| kv.value != req.value)
        {
            self.proclaim(&leader, req.value).await?;
        }
        self.parts.wait_turn(&prefix(&req.name), rev).await?;
        match self.parts.get(&key)? {
            Some(kv) if kv.create_revision == rev => {}
            _ => return Err(RequestError::SessionExpired),
        }
        abandon.keep();
        Ok(CampaignResponse {
            header: self.current(),
            leader: Some(leader),
        })
    }
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        Ok(Response::new(
            ElectionService::campaign(self, request.into_inner()).await?,
        ))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let req = request.into_inner();
        let leader = req.leader.ok_or(RequestError::MissingLeader)?;
        ElectionService::proclaim(self, &leader, req.value).await?;
        Ok(Response::new(ProclaimResponse {
            header: self.current(),
        }))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let name = request.into_inner().name;
        let (kv, _) = self
            .parts
            .first(&prefix(&name))
            .map_err(RequestError::from)?;
        let kv = kv.ok_or(RequestError::NoElectionLeader)?;
        Ok(Response::new(LeaderResponse {
            header: self.current(),
            kv: Some(kv),
        }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<ObserveStream>, Status> {
        let pfx = prefix(&request.into_inner().name);
        let (tx, rx) = mpsc::channel(16);
        let (parts, header, tracker) = (
            self.parts.clone(),
            self.header.clone(),
            self.tracker.clone(),
        );
        tokio::spawn(async move {
            let _tracker = tracker;
            let end = prefix_end(&pfx);
            // The (key, mod revision) of the leader last sent.
            let mut last = None;
            loop {
                let (kv, at) = match parts.first(&pfx) {
                    Ok(found) => found,
                    Err(e) => {
                        let _ = tx.send(Err(RequestError::from(e).into())).await;
                        return;
                    }
                };
                if let Some(kv) = kv {
                    let now = Some((kv.key.clone(), kv.mod_revision));
                    if now != last {
                        last = now;
                        let resp = LeaderResponse {
                            header: header.at(at),
                            kv: Some(kv),
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                }
                let changed = tokio::select! {
                    r = parts.wait_change(&pfx, &end, at + 1, false) => r,
                    () = tx.closed() => return,
                };
                if let Err(e) = changed {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            let item = rx.recv().await?;
            Some((item, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let leader = request
            .into_inner()
            .leader
            .ok_or(RequestError::MissingLeader)?;
        let delete = Op::RequestDeleteRange(DeleteRangeRequest {
            key: leader.key.clone(),
            ..Default::default()
        });
        // Not the leader (any more): nothing to resign, as etcd.
        let resp = self.parts.txn(Self::as_leader(&leader, delete)).await?;
        Ok(Response::new(ResignResponse {
            header: self.header.fill(resp.header),
        }))
    }
}
