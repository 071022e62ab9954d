//! The NOSPACE alarm: a member over `--quota-backend-bytes` refuses puts,
//! txns that put and lease grants with etcd's error, and takes reads,
//! deletes, compaction and disarm; compact, defrag and disarm recover it,
//! losing nothing.

use cairn_client::{Error, Get, Put, Revision, Txn};

use crate::support::{self, cairnctl, run_program, ETCDCTL35};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nospace_then_recover_with_compact_defrag_and_disarm() {
    let root = tempfile::tempdir().expect("temp dir");
    let members = support::reserve(2, 1, root.path(), "q");
    let mut config = support::config(&members[0], &members, "quota");
    config.quota_backend_bytes = 256 * 1024;
    let node = cairn_server::Node::start(config).await.expect("starts");
    let client = support::client(&members).await;
    let ep = members[0].client_url();

    // Overwrite 20 keys until the quota is reached: the history fills it.
    let value = vec![b'x'; 1024];
    let mut refused = None;
    for i in 0..10_000 {
        match client
            .put(Put::new(format!("q/{:02}", i % 20), value.clone()))
            .await
        {
            Ok(_) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert!(matches!(refused, Some(Error::NoSpace)), "{refused:?}");

    // The alarm is raised, and listed.
    let member = format!(
        "{}",
        client
            .maintenance()
            .status()
            .await
            .expect("status")
            .header
            .member_id
            .get()
    );
    let list = cairnctl(&["--endpoints", &ep, "alarm", "list"]).await.ok();
    assert_eq!(list, format!("memberID:{member} alarm:NOSPACE\n"));

    // etcd's code and message, as etcdctl shows them.
    let put = run_program(ETCDCTL35, &["--endpoints", &ep, "put", "k", "v"], "").await;
    assert_eq!(put.code, 1);
    assert!(
        put.stderr
            .contains("code = ResourceExhausted desc = etcdserver: mvcc: database space exceeded"),
        "{put:?}"
    );
    let ours = cairnctl(&["--endpoints", &ep, "put", "k", "v"]).await;
    assert_eq!(
        (ours.code, ours.stderr.as_str()),
        (1, "Error: database space exceeded\n")
    );
    // Lease grants and txns that put are refused too; reads, read-only
    // txns and deletes are not.
    assert!(matches!(
        client.lease_grant(60, None).await,
        Err(Error::NoSpace)
    ));
    let txn = Txn::new().and_then([Put::new("t", "v").into()]);
    assert!(matches!(client.txn(txn).await, Err(Error::NoSpace)));
    let read_only = Txn::new().and_then([Get::one("q/00").into()]);
    client.txn(read_only).await.expect("a read-only txn");
    client
        .put(Put::new("gone", ""))
        .await
        .expect_err("still full");
    let before = client.get(Get::prefix("q/")).await.expect("reads work");
    assert_eq!(before.kvs.len(), 20);
    client
        .delete(cairn_client::Delete::one("never-there"))
        .await
        .expect("deletes work");

    // Recover: compact the history away, defragment, disarm.
    let status = |s: cairn_client::Status| s.db_size_in_use;
    let in_use = status(client.maintenance().status().await.expect("status"));
    let rev = before.header.revision.get();
    cairnctl(&[
        "--endpoints",
        &ep,
        "compaction",
        "--physical",
        &rev.to_string(),
    ])
    .await
    .ok();
    let defrag = cairnctl(&["--endpoints", &ep, "defrag"]).await.ok();
    assert!(
        defrag.starts_with("Finished defragmenting etcd member["),
        "{defrag}"
    );
    let after = status(client.maintenance().status().await.expect("status"));
    assert!(
        after * 4 < in_use,
        "compaction freed the history: {in_use} → {after}"
    );
    let disarmed = cairnctl(&["--endpoints", &ep, "alarm", "disarm"])
        .await
        .ok();
    assert_eq!(disarmed, format!("memberID:{member} alarm:NOSPACE\n"));
    assert_eq!(
        cairnctl(&["--endpoints", &ep, "alarm", "list"]).await.ok(),
        ""
    );

    // Writes are accepted again, and nothing was lost.
    client
        .put(Put::new("k", "v"))
        .await
        .expect("put after recovery");
    client
        .lease_grant(60, None)
        .await
        .expect("grant after recovery");
    let now = client
        .get(Get::prefix("q/").with_revision(Revision::new(rev)))
        .await
        .expect("read");
    assert_eq!(now.kvs, before.kvs, "every key and value as before");
    drop(client);
    node.shutdown().await;
}
