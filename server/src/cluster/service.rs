//! etcd's `Cluster` gRPC service.

use std::sync::Arc;

use cairn_proto::etcdserverpb::cluster_server::Cluster;
use cairn_proto::etcdserverpb::{
    Member as ProtoMember, MemberAddRequest, MemberAddResponse, MemberListRequest,
    MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use super::{listed, Listed, MemberChange, MemberChanged, Membership};
use crate::header::Header;
use crate::read_index::ReadBarrier;
use crate::status::RequestError;
use crate::tracked::Tracker;

/// The Cluster service of one member.
#[derive(Clone)]
pub(crate) struct ClusterService {
    membership: Arc<Membership>,
    reads: ReadBarrier,
    header: Header,
    _tracker: Tracker,
}

impl ClusterService {
    pub(crate) fn new(
        membership: Arc<Membership>,
        reads: ReadBarrier,
        header: Header,
        tracker: Tracker,
    ) -> Self {
        ClusterService {
            membership,
            reads,
            header,
            _tracker: tracker,
        }
    }

    fn header(&self) -> Option<cairn_proto::etcdserverpb::ResponseHeader> {
        self.header.at(0)
    }

    async fn change(&self, change: MemberChange) -> Result<MemberChanged, Status> {
        Ok(self.membership.change(change).await?)
    }
}

fn proto(listed: &Listed) -> ProtoMember {
    ProtoMember {
        id: listed.id,
        name: listed.member.name.clone(),
        peer_ur_ls: listed.member.peer_urls.clone(),
        client_ur_ls: listed.member.client_urls.clone(),
        is_learner: listed.learner,
    }
}

fn protos(members: &[Listed]) -> Vec<ProtoMember> {
    members.iter().map(proto).collect()
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let request = request.into_inner();
        let changed = self
            .change(MemberChange::Add {
                peer_urls: request.peer_ur_ls,
                learner: request.is_learner,
            })
            .await?;
        Ok(Response::new(MemberAddResponse {
            header: self.header(),
            member: changed.member.as_ref().map(proto),
            members: protos(&changed.members),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let changed = self
            .change(MemberChange::Remove(request.into_inner().id))
            .await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(),
            members: protos(&changed.members),
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let request = request.into_inner();
        let changed = self
            .change(MemberChange::Update {
                id: request.id,
                peer_urls: request.peer_ur_ls,
            })
            .await?;
        Ok(Response::new(MemberUpdateResponse {
            header: self.header(),
            members: protos(&changed.members),
        }))
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if request.into_inner().linearizable {
            self.reads.wait().await.map_err(RequestError::from)?;
        }
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: protos(&listed(self.membership.raft())),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let changed = self
            .change(MemberChange::Promote(request.into_inner().id))
            .await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(),
            members: protos(&changed.members),
        }))
    }
}
