//! Membership, discovery, status, leader transfer and the maintenance
//! calls.

use std::time::{Duration, Instant};

use cairn_client::{Client, ConnectOptions, Error};

use crate::support::{Cluster, Flavor};

crate::both_flavors!(members_discovery_status_and_move_leader, maintenance_calls,);

/// Retries `call` while the cluster refuses membership changes for now.
async fn retry_unhealthy<T, F, Fut>(mut call: F) -> cairn_client::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = cairn_client::Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match call().await {
            Err(Error::UnhealthyCluster) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

async fn members_discovery_status_and_move_leader(flavor: Flavor) {
    let mut cluster = Cluster::start(flavor, 3).await;
    let leader = cluster.leader().await;

    // Discovery: one endpoint given, all three found.
    let client = Client::connect(
        [cluster.endpoint(1)],
        ConnectOptions::default().with_discovery(true),
    )
    .await
    .expect("connect with discovery");
    let mut found = client.endpoints();
    found.sort();
    let mut all = cluster.endpoints();
    all.sort();
    assert_eq!(found, all);

    let list = client.member_list().await.expect("member list");
    let mut names: Vec<&str> = list.members.iter().map(|m| m.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["m0", "m1", "m2"]);
    assert!(list.members.iter().all(|m| !m.is_learner));

    // Status: each member describes itself; exactly one leads.
    let mut leaders = Vec::new();
    for (i, endpoint) in cluster.endpoints().iter().enumerate() {
        let status = client
            .maintenance_at(endpoint)
            .expect("endpoint")
            .status()
            .await
            .expect("status");
        assert_eq!(status.header.member_id, cluster.member_id(i));
        assert!(!status.version.is_empty());
        if status.is_leader() {
            leaders.push(i);
        }
    }
    assert_eq!(leaders, [leader]);

    // Leadership moves by hand.
    let target = (leader + 1) % 3;
    client
        .move_leader(cluster.member_id(target))
        .await
        .expect("move leader");
    assert_eq!(cluster.leader().await, target);
    let not_leader = client
        .maintenance_at(&cluster.endpoint(leader))
        .expect("endpoint")
        .move_leader(cluster.member_id(leader))
        .await;
    assert!(
        matches!(not_leader, Err(Error::NotLeader)),
        "{not_leader:?}"
    );

    // A learner that never starts: added, updated, refused promotion,
    // removed.
    let added = retry_unhealthy(|| client.member_add(["http://127.0.0.40:1"], true))
        .await
        .expect("member add");
    assert!(added.member.is_learner);
    assert_eq!(added.members.len(), 4);
    let updated = client
        .member_update(added.member.id, ["http://127.0.0.40:2"])
        .await
        .expect("member update");
    let learner = updated
        .members
        .iter()
        .find(|m| m.id == added.member.id)
        .expect("the learner is listed");
    assert_eq!(learner.peer_urls, ["http://127.0.0.40:2"]);
    let promote = client.member_promote(added.member.id).await;
    assert!(
        matches!(promote, Err(Error::LearnerNotReady)),
        "{promote:?}"
    );
    let removed = retry_unhealthy(|| client.member_remove(added.member.id))
        .await
        .expect("member remove");
    assert_eq!(removed.members.len(), 3);
    let gone = client.member_remove(added.member.id).await;
    assert!(matches!(gone, Err(Error::MemberNotFound)), "{gone:?}");
}

/// Alarm, Defragment, HashKV and Snapshot: both serve them alike (the
/// snapshot's content differs; its envelope, which etcdctl checks, does not).
async fn maintenance_calls(flavor: Flavor) {
    let cluster = Cluster::start(flavor, 1).await;
    let client = cluster.client().await;
    client
        .put(cairn_client::Put::new("k", "v"))
        .await
        .expect("put");
    let maintenance = client.maintenance();
    let alarms = maintenance.alarms().await;
    let defrag = maintenance.defragment().await;
    let hash = maintenance.hash_kv(None).await;
    let mut snapshot = Vec::new();
    let snap = maintenance.snapshot(&mut snapshot).await;
    assert_eq!(alarms.expect("alarms"), []);
    defrag.expect("defragment");
    let hash = hash.expect("hash kv");
    let again = maintenance.hash_kv(None).await.expect("hash kv");
    assert_eq!(hash.hash, again.hash, "nothing changed in between");
    let bytes = snap.expect("snapshot");
    assert_eq!(bytes, snapshot.len() as u64);
    // etcdctl's check: a multiple of 512 plus a 32-byte SHA-256.
    assert_eq!(bytes % 512, 32, "{bytes} bytes");
}
