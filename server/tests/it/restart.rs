//! A member restarted on its data dir comes back with the same data,
//! revisions and identity.

use std::collections::BTreeMap;

use cairn_server::{Config, Error, Node};
use etcd_client::GetOptions;

use crate::{client, start};

#[tokio::test]
async fn keys_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");

    let node = start(dir.path()).await;
    let ids = (node.member_id(), node.cluster_id());
    let mut c = client(&node).await;
    let mut written = BTreeMap::new();
    for i in 0..20 {
        let key = format!("key/{i:02}");
        let rev = c
            .put(key.clone(), format!("v{i}"), None)
            .await
            .expect("put")
            .header()
            .expect("header")
            .revision();
        written.insert(key.into_bytes(), rev);
    }
    c.delete("key/00", None).await.expect("delete");
    written.remove(&b"key/00"[..]);
    let revision = c
        .get("key/", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();
    drop(c);
    node.shutdown().await;

    let node = start(dir.path()).await;
    assert_eq!((node.member_id(), node.cluster_id()), ids, "same identity");
    let mut c = client(&node).await;
    let got = c
        .get("key/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get after restart");
    assert_eq!(got.header().expect("header").revision(), revision);
    let found: BTreeMap<Vec<u8>, i64> = got
        .kvs()
        .iter()
        .map(|kv| (kv.key().to_vec(), kv.mod_revision()))
        .collect();
    assert_eq!(found, written);

    // Writing goes on from the same revision.
    let next = c
        .put("after", "x", None)
        .await
        .expect("put")
        .header()
        .expect("header")
        .revision();
    assert_eq!(next, revision + 1);
    node.shutdown().await;
}

#[tokio::test]
async fn a_restart_ignores_the_bootstrap_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let ids = (node.member_id(), node.cluster_id());
    node.shutdown().await;

    // Flags that would derive other ids, and even fail the bootstrap checks.
    let mut config = Config::default_for_tests(dir.path());
    config.initial_cluster_token = "another-token".into();
    config.initial_cluster = Some("someone-else=http://127.0.0.1:1".parse().expect("valid"));
    let node = Node::start(config)
        .await
        .expect("restart ignores bootstrap flags");
    assert_eq!((node.member_id(), node.cluster_id()), ids);
    node.shutdown().await;
}

#[tokio::test]
async fn a_data_dir_in_use_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let err = Node::start(Config::default_for_tests(dir.path()))
        .await
        .expect_err("the storage is locked by the running node");
    assert!(matches!(err, Error::Storage(_)), "{err:?}");
    // The running node is unaffected.
    let mut c = client(&node).await;
    c.put("k", "v", None).await.expect("put");
    node.shutdown().await;
}

/// A damaged record in the Raft log refuses the start, names the file,
/// and leaves the log as it was.
#[tokio::test]
async fn a_damaged_log_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let mut c = client(&node).await;
    for i in 0..10 {
        c.put(format!("k{i}"), "v", None).await.expect("put");
    }
    drop(c);
    node.shutdown().await;

    let segment = dir.path().join("member/store/wal/0000000000000000.wal");
    let mut bytes = std::fs::read(&segment).expect("the log's first segment");
    // Inside the second record: the first is the segment's 10-byte header
    // record of the committed id.
    bytes[20] ^= 0xff;
    std::fs::write(&segment, &bytes).expect("damage it");

    let err = Node::start(Config::default_for_tests(dir.path()))
        .await
        .expect_err("a damaged log is refused");
    assert!(matches!(err, Error::Storage(_)), "{err:?}");
    let mut message = err.to_string();
    let mut cause = std::error::Error::source(&err);
    while let Some(e) = cause {
        message = format!("{message}: {e}");
        cause = e.source();
    }
    assert!(
        message.contains("corrupt data dir") && message.contains("0000000000000000.wal"),
        "{message}"
    );
    assert_eq!(std::fs::read(&segment).expect("still there"), bytes);
}
