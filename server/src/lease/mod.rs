//! Leases: the Lease service and the lessor that expires leases.
//!
//! - `lessor`: deadlines on the leader; expiry and checkpoints proposed
//!   through Raft.
//! - `service`: the gRPC Lease service.

mod lessor;
mod service;

pub(crate) use lessor::Lessor;
pub(crate) use service::LeaseService;
