//! Compiles the .proto files under `proto/` into Rust: etcd's public API,
//! and Cairn's private peer protocol.
//!
//! protox parses the files in-process, so no system `protoc` is needed;
//! tonic-prost-build turns the descriptors into prost messages and, with the
//! `grpc` feature, tonic clients and servers. One `<package>.rs` per proto
//! package lands in `OUT_DIR`, where `src/lib.rs` includes it.

use std::error::Error;

/// Include root; import paths in the .proto files are relative to it.
const PROTO_ROOT: &str = "proto";

/// Every file to compile. Imports are found through `PROTO_ROOT`, but each
/// package is listed so that none is skipped if an import is removed.
const PROTO_FILES: &[&str] = &[
    "proto/etcd/api/mvccpb/kv.proto",
    "proto/etcd/api/authpb/auth.proto",
    "proto/etcd/api/etcdserverpb/rpc.proto",
    "proto/etcd/api/v3election/v3electionpb/v3election.proto",
    "proto/etcd/api/v3lock/v3lockpb/v3lock.proto",
    "proto/cairn/peer/peer.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    println!("cargo:rerun-if-changed=build.rs");

    // Cargo sets CARGO_FEATURE_<NAME> for each enabled feature of this package.
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();

    let fds = protox::compile(PROTO_FILES, [PROTO_ROOT])?;
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .compile_fds(fds)?;
    Ok(())
}
