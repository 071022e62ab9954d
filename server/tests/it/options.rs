//! Every KV option of the `etcd-client` crate against a node, plus auto
//! compaction.

use std::time::Duration;

use cairn_server::{AutoCompactionMode, Config, Node, Retention};
use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse,
};
use tonic::Code;

use crate::{client, start, status};

fn keys(r: &etcd_client::GetResponse) -> Vec<String> {
    r.kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

#[tokio::test]
async fn get_options() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let mut c = client(&node).await;
    // Revisions: a=2, ab=3, b=4, c=5, a again=6.
    for (k, v) in [("a", "3"), ("ab", "1"), ("b", "4"), ("c", "2"), ("a", "5")] {
        c.put(k, v, None).await.unwrap();
    }
    let all = c
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    let get = |o: GetOptions| {
        let mut c = c.clone();
        async move { c.get("a", Some(o)).await.unwrap() }
    };
    assert_eq!(
        keys(&get(GetOptions::new().with_prefix()).await),
        ["a", "ab"]
    );
    assert_eq!(
        keys(&get(GetOptions::new().with_range("b")).await),
        ["a", "ab"]
    );
    assert_eq!(
        keys(&get(GetOptions::new().with_from_key()).await),
        ["a", "ab", "b", "c"]
    );
    assert_eq!(keys(&all), ["a", "ab", "b", "c"]);

    let limited = get(GetOptions::new().with_from_key().with_limit(2)).await;
    assert_eq!(
        (keys(&limited), limited.count(), limited.more()),
        (vec!["a".into(), "ab".into()], 4, true)
    );

    let old = get(GetOptions::new().with_revision(3)).await;
    assert_eq!(old.kvs()[0].value(), b"3");
    assert_eq!(
        old.header().unwrap().revision(),
        6,
        "the header has the current revision"
    );

    let by_value = get(GetOptions::new()
        .with_from_key()
        .with_sort(SortTarget::Value, SortOrder::Descend))
    .await;
    assert_eq!(keys(&by_value), ["a", "b", "c", "ab"]);
    let by_create = get(GetOptions::new()
        .with_from_key()
        .with_sort(SortTarget::Create, SortOrder::Descend)
        .with_limit(1))
    .await;
    assert_eq!(keys(&by_create), ["c"]);
    let by_mod = get(GetOptions::new()
        .with_from_key()
        .with_sort(SortTarget::Mod, SortOrder::Ascend))
    .await;
    assert_eq!(keys(&by_mod), ["ab", "b", "c", "a"]);
    let by_version = get(GetOptions::new()
        .with_from_key()
        .with_sort(SortTarget::Version, SortOrder::Descend)
        .with_limit(1))
    .await;
    assert_eq!(keys(&by_version), ["a"]);

    let ser = get(GetOptions::new().with_serializable()).await;
    assert_eq!(ser.kvs()[0].value(), b"5");
    let ko = get(GetOptions::new().with_prefix().with_keys_only()).await;
    assert!(ko.kvs().iter().all(|kv| kv.value().is_empty()));
    let co = get(GetOptions::new().with_from_key().with_count_only()).await;
    assert_eq!((co.count(), co.kvs().len()), (4, 0));

    let from = || GetOptions::new().with_from_key();
    assert_eq!(
        keys(&get(from().with_min_mod_revision(4)).await),
        ["a", "b", "c"]
    );
    assert_eq!(
        keys(&get(from().with_max_mod_revision(4)).await),
        ["ab", "b"]
    );
    assert_eq!(
        keys(&get(from().with_min_create_revision(4)).await),
        ["b", "c"]
    );
    assert_eq!(
        keys(&get(from().with_max_create_revision(3)).await),
        ["a", "ab"]
    );
    node.shutdown().await;
}

