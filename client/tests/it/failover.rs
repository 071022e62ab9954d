//! Balancing, failover and the retry policy's outcomes.

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use cairn_client::{Client, ConnectOptions, Error, Get, Put, Revision};

use crate::support::{Cluster, Flavor};

crate::both_flavors!(
    unsent_writes_fail_over_exactly_once,
    nothing_reachable_is_unavailable_not_ambiguous,
    quorum_loss_refuses_writes_with_no_leader,
    lost_answers_are_ambiguous_and_never_resent,
);

/// A client URL nothing listens on: a port bound a moment ago, released.
fn dead_endpoint() -> String {
    let listener = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 40), 0)).expect("bind");
    let port = listener.local_addr().expect("bound").port();
    format!("http://127.0.0.40:{port}")
}

/// Half the endpoints refuse connections: every write is sent again to
/// the live one, and applied exactly once (each put raises the revision
/// by exactly one).
async fn unsent_writes_fail_over_exactly_once(flavor: Flavor) {
    let cluster = Cluster::start(flavor, 1).await;
    let endpoints = [dead_endpoint(), cluster.endpoint(0)];
    let client = Client::connect(&endpoints, ConnectOptions::default())
        .await
        .expect("connect");
    for i in 0..10i64 {
        let put = client
            .put(Put::new("k", format!("{i}")))
            .await
            .expect("put fails over");
        assert_eq!(put.header.revision, Revision::new(2 + i), "applied once");
        let got = client.get("k").await.expect("get fails over");
        assert_eq!(got.kvs[0].version, i + 1);
    }
}

/// With no server reachable, a write is [`Error::Unavailable`]: it never
/// left the process, so it is certainly not applied. It is retried until
/// the deadline.
async fn nothing_reachable_is_unavailable_not_ambiguous(_flavor: Flavor) {
    let timeout = Duration::from_millis(800);
    let client = Client::connect(
        [dead_endpoint(), dead_endpoint()],
        ConnectOptions::default().with_request_timeout(timeout),
    )
    .await
    .expect("connect is lazy");
    let started = Instant::now();
    let put = client.put(Put::new("k", "v")).await;
    assert!(matches!(put, Err(Error::Unavailable { .. })), "{put:?}");
    assert!(started.elapsed() >= timeout, "retried until the deadline");
    let get = client.get("k").await;
    assert!(matches!(get, Err(Error::Unavailable { .. })), "{get:?}");
}

/// Two of three members die, the leader survives. Once it knows it has no
/// quorum (an election timeout without one: etcd's CheckQuorum), a write
/// or a linearizable read through it is refused with "no leader" (the
/// client's `hasleader` metadata): not ambiguous, and not applied.
async fn quorum_loss_refuses_writes_with_no_leader(flavor: Flavor) {
    let mut cluster = Cluster::start(flavor, 3).await;
    let client = cluster.client().await;
    client.put(Put::new("k", "before")).await.expect("put");
    let survivor = cluster.leader().await;
    for i in (0..3).filter(|&i| i != survivor) {
        cluster.kill(i).await;
    }
    let lone = Client::connect(
        [cluster.endpoint(survivor)],
        ConnectOptions::default().with_request_timeout(Duration::from_secs(1)),
    )
    .await
    .expect("connect");
    let stepped_down = wait_for_no_leader(&lone, Duration::from_secs(5)).await;
    assert!(stepped_down, "the leader steps down without a quorum");
    let put = lone.put(Put::new("k", "during")).await;
    assert!(matches!(put, Err(Error::NoLeader)), "{put:?}");
    let get = lone.get("k").await;
    assert!(matches!(get, Err(Error::NoLeader)), "{get:?}");
    // A serializable read needs no leader.
    let stale = lone
        .get(Get::one("k").with_serializable())
        .await
        .expect("serializable read");
    assert_eq!(stale.kvs[0].value, b"before");
}

/// Polls `client`'s member until it names no leader; false after `limit`.
async fn wait_for_no_leader(client: &Client, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let status = client.maintenance().status().await.expect("status");
        if status.leader.is_none() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A txn reaches the server, which applies it, and the answer is lost with
/// the connection. The client must not send it again to its other
/// endpoint (etcd #18424): the outcome is [`Error::Ambiguous`], and the
/// txn is applied exactly once. A read through the same failure is simply
/// retried.
async fn lost_answers_are_ambiguous_and_never_resent(flavor: Flavor) {
    let cluster = Cluster::start(flavor, 1).await;
    let proxy = crate::support::Proxy::start(&cluster.endpoint(0)).await;
    let client = Client::connect(
        [proxy.url().to_owned(), cluster.endpoint(0)],
        ConnectOptions::default().with_request_timeout(Duration::from_secs(3)),
    )
    .await
    .expect("connect");
    // Round-robin: these go to the proxy, then direct, so the proxied
    // connection is up and the next request goes through it.
    client.get("warm-up").await.expect("get");
    client.get("warm-up").await.expect("get");
    proxy.swallow_responses();
    let cutter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.cut();
        proxy
    });
    let txn = cairn_client::Txn::new()
        .when([cairn_client::Compare::version(
            "t",
            cairn_client::CompareOp::Equal,
            0,
        )])
        .and_then([Put::new("t", "once").into()])
        .or_else([Put::new("t", "twice").into()]);
    let outcome = client.txn(txn).await;
    assert!(
        matches!(outcome, Err(Error::Ambiguous { .. })),
        "{outcome:?}"
    );
    let _proxy = cutter.await.expect("cutter");
    let stored = client.get("t").await.expect("get");
    assert_eq!(stored.kvs[0].value, b"once", "applied, and exactly once");
    assert_eq!(stored.kvs[0].version, 1);
}
