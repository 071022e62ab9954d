//! The KV service against etcd's semantics.

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use tonic::Code;

use crate::{client, start, status};

#[tokio::test]
async fn put_get_delete_and_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let mut c = client(&node).await;

    // An empty store is at revision 1; the first write makes revision 2.
    let put = c.put("a", "1", None).await.expect("put");
    let header = put.header().expect("header");
    assert_eq!(header.revision(), 2);
    assert_eq!(header.member_id(), node.member_id());
    assert_eq!(header.cluster_id(), node.cluster_id());
    assert!(header.raft_term() >= 1);

    let put = c
        .put("a", "2", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put with prev_kv");
    assert_eq!(put.header().expect("header").revision(), 3);
    let prev = put.prev_key().expect("prev_kv");
    assert_eq!(prev.value(), b"1");
    assert_eq!(prev.mod_revision(), 2);

    let got = c.get("a", None).await.expect("get");
    assert_eq!(got.count(), 1);
    let kv = &got.kvs()[0];
    assert_eq!(
        (
            kv.value(),
            kv.create_revision(),
            kv.mod_revision(),
            kv.version()
        ),
        (&b"2"[..], 2, 3, 2)
    );

    // Serializable reads skip the read barrier but see the same data here.
    let got = c
        .get("a", Some(GetOptions::new().with_serializable()))
        .await
        .expect("serializable get");
    assert_eq!(got.kvs()[0].value(), b"2");

    let del = c
        .delete("a", Some(DeleteOptions::new().with_prev_key()))
        .await
        .expect("delete");
    assert_eq!(del.deleted(), 1);
    assert_eq!(del.prev_kvs()[0].value(), b"2");
    assert_eq!(del.header().expect("header").revision(), 4);
    assert_eq!(c.get("a", None).await.expect("get").count(), 0);

    // A delete of nothing changes nothing, so the revision stays.
    let del = c.delete("a", None).await.expect("delete");
    assert_eq!(
        (del.deleted(), del.header().expect("header").revision()),
        (0, 4)
    );

    node.shutdown().await;
}

#[tokio::test]
async fn limit_count_and_more() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let mut c = client(&node).await;
    for k in ["p/1", "p/2", "p/3", "q"] {
        c.put(k, "v", None).await.expect("put");
    }
    let got = c
        .get("p/", Some(GetOptions::new().with_prefix().with_limit(2)))
        .await
        .expect("get");
    assert_eq!(got.count(), 3, "count ignores limit");
    assert!(got.more());
    let keys: Vec<&[u8]> = got.kvs().iter().map(|kv| kv.key()).collect();
    assert_eq!(keys, [&b"p/1"[..], b"p/2"]);

    let all = c
        .get("p/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    assert_eq!((all.count(), all.more(), all.kvs().len()), (3, false, 3));
    node.shutdown().await;
}

#[tokio::test]
async fn txn_compare_on_mod_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let mut c = client(&node).await;
    let rev = c
        .put("k", "v1", None)
        .await
        .expect("put")
        .header()
        .expect("header")
        .revision();

    let swap = |expected: i64, value: &str| {
        Txn::new()
            .when([Compare::mod_revision("k", CompareOp::Equal, expected)])
            .and_then([TxnOp::put("k", value, None)])
            .or_else([TxnOp::get("k", None)])
    };

    let won = c.txn(swap(rev, "v2")).await.expect("txn");
    assert!(won.succeeded());
    assert_eq!(won.header().expect("header").revision(), rev + 1);

    // The same compare now fails: the failure branch reads, and a
    // read-only txn does not raise the revision.
    let lost = c.txn(swap(rev, "v3")).await.expect("txn");
    assert!(!lost.succeeded());
    assert_eq!(lost.header().expect("header").revision(), rev + 1);
    match &lost.op_responses()[..] {
        [TxnOpResponse::Get(get)] => assert_eq!(get.kvs()[0].value(), b"v2"),
        other => panic!("expected one get response, got {other:?}"),
    }

    let dup = Txn::new().and_then([TxnOp::put("x", "1", None), TxnOp::put("x", "2", None)]);
    let err = status(c.txn(dup).await.expect_err("duplicate keys are refused"));
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "etcdserver: duplicate key given in txn request"
    );
    node.shutdown().await;
}

/// A txn that only reads is a read, as on etcd: it adds no Raft entry
/// (Status's raft index stays), sees the latest write, and a txn that
/// writes adds one.
#[tokio::test]
async fn a_read_only_txn_is_not_logged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let mut c = client(&node).await;
    c.put("r", "1", None).await.expect("put");
    let raft_index =
        async |c: &mut etcd_client::Client| c.status().await.expect("status").raft_index();
    let before = raft_index(&mut c).await;

    let read = Txn::new()
        .when([Compare::version("r", CompareOp::Equal, 1)])
        .and_then([TxnOp::get("r", None)])
        .or_else([TxnOp::get("missing", None)]);
    let answer = c.txn(read).await.expect("read-only txn");
    assert!(answer.succeeded());
    match &answer.op_responses()[..] {
        [TxnOpResponse::Get(get)] => assert_eq!(get.kvs()[0].value(), b"1"),
        other => panic!("expected one get response, got {other:?}"),
    }
    assert_eq!(raft_index(&mut c).await, before);

    let write = Txn::new().and_then([TxnOp::put("r", "2", None)]);
    c.txn(write).await.expect("txn that writes");
    assert!(raft_index(&mut c).await > before);
    node.shutdown().await;
}

#[tokio::test]
async fn compaction_and_request_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let mut c = client(&node).await;
    for i in 0..4 {
        c.put("c", format!("v{i}"), None).await.expect("put");
    }
    // Revisions 2..=5 hold v0..v3.
    let old = c
        .get("c", Some(GetOptions::new().with_revision(3)))
        .await
        .expect("historical get");
    assert_eq!(old.kvs()[0].value(), b"v1");
    assert_eq!(
        old.header().expect("header").revision(),
        5,
        "header has the current revision"
    );

    c.compact(
        4,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .expect("compact");

    let err = status(
        c.get("c", Some(GetOptions::new().with_revision(3)))
            .await
            .expect_err("compacted revision"),
    );
    assert_eq!(err.code(), Code::OutOfRange);
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );

    let err = status(
        c.compact(3, None)
            .await
            .expect_err("compacting below the compact revision"),
    );
    assert_eq!(err.code(), Code::OutOfRange);
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );

    let err = status(
        c.compact(100, None)
            .await
            .expect_err("compacting the future"),
    );
    assert_eq!(err.code(), Code::OutOfRange);
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );

    let err = status(c.put("", "v", None).await.expect_err("empty key"));
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "etcdserver: key is not provided");

    // Above --max-request-bytes (1.5 MiB) but within gRPC's limit, which
    // allows etcd's 512 KiB of overhead on top.
    let err = status(
        c.put("big", vec![0u8; 1_700_000], None)
            .await
            .expect_err("request over --max-request-bytes"),
    );
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "etcdserver: request is too large");

    node.shutdown().await;
}
