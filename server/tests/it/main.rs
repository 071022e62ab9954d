//! Integration tests: nodes started in-process on 127.0.0.1 port 0, driven
//! with the `etcd-client` crate as any etcd user would, and clusters of
//! server processes on 127.0.0.x (`cluster`).

mod cluster;
mod concurrency;
mod crash;
mod defrag;
mod differential;
mod etcdctl;
mod kv;
mod options;
mod restart;
mod support;
mod watch;

use std::path::Path;

use cairn_server::{Config, Node};
use etcd_client::Client;

/// Starts a single-member node with its data in `dir`.
async fn start(dir: &Path) -> Node {
    Node::start(Config::default_for_tests(dir))
        .await
        .expect("node starts")
}

/// An etcd client connected to `node`'s first client address.
async fn client(node: &Node) -> Client {
    let addr = node.client_addrs()[0];
    Client::connect([format!("http://{addr}")], None)
        .await
        .expect("client connects")
}

/// The gRPC status inside an etcd-client error.
fn status(e: etcd_client::Error) -> tonic::Status {
    match e {
        etcd_client::Error::GRpcStatus(s) => s,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}
