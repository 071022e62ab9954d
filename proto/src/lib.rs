//! The etcd v3 public API, as Rust types.
//!
//! Cairn speaks etcd's gRPC protocol so that etcdctl, Go `clientv3`, the
//! `etcd-client` crate and other etcd clients work against it unchanged.
//! This crate is that protocol and nothing else: the messages as prost
//! structs and, with the `grpc` feature (on by default), the tonic client and
//! server for every service.
//!
//! # Layout
//!
//! - `proto/etcd/api/**.proto`: the protocol, written by hand for Cairn.
//! - `build.rs`: compiles them with protox (no system `protoc`) and
//!   tonic-prost-build into one file per proto package in `OUT_DIR`.
//! - One module per proto package, all siblings at the crate root because
//!   the generated code refers to other packages as `super::<package>`:
//!   - [`mvccpb`]: `KeyValue` and watch `Event`;
//!   - [`authpb`]: users, roles and permissions as stored;
//!   - [`etcdserverpb`]: the KV, Watch, Lease, Cluster, Maintenance and
//!     Auth services;
//!   - [`v3electionpb`]: the Election service;
//!   - [`v3lockpb`]: the Lock service;
//!   - [`cairnpeer`]: Cairn's own peer protocol, which is not etcd's and is
//!     exempt from the wire-identity invariant below.
//!
//! Service modules follow tonic's naming, e.g.
//! `etcdserverpb::kv_client::KvClient` and `etcdserverpb::kv_server::Kv`.
//! Proto field names are kept as etcd spells them, so prost's snake_case
//! turns a few into odd Rust names (`peerURLs` becomes `peer_ur_ls`, `TTL`
//! becomes `ttl`).
//!
//! # Invariants
//!
//! - **Wire-identical to etcd v3.** Package, service and method names (and
//!   so the gRPC paths such as `/etcdserverpb.KV/Range`), field numbers,
//!   field types and enum values match etcd v3.5, plus the fields v3.6 added.
//!   Never renumber or retype a field here; add new ones only when etcd does.
//!   The one exception is `StatusResponse.cairnVersion` (field 1001, far
//!   above etcd's numbers), which etcd clients skip as an unknown field.
//! - **No logic.** Nothing here validates, converts or interprets a message.
//!   Translating etcd's sentinels (`0` for "no lease", `<= 0` for "latest
//!   revision") into Rust types happens at the server's gRPC edge.
//! - **Without `grpc`, no tonic.** `--no-default-features` builds only the
//!   prost messages, for users that encode etcd types without a gRPC stack.

/// Key-value records and watch events (`mvccpb`).
#[allow(clippy::all, missing_docs)]
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}

/// Users, roles and permissions (`authpb`).
#[allow(clippy::all, missing_docs)]
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
}

/// The core etcd services and their messages (`etcdserverpb`).
#[allow(clippy::all, missing_docs)]
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

/// The Election service (`v3electionpb`).
#[allow(clippy::all, missing_docs)]
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
}

/// The Lock service (`v3lockpb`).
#[allow(clippy::all, missing_docs)]
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
}

/// Cairn's private peer protocol (`cairnpeer`): replication, elections,
/// snapshots and requests forwarded to the leader. Not part of etcd's API;
/// only Cairn members speak it, on their peer URLs.
#[allow(clippy::all, missing_docs)]
pub mod cairnpeer {
    include!(concat!(env!("OUT_DIR"), "/cairnpeer.rs"));
}
