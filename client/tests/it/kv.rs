//! KV, Txn, compaction, errors and pagination on a one-member cluster.

use cairn_client::{
    Compare, CompareOp, Delete, Error, Get, Put, Revision, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse,
};
use futures::TryStreamExt;

use crate::support::{Cluster, Flavor};

crate::both_flavors!(
    get_builders_and_revisions,
    put_and_delete_prev_kv,
    txn_compare_then_else_nested,
    etcd_errors_are_parsed,
    pages_share_one_revision,
);

fn keys(kvs: &[cairn_client::KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| kv.key_str().expect("utf-8").to_owned())
        .collect()
}

async fn get_builders_and_revisions(flavor: Flavor) {
    let cluster = Cluster::start(flavor, 1).await;
    let client = cluster.client().await;
    // An empty store is at revision 1: the first write gets revision 2.
    let first = client.put(Put::new("a/1", "x")).await.expect("put");
    assert_eq!(first.header.revision, Revision::new(2));
    for (key, value) in [("a/2", "yy"), ("a/3", "z"), ("b/1", "w"), ("a/1", "x2")] {
        client.put(Put::new(key, value)).await.expect("put");
    }
    // Now: a/1@6 (v2), a/2@3, a/3@4, b/1@5.
    let one = client.get("a/1").await.expect("get");
    assert_eq!(one.kvs.len(), 1);
    let kv = &one.kvs[0];
    assert_eq!(
        (
            kv.value.as_slice(),
            kv.create_revision,
            kv.mod_revision,
            kv.version
        ),
        (&b"x2"[..], Revision::new(2), Revision::new(6), 2)
    );
    assert_eq!(one.header.revision, Revision::new(6));

    let prefix = client.get(Get::prefix("a/")).await.expect("prefix");
    assert_eq!(keys(&prefix.kvs), ["a/1", "a/2", "a/3"]);
    let range = client.get(Get::range("a/2", "b/1")).await.expect("range");
    assert_eq!(keys(&range.kvs), ["a/2", "a/3"]);
    let from = client.get(Get::from_key("a/3")).await.expect("from key");
    assert_eq!(keys(&from.kvs), ["a/3", "b/1"]);
    let all = client.get(Get::all()).await.expect("all");
    assert_eq!(all.count, 4);

    let limited = client
        .get(Get::prefix("a/").with_limit(2))
        .await
        .expect("limit");
    assert_eq!(
        (limited.kvs.len(), limited.more, limited.count),
        (2, true, 3)
    );

    let sorted = client
        .get(Get::prefix("a/").with_sort(SortTarget::ModRevision, SortOrder::Descend))
        .await
        .expect("sort");
    assert_eq!(keys(&sorted.kvs), ["a/1", "a/3", "a/2"]);
    let by_value = client
        .get(Get::prefix("a/").with_sort(SortTarget::Value, SortOrder::Ascend))
        .await
        .expect("sort by value");
    assert_eq!(keys(&by_value.kvs), ["a/1", "a/2", "a/3"]);

    // A historical read: a/1 as it was at revision 2; the header still
    // says the current revision.
    let old = client
        .get(Get::one("a/1").with_revision(Revision::new(2)))
        .await
        .expect("old");
    assert_eq!(old.kvs[0].value, b"x");
    assert_eq!(old.header.revision, Revision::new(6));

    let serializable = client
        .get(Get::prefix("a/").with_serializable())
        .await
        .expect("serializable");
    assert_eq!(serializable.kvs.len(), 3);

    let keys_only = client
        .get(Get::prefix("a/").with_keys_only())
        .await
        .expect("keys only");
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty()));
    assert_eq!(keys_only.kvs.len(), 3);

    let count_only = client
        .get(Get::prefix("a/").with_count_only())
        .await
        .expect("count only");
    assert_eq!((count_only.kvs.len(), count_only.count), (0, 3));

    let filtered = client
        .get(
            Get::all()
                .with_min_mod_revision(Revision::new(4))
                .with_max_mod_revision(Revision::new(5)),
        )
        .await
        .expect("mod filters");
    assert_eq!(keys(&filtered.kvs), ["a/3", "b/1"]);
    let created = client
        .get(
            Get::all()
                .with_min_create_revision(Revision::new(3))
                .with_max_create_revision(Revision::new(4)),
        )
        .await
        .expect("create filters");
    assert_eq!(keys(&created.kvs), ["a/2", "a/3"]);
}

