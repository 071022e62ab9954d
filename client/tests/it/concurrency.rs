//! Locks, elections and sessions.

use std::time::{Duration, Instant};

use cairn_client::{Client, Session};
use futures::StreamExt;

use crate::support::{Cluster, Flavor};

crate::both_flavors!(lock_waits_for_its_turn, election_and_observe);

/// How long a test waits for something that should happen.
const WAIT: Duration = Duration::from_secs(10);

async fn wait_until_gone(client: &Client, key: &[u8]) {
    let deadline = Instant::now() + WAIT;
    while !client.get(key.to_vec()).await.expect("get").kvs.is_empty() {
        assert!(Instant::now() < deadline, "{key:?} is still there");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn lock_waits_for_its_turn(flavor: Flavor) {
    let cluster = Cluster::start(flavor, 1).await;
    let client = cluster.client().await;
    let first = Session::new(&client, 10).await.expect("session");
    let second = Session::new(&client, 10).await.expect("session");
    let held = client.lock("jobs/lock", &first).await.expect("lock");
    assert!(held.key.starts_with(b"jobs/lock/"));

    let waiter = {
        let client = client.clone();
        let lease = second.lease_id();
        tokio::spawn(async move {
            let lock = client.lock("jobs/lock", &second).await;
            (lock, second, lease)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiter.is_finished(),
        "the second lock waits while the first is held"
    );

    client.unlock(&held).await.expect("unlock");
    let (lock, second, lease) = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("the waiter gets the lock")
        .expect("task");
    let second_key = lock.expect("lock").key;
    let owner = client.get(second_key.clone()).await.expect("get");
    assert_eq!(owner.kvs[0].lease, Some(lease));

    // Dropping a session revokes its lease, which releases its lock.
    drop(second);
    wait_until_gone(&client, &second_key).await;
    assert_eq!(
        client.lease_time_to_live(lease, false).await.expect("ttl"),
        None
    );
    first.close().await.expect("close");
}

async fn election_and_observe(flavor: Flavor) {
    let cluster = Cluster::start(flavor, 1).await;
    let client = cluster.client().await;
    assert_eq!(client.leader("election").await.expect("leader"), None);

    let alice = Session::new(&client, 10).await.expect("session");
    let bob = Session::new(&client, 10).await.expect("session");
    let leader = client
        .campaign("election", "alice", &alice)
        .await
        .expect("campaign");
    assert_eq!(leader.lease, alice.lease_id());
    let current = client
        .leader("election")
        .await
        .expect("leader")
        .expect("a leader");
    assert_eq!(current.value, b"alice");

    let observed = client.observe("election").await.expect("observe");
    let mut observed = std::pin::pin!(observed);
    let first = tokio::time::timeout(WAIT, observed.next())
        .await
        .expect("observe answers")
        .expect("stream")
        .expect("leader");
    assert_eq!(first.value, b"alice");

    client.proclaim(&leader, "alice-2").await.expect("proclaim");
    let proclaimed = tokio::time::timeout(WAIT, observed.next())
        .await
        .expect("observe answers")
        .expect("stream")
        .expect("leader");
    assert_eq!(proclaimed.value, b"alice-2");

    let challenger = {
        let client = client.clone();
        tokio::spawn(async move {
            let won = client.campaign("election", "bob", &bob).await;
            (won, bob)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!challenger.is_finished(), "bob waits while alice leads");
    client.resign(leader.clone()).await.expect("resign");
    let (won, bob) = tokio::time::timeout(WAIT, challenger)
        .await
        .expect("bob wins")
        .expect("task");
    let bob_leader = won.expect("campaign");
    let next = tokio::time::timeout(WAIT, observed.next())
        .await
        .expect("observe answers")
        .expect("stream")
        .expect("leader");
    assert_eq!(next.value, b"bob");

    // A resigned leader can no longer proclaim.
    let stale = client.proclaim(&leader, "alice-3").await;
    assert!(
        matches!(stale, Err(cairn_client::Error::ElectionNotLeader)),
        "{stale:?}"
    );
    client.resign(bob_leader).await.expect("resign");
    bob.close().await.expect("close");
    alice.close().await.expect("close");
}
