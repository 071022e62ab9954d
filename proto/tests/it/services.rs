//! gRPC paths and call shapes in the generated code. The path is what goes
//! on the wire, so it must be etcd's `/<package>.<Service>/<Method>`.

/// Generated code per package, read at compile time from `OUT_DIR`.
const ETCDSERVERPB: &str = include_str!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
#[cfg(feature = "grpc")]
const V3ELECTIONPB: &str = include_str!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
#[cfg(feature = "grpc")]
const V3LOCKPB: &str = include_str!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));

#[cfg(feature = "grpc")]
#[test]
fn every_etcd_method_has_a_client_and_a_server_path() {
    let paths: &[(&str, &[&str])] = &[
        (
            ETCDSERVERPB,
            &[
                "/etcdserverpb.KV/Range",
                "/etcdserverpb.KV/Put",
                "/etcdserverpb.KV/DeleteRange",
                "/etcdserverpb.KV/Txn",
                "/etcdserverpb.KV/Compact",
                "/etcdserverpb.Watch/Watch",
                "/etcdserverpb.Lease/LeaseGrant",
                "/etcdserverpb.Lease/LeaseRevoke",
                "/etcdserverpb.Lease/LeaseKeepAlive",
                "/etcdserverpb.Lease/LeaseTimeToLive",
                "/etcdserverpb.Lease/LeaseLeases",
                "/etcdserverpb.Cluster/MemberAdd",
                "/etcdserverpb.Cluster/MemberRemove",
                "/etcdserverpb.Cluster/MemberUpdate",
                "/etcdserverpb.Cluster/MemberList",
                "/etcdserverpb.Cluster/MemberPromote",
                "/etcdserverpb.Maintenance/Alarm",
                "/etcdserverpb.Maintenance/Status",
                "/etcdserverpb.Maintenance/Defragment",
                "/etcdserverpb.Maintenance/Hash",
                "/etcdserverpb.Maintenance/HashKV",
                "/etcdserverpb.Maintenance/Snapshot",
                "/etcdserverpb.Maintenance/MoveLeader",
                "/etcdserverpb.Maintenance/Downgrade",
                "/etcdserverpb.Auth/AuthEnable",
                "/etcdserverpb.Auth/AuthDisable",
                "/etcdserverpb.Auth/AuthStatus",
                "/etcdserverpb.Auth/Authenticate",
                "/etcdserverpb.Auth/UserAdd",
                "/etcdserverpb.Auth/UserGet",
                "/etcdserverpb.Auth/UserList",
                "/etcdserverpb.Auth/UserDelete",
                "/etcdserverpb.Auth/UserChangePassword",
                "/etcdserverpb.Auth/UserGrantRole",
                "/etcdserverpb.Auth/UserRevokeRole",
                "/etcdserverpb.Auth/RoleAdd",
                "/etcdserverpb.Auth/RoleGet",
                "/etcdserverpb.Auth/RoleList",
                "/etcdserverpb.Auth/RoleDelete",
                "/etcdserverpb.Auth/RoleGrantPermission",
                "/etcdserverpb.Auth/RoleRevokePermission",
            ],
        ),
        (
            V3ELECTIONPB,
            &[
                "/v3electionpb.Election/Campaign",
                "/v3electionpb.Election/Proclaim",
                "/v3electionpb.Election/Leader",
                "/v3electionpb.Election/Observe",
                "/v3electionpb.Election/Resign",
            ],
        ),
        (V3LOCKPB, &["/v3lockpb.Lock/Lock", "/v3lockpb.Lock/Unlock"]),
    ];
    for (code, paths) in paths {
        for path in *paths {
            // Once in the client's request and once in the server's router.
            let quoted = format!("\"{path}\"");
            assert_eq!(code.matches(&quoted).count(), 2, "{path}");
        }
    }
}

#[cfg(feature = "grpc")]
#[test]
fn streaming_methods_have_etcd_shapes() {
    // The server trait has an associated stream type exactly for the methods
    // that stream responses.
    for stream in ["WatchStream", "LeaseKeepAliveStream", "SnapshotStream"] {
        assert!(
            ETCDSERVERPB.contains(&format!("type {stream}:")),
            "{stream}"
        );
    }
    assert!(V3ELECTIONPB.contains("type ObserveStream:"));
    // Watch and LeaseKeepAlive also stream requests.
    for request in ["WatchRequest", "LeaseKeepAliveRequest"] {
        let streaming = format!("tonic::Request<tonic::Streaming<super::{request}>>");
        assert!(ETCDSERVERPB.contains(&streaming), "{request}");
    }
}

#[cfg(not(feature = "grpc"))]
#[test]
fn without_grpc_no_service_code_is_generated() {
    assert!(!ETCDSERVERPB.contains("tonic"));
}