#[tokio::test]
async fn put_and_delete_options() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let mut c = client(&node).await;
    c.put("k", "v1", None).await.unwrap();
    let r = c
        .put(
            "k",
            "",
            Some(PutOptions::new().with_ignore_value().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(r.prev_key().unwrap().value(), b"v1");
    assert_eq!(c.get("k", None).await.unwrap().kvs()[0].value(), b"v1");
    c.put("k", "v2", Some(PutOptions::new().with_ignore_lease()))
        .await
        .unwrap();
    let e = c
        .put("nope", "", Some(PutOptions::new().with_ignore_value()))
        .await
        .unwrap_err();
    let s = status(e);
    assert_eq!(
        (s.code(), s.message()),
        (Code::InvalidArgument, "etcdserver: key not found")
    );
    let e = c
        .put("k", "v", Some(PutOptions::new().with_lease(42)))
        .await
        .unwrap_err();
    let s = status(e);
    assert_eq!(
        (s.code(), s.message()),
        (Code::NotFound, "etcdserver: requested lease not found")
    );

    for k in ["p1", "p2", "q"] {
        c.put(k, k, None).await.unwrap();
    }
    let d = c
        .delete(
            "p",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(d.deleted(), 2);
    assert_eq!(
        d.prev_kvs()
            .iter()
            .map(|kv| kv.value().to_vec())
            .collect::<Vec<_>>(),
        [b"p1".to_vec(), b"p2".to_vec()]
    );
    let d = c
        .delete("k", Some(DeleteOptions::new().with_range("r")))
        .await
        .unwrap();
    assert_eq!(d.deleted(), 2, "k and q");
    let d = c
        .delete("\0", Some(DeleteOptions::new().with_from_key()))
        .await
        .unwrap();
    assert_eq!(d.deleted(), 0);
    node.shutdown().await;
}

#[tokio::test]
async fn txn_options() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let mut c = client(&node).await;
    c.put("x", "1", None).await.unwrap(); // 2
    c.put("x2", "1", None).await.unwrap(); // 3
    let r = c
        .txn(
            Txn::new()
                .when([
                    Compare::version("x", CompareOp::Equal, 1),
                    Compare::create_revision("x", CompareOp::Less, 3),
                    Compare::mod_revision("x2", CompareOp::Greater, 2),
                    Compare::value("x", CompareOp::NotEqual, "2"),
                    Compare::lease("x", CompareOp::Equal, 0),
                    Compare::version("x", CompareOp::Equal, 1).with_prefix(),
                ])
                .and_then([
                    TxnOp::put("y", "1", None),
                    TxnOp::txn(
                        Txn::new()
                            .when([Compare::version("y", CompareOp::Equal, 0)])
                            .and_then([TxnOp::put("z", "nested", None)]),
                    ),
                    TxnOp::get("y", None),
                    TxnOp::delete("x2", None),
                ])
                .or_else([TxnOp::put("fail", "1", None)]),
        )
        .await
        .unwrap();
    assert!(r.succeeded());
    assert_eq!(r.header().unwrap().revision(), 4, "one txn, one revision");
    let TxnOpResponse::Get(g) = &r.op_responses()[2] else {
        panic!()
    };
    assert_eq!(g.kvs()[0].value(), b"1");
    // The nested compare saw y absent: compares precede every op.
    assert_eq!(c.get("z", None).await.unwrap().kvs()[0].mod_revision(), 4);
    assert_eq!(c.get("x2", None).await.unwrap().count(), 0);

    let r = c
        .txn(
            Txn::new()
                .when([Compare::value("x", CompareOp::Equal, "9")])
                .or_else([TxnOp::get("x", None)]),
        )
        .await
        .unwrap();
    assert!(!r.succeeded());
    assert_eq!(
        r.header().unwrap().revision(),
        4,
        "a read-only txn keeps the revision"
    );

    let c2 = c
        .compact(
            4,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();
    assert_eq!(c2.header().unwrap().revision(), 4);
    let e = c
        .get("x", Some(GetOptions::new().with_revision(3)))
        .await
        .unwrap_err();
    assert_eq!(
        status(e).message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn auto_compaction_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default_for_tests(dir.path());
    config.auto_compaction_mode = AutoCompactionMode::Periodic;
    config.auto_compaction_retention = Retention::Duration(Duration::from_secs(1));
    let node = Node::start(config).await.unwrap();
    let mut c = client(&node).await;
    for i in 0..5 {
        c.put("k", i.to_string(), None).await.unwrap();
    }
    // Within a few sampling rounds past the 1 s window the revisions of
    // the puts above are compacted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while node.store().compact_revision() < 6 {
        assert!(tokio::time::Instant::now() < deadline, "no auto compaction");
        c.put("tick", "x", None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e = c
        .get("k", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap_err();
    assert_eq!(status(e).code(), Code::OutOfRange);
    node.shutdown().await;
}
