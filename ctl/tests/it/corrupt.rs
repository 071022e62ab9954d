//! The periodic corruption check: a member whose data was changed behind
//! Raft's back is found by the leader's HashKV comparison, the CORRUPT
//! alarm is raised for it, and the cluster refuses writes with etcd's
//! error until it is disarmed.

use std::time::{Duration, Instant};

use cairn_client::{Error, Put};

use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_diverged_member_raises_corrupt() {
    let root = tempfile::tempdir().expect("temp dir");
    let members = support::reserve(3, 3, root.path(), "c");
    let config = |i: usize| {
        let mut c = support::config(&members[i], &members, "corrupt");
        c.experimental_corrupt_check_time = Duration::from_millis(300);
        c
    };
    let starts = (0..3).map(|i| cairn_server::Node::start(config(i)));
    let mut nodes: Vec<Option<cairn_server::Node>> = futures::future::join_all(starts)
        .await
        .into_iter()
        .map(|r| Some(r.expect("starts")))
        .collect();
    let client = support::client(&members).await;
    for i in 0..20 {
        client
            .put(Put::new(format!("k{i}"), "v"))
            .await
            .expect("put");
    }
    // Every member has applied everything: their hashes agree.
    let status = client.maintenance().status().await.expect("status");
    let leader = status.leader.expect("a leader").get();
    let victim = (0..3)
        .find(|&i| {
            let ids = members[i].data_dir.join("member/id");
            let text = std::fs::read_to_string(ids).expect("id file");
            !text.contains(&format!("member_id={leader:x}\n"))
        })
        .expect("a follower");
    let all: Vec<_> = members.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match support::hashkv(&all, 21).await {
            Ok(h) => {
                assert!(h.iter().all(|x| *x == h[0]), "healthy members agree: {h:?}");
                break;
            }
            Err(out) => assert!(Instant::now() < deadline, "hashkv: {out:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Change one value on the follower's disk, behind Raft's back.
    nodes[victim].take().expect("running").shutdown().await;
    {
        let path = members[victim].data_dir.join("member/store/db");
        let deadline = Instant::now() + Duration::from_secs(5);
        let db = loop {
            match sled::open(&path) {
                Ok(db) => break db,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("open {}: {e}", path.display()),
            }
        };
        let tree = db.open_tree("mvcc").expect("tree");
        let (k, mut v) = tree
            .scan_prefix(b"r")
            .next()
            .expect("a record")
            .map(|(k, v)| (k, v.to_vec()))
            .expect("read");
        // The value's last byte is in the value field: still a KeyValue.
        let last = v.len() - 1;
        v[last] ^= 0x20;
        tree.insert(k, v).expect("tampered");
        db.flush().expect("flushed");
    }
    nodes[victim] = Some(
        cairn_server::Node::start(config(victim))
            .await
            .expect("restarts"),
    );

    // The leader notices, and the cluster stops taking writes.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alarms = client.maintenance().alarms().await.expect("alarms");
        if alarms
            .iter()
            .any(|a| a.kind == cairn_client::AlarmKind::Corrupt)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no CORRUPT alarm within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = client.put(Put::new("after", "v")).await;
    assert!(matches!(refused, Err(Error::Corrupt)), "{refused:?}");
    client
        .get(cairn_client::Get::one("k1"))
        .await
        .expect("reads go on");
    drop(client);
    for n in nodes.into_iter().flatten() {
        n.shutdown().await;
    }
}
