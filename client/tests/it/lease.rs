//! Leases: grant, time-to-live, list, revoke, and the keep-alive task.

use std::time::{Duration, Instant};

use cairn_client::{Error, KeepAliveState, LeaseId, LeaseLost, Put};

use crate::support::{Cluster, Flavor};

crate::both_flavors!(
    grant_list_time_to_live_revoke,
    keep_alive_outlives_the_ttl_and_reports_loss,
    keep_alive_survives_a_leader_kill,
    unreachable_cluster_loses_the_lease,
);

async fn grant_list_time_to_live_revoke(flavor: Flavor) {
    let cluster = Cluster::start(flavor, 1).await;
    let client = cluster.client().await;
    let lease = client.lease_grant(30, None).await.expect("grant");
    assert_eq!(lease.ttl, 30);
    client
        .put(Put::new("leased", "v").with_lease(lease.id))
        .await
        .expect("put");
    let ttl = client
        .lease_time_to_live(lease.id, true)
        .await
        .expect("ttl")
        .expect("the lease exists");
    assert_eq!((ttl.id, ttl.granted_ttl), (lease.id, 30));
    assert!(ttl.ttl > 0 && ttl.ttl <= 30, "{ttl:?}");
    assert_eq!(ttl.keys, [b"leased".to_vec()]);
    assert!(client.leases().await.expect("leases").contains(&lease.id));
    assert_eq!(
        client.get("leased").await.expect("get").kvs[0].lease,
        Some(lease.id)
    );
    assert!(client.lease_keep_alive_once(lease.id).await.expect("renew") > 0);

    let chosen = client
        .lease_grant(30, Some(LeaseId::new(0x7777)))
        .await
        .expect("grant with an id");
    assert_eq!(chosen.id, LeaseId::new(0x7777));
    let taken = client.lease_grant(30, Some(LeaseId::new(0x7777))).await;
    assert!(matches!(taken, Err(Error::LeaseExists)), "{taken:?}");

    client.lease_revoke(lease.id).await.expect("revoke");
    assert!(client.get("leased").await.expect("get").kvs.is_empty());
    assert_eq!(
        client
            .lease_time_to_live(lease.id, false)
            .await
            .expect("ttl"),
        None
    );
    let again = client.lease_revoke(lease.id).await;
    assert!(matches!(again, Err(Error::LeaseNotFound)), "{again:?}");
    let renew = client.lease_keep_alive_once(lease.id).await;
    assert!(matches!(renew, Err(Error::LeaseNotFound)), "{renew:?}");
    let keep = client.lease_keep_alive(lease.id).await;
    assert!(matches!(keep, Err(Error::LeaseNotFound)), "{keep:?}");
}

/// A 2 s lease kept alive outlives several TTLs while one left alone
/// expires; revoking the kept one is reported as lost.
async fn keep_alive_outlives_the_ttl_and_reports_loss(flavor: Flavor) {
    let cluster = Cluster::start(flavor, 1).await;
    let client = cluster.client().await;
    let kept = client.lease_grant(2, None).await.expect("grant");
    let alone = client.lease_grant(2, None).await.expect("grant");
    client
        .put(Put::new("kept", "v").with_lease(kept.id))
        .await
        .expect("put");
    client
        .put(Put::new("alone", "v").with_lease(alone.id))
        .await
        .expect("put");
    let mut keep_alive = client.lease_keep_alive(kept.id).await.expect("keep alive");

    // Until the unrenewed lease expires (the server's expiry loop adds
    // some slack), then 3 s more.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !client.get("alone").await.expect("get").kvs.is_empty() {
        assert!(Instant::now() < deadline, "an unrenewed lease expires");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(client.get("kept").await.expect("get").kvs.len(), 1);
    assert!(matches!(
        keep_alive.state(),
        KeepAliveState::Alive { ttl: 2 }
    ));

    client.lease_revoke(kept.id).await.expect("revoke");
    let lost = tokio::time::timeout(Duration::from_secs(5), keep_alive.lost())
        .await
        .expect("the loss is reported within a renewal interval");
    assert_eq!(lost, LeaseLost::NotFound);
    assert_eq!(
        keep_alive.state(),
        KeepAliveState::Lost(LeaseLost::NotFound)
    );
}

/// The keep-alive moves to another member when the leader dies, and the
/// lease (5 s) lives on under the new leader.
async fn keep_alive_survives_a_leader_kill(flavor: Flavor) {
    let mut cluster = Cluster::start(flavor, 3).await;
    let leader = cluster.leader().await;
    let mut endpoints = cluster.endpoints();
    endpoints.swap(0, leader);
    let client = cairn_client::Client::connect(&endpoints, Default::default())
        .await
        .expect("connect");
    let lease = client.lease_grant(5, None).await.expect("grant");
    client
        .put(Put::new("session", "v").with_lease(lease.id))
        .await
        .expect("put");
    let keep_alive = client.lease_keep_alive(lease.id).await.expect("keep alive");
    cluster.kill(leader).await;
    cluster.leader().await;
    // Longer than the TTL after the kill.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(
        matches!(keep_alive.state(), KeepAliveState::Alive { .. }),
        "{:?}",
        keep_alive.state()
    );
    let ttl = client
        .lease_time_to_live(lease.id, false)
        .await
        .expect("ttl")
        .expect("the lease lives");
    assert!(ttl.ttl > 0, "{ttl:?}");
    assert_eq!(client.get("session").await.expect("get").kvs.len(), 1);
}

/// With every member gone, the keep-alive reports the lease lost once its
/// TTL (counted from the last renewal sent) has run out, not before.
async fn unreachable_cluster_loses_the_lease(flavor: Flavor) {
    let mut cluster = Cluster::start(flavor, 1).await;
    let client = cluster.client().await;
    let lease = client.lease_grant(2, None).await.expect("grant");
    let mut keep_alive = client.lease_keep_alive(lease.id).await.expect("keep alive");
    let killed = Instant::now();
    cluster.kill(0).await;
    let lost = tokio::time::timeout(Duration::from_secs(10), keep_alive.lost())
        .await
        .expect("the loss is reported");
    assert_eq!(lost, LeaseLost::Unreachable);
    // The last renewal went out at most TTL/3 before the kill.
    assert!(
        killed.elapsed() >= Duration::from_millis(1300),
        "reported after {:?}, before the TTL could run out",
        killed.elapsed()
    );
}