async fn put_and_delete_prev_kv(flavor: Flavor) {
    let cluster = Cluster::start(flavor, 1).await;
    let client = cluster.client().await;
    let first = client
        .put(Put::new("k", "v1").with_prev_kv())
        .await
        .expect("put");
    assert_eq!(first.prev_kv, None);
    let second = client
        .put(Put::new("k", "v2").with_prev_kv())
        .await
        .expect("put");
    assert_eq!(second.prev_kv.expect("prev kv").value, b"v1");
    client.put(Put::new("k2", "w")).await.expect("put");

    let deleted = client
        .delete(Delete::prefix("k").with_prev_kv())
        .await
        .expect("delete");
    assert_eq!(deleted.deleted, 2);
    assert_eq!(keys(&deleted.prev_kvs), ["k", "k2"]);
    // A delete of nothing changes nothing: the revision stays.
    let nothing = client.delete("k").await.expect("delete");
    assert_eq!(nothing.deleted, 0);
    assert_eq!(nothing.header.revision, deleted.header.revision);
    assert!(client.get("k").await.expect("get").kvs.is_empty());
}

async fn txn_compare_then_else_nested(flavor: Flavor) {
    let cluster = Cluster::start(flavor, 1).await;
    let client = cluster.client().await;
    let absent = || Compare::create_revision("lock", CompareOp::Equal, Revision::new(0));

    let won = client
        .txn(
            Txn::new()
                .when([absent()])
                .and_then([Put::new("lock", "me").into(), Get::one("lock").into()])
                .or_else([Get::one("lock").into()]),
        )
        .await
        .expect("txn");
    assert!(won.succeeded);
    let [TxnOpResponse::Put(_), TxnOpResponse::Get(read)] = &won.responses[..] else {
        panic!("then branch answers: {:?}", won.responses);
    };
    assert_eq!(
        read.kvs[0].value, b"me",
        "ops see earlier writes of the txn"
    );

    let lost = client
        .txn(
            Txn::new()
                .when([absent()])
                .and_then([Put::new("lock", "you").into()])
                .or_else([Get::one("lock").into()]),
        )
        .await
        .expect("txn");
    assert!(!lost.succeeded);
    // A txn that wrote nothing does not raise the revision.
    assert_eq!(lost.header.revision, won.header.revision);

    // Nested: the inner txn's compares see the state before the outer txn.
    let nested = client
        .txn(
            Txn::new()
                .when([Compare::value("lock", CompareOp::Equal, "me")])
                .and_then([
                    Put::new("n/1", "a").into(),
                    TxnOp::Txn(
                        Txn::new()
                            .when([Compare::version("n/", CompareOp::Greater, 0).with_prefix()])
                            .and_then([Put::new("n/inner", "then").into()])
                            .or_else([Put::new("n/inner", "else").into()]),
                    ),
                ]),
        )
        .await
        .expect("nested txn");
    assert!(nested.succeeded);
    let [_, TxnOpResponse::Txn(inner)] = &nested.responses[..] else {
        panic!("nested answers: {:?}", nested.responses);
    };
    assert!(!inner.succeeded, "compares are decided before the txn");
    let inner_value = client.get("n/inner").await.expect("get");
    assert_eq!(inner_value.kvs[0].value, b"else");
    assert_eq!(
        inner_value.kvs[0].mod_revision, nested.header.revision,
        "one txn, one revision"
    );

    // A read-only txn.
    let read_only = Txn::new().and_then([Get::prefix("n/").into()]);
    assert!(read_only.is_read_only());
    let r = client.txn(read_only).await.expect("read-only txn");
    assert!(r.succeeded);
}

