//! Lock and Election through the `etcd-client` crate.

use std::time::Duration;

use etcd_client::{LockOptions, ProclaimOptions, ResignOptions};

use crate::{client, start, status};

/// Waiters get the lock in order, only after the holder lets go; a waiter
/// whose lease expires while it waits is refused (etcd #11456); a request
/// without a lease is refused rather than left with a session of its own.
#[tokio::test]
async fn locks_are_exclusive_and_ordered() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let mut c = client(&node).await;
    let a = c.lease_grant(60, None).await.unwrap().id();
    let b = c.lease_grant(60, None).await.unwrap().id();
    let held = c
        .lock("job", Some(LockOptions::new().with_lease(a)))
        .await
        .unwrap();
    assert_eq!(held.key(), format!("job/{a:x}").as_bytes());

    let mut c2 = c.clone();
    let waiter =
        tokio::spawn(async move { c2.lock("job", Some(LockOptions::new().with_lease(b))).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "b got the lock while a holds it");
    c.unlock(held.key()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("b gets the lock once a lets go")
        .unwrap()
        .unwrap();
    assert_eq!(got.key(), format!("job/{b:x}").as_bytes());

    // A waiter whose lease ends while it waits is told, not granted.
    let short = c.lease_grant(2, None).await.unwrap().id();
    let mut c3 = c.clone();
    let waiter = tokio::spawn(async move {
        c3.lock("job", Some(LockOptions::new().with_lease(short)))
            .await
    });
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        // b still holds the lock; let the short lease expire, then let go.
        tokio::time::sleep(Duration::from_secs(4)).await;
        c.unlock(got.key()).await.unwrap();
        waiter.await.unwrap()
    })
    .await
    .expect("the waiter is answered");
    let s = status(refused.expect_err("an expired waiter must not get the lock"));
    assert_eq!(s.message(), "mutex: session is expired");

    let s = status(c.lock("job", None).await.unwrap_err());
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    // Nothing is left under the lock's prefix.
    let left = c
        .get("job/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(left.count(), 0, "{:?}", left.kvs());
    node.shutdown().await;
}

/// Campaign, Leader, Proclaim, Observe and Resign.
#[tokio::test]
async fn elections_follow_the_first_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let mut c = client(&node).await;
    let s = status(c.leader("e").await.unwrap_err());
    assert_eq!(s.message(), "election: no leader");

    let a = c.lease_grant(60, None).await.unwrap().id();
    let b = c.lease_grant(60, None).await.unwrap().id();
    let won = c.campaign("e", "a1", a).await.unwrap();
    let leader_a = won.leader().unwrap().clone();
    let mut observe = c.observe("e").await.unwrap();
    let first = observe.message().await.unwrap().unwrap();
    assert_eq!(first.kv().unwrap().value(), b"a1");

    let mut c2 = c.clone();
    let candidate_b = tokio::spawn(async move { c2.campaign("e", "b1", b).await });
    c.proclaim(
        "a2",
        Some(ProclaimOptions::new().with_leader(leader_a.clone())),
    )
    .await
    .unwrap();
    let seen = observe.message().await.unwrap().unwrap();
    assert_eq!(seen.kv().unwrap().value(), b"a2");
    let now = c.leader("e").await.unwrap();
    assert_eq!(now.kv().unwrap().value(), b"a2");
    assert!(!candidate_b.is_finished());

    c.resign(Some(ResignOptions::new().with_leader(leader_a.clone())))
        .await
        .unwrap();
    let won_b = tokio::time::timeout(Duration::from_secs(10), candidate_b)
        .await
        .expect("b leads once a resigns")
        .unwrap()
        .unwrap();
    assert_eq!(won_b.leader().unwrap().lease(), b);
    let seen = observe.message().await.unwrap().unwrap();
    assert_eq!(seen.kv().unwrap().value(), b"b1");
    // a no longer leads: its proclaim is refused.
    let s = status(
        c.proclaim("a3", Some(ProclaimOptions::new().with_leader(leader_a)))
            .await
            .unwrap_err(),
    );
    assert_eq!(s.message(), "election: not leader");
    node.shutdown().await;
}

/// A waiter whose client gives up deletes its key, though its lease lives
/// on: it leaves nothing queued behind the holder.
#[tokio::test]
async fn an_abandoned_waiter_leaves_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let mut c = client(&node).await;
    let a = c.lease_grant(60, None).await.unwrap().id();
    let b = c.lease_grant(60, None).await.unwrap().id();
    c.lock("job", Some(LockOptions::new().with_lease(a)))
        .await
        .unwrap();
    let mut c2 = c.clone();
    let waiter =
        tokio::spawn(async move { c2.lock("job", Some(LockOptions::new().with_lease(b))).await });
    let key = format!("job/{b:x}");
    // Queued behind a.
    let queued = async {
        while c.get(key.as_str(), None).await.unwrap().count() == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), queued)
        .await
        .expect("b queues");
    waiter.abort();
    let removed = async {
        while c.get(key.as_str(), None).await.unwrap().count() != 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), removed)
        .await
        .expect("the abandoned waiter's key is deleted");
    // Its lease is untouched.
    assert_eq!(
        c.lease_time_to_live(b, None).await.unwrap().granted_ttl(),
        60
    );
    node.shutdown().await;
}