async fn etcd_errors_are_parsed(flavor: Flavor) {
    let cluster = Cluster::start(flavor, 1).await;
    let client = cluster.client().await;
    for i in 0..5 {
        client
            .put(Put::new(format!("e/{i}"), "v"))
            .await
            .expect("put");
    }
    // Revisions 2..=6. Compact at 4.
    client
        .compact(Revision::new(4), true)
        .await
        .expect("compact");
    let compacted = client
        .get(Get::one("e/0").with_revision(Revision::new(3)))
        .await;
    assert!(
        matches!(compacted, Err(Error::Compacted { .. })),
        "{compacted:?}"
    );
    let again = client.compact(Revision::new(4), false).await;
    assert!(matches!(again, Err(Error::Compacted { .. })), "{again:?}");
    let future = client
        .get(Get::one("e/0").with_revision(Revision::new(1000)))
        .await;
    assert!(matches!(future, Err(Error::FutureRevision)), "{future:?}");

    let no_lease = client
        .put(Put::new("k", "v").with_lease(cairn_client::LeaseId::new(0x1234)))
        .await;
    assert!(
        matches!(no_lease, Err(Error::LeaseNotFound)),
        "{no_lease:?}"
    );
    let empty = client.get("").await;
    assert!(matches!(empty, Err(Error::EmptyKey)), "{empty:?}");

    let too_many = Txn::new().and_then((0..129).map(|i| Put::new(format!("t/{i}"), "v").into()));
    let r = client.txn(too_many).await;
    assert!(matches!(r, Err(Error::TooManyOps)), "{r:?}");
    let duplicate = Txn::new().and_then([Put::new("d", "1").into(), Put::new("d", "2").into()]);
    let r = client.txn(duplicate).await;
    assert!(matches!(r, Err(Error::DuplicateKey)), "{r:?}");
    let missing = client.put(Put::new("absent", "").with_ignore_value()).await;
    assert!(matches!(missing, Err(Error::KeyNotFound)), "{missing:?}");
}

async fn pages_share_one_revision(flavor: Flavor) {
    let cluster = Cluster::start(flavor, 1).await;
    let client = cluster.client().await;
    for i in 0..25 {
        client
            .put(Put::new(format!("p/{i:02}"), format!("{i}")))
            .await
            .expect("put");
    }
    let start = client
        .get(Get::one("p/00"))
        .await
        .expect("get")
        .header
        .revision;
    let pages = client.get_pages(Get::prefix("p/"), 7);
    let mut pages = std::pin::pin!(pages);
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    while let Some(page) = pages.try_next().await.expect("page") {
        sizes.push(page.kvs.len());
        seen.extend(keys(&page.kvs));
        // Writes between pages: new keys inside the range, and a change
        // to a key not read yet. Neither may show up.
        client
            .put(Put::new(format!("p/{}x", sizes.len()), "late"))
            .await
            .expect("put");
        client.put(Put::new("p/24", "changed")).await.expect("put");
    }
    assert_eq!(sizes, [7, 7, 7, 4]);
    let expected: Vec<String> = (0..25).map(|i| format!("p/{i:02}")).collect();
    assert_eq!(seen, expected, "the range as it was at revision {start}");

    // A single key is one page.
    let one: Vec<_> = client
        .get_pages("p/03", 7)
        .try_collect()
        .await
        .expect("pages");
    assert_eq!(one.len(), 1);

    // Compaction past the pages' revision between two pages ends the
    // stream with Compacted.
    let pages = client.get_pages(Get::prefix("p/"), 10);
    let mut pages = std::pin::pin!(pages);
    pages.try_next().await.expect("first page");
    let now = client
        .put(Put::new("q", "v"))
        .await
        .expect("put")
        .header
        .revision;
    client.compact(now, true).await.expect("compact");
    let next = pages.try_next().await;
    assert!(matches!(next, Err(Error::Compacted { .. })), "{next:?}");
}
