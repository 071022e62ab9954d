//! etcd's revision model, txns, compaction and snapshots, case by case.

use cairn_proto::etcdserverpb::compare::CompareResult;
use cairn_proto::etcdserverpb::{response_op, CompactionRequest, PutRequest, RangeRequest};
use cairn_raft_storage::{ApplyError, Error, Request, Response};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{cmp_version, put_op, txn, Harness};

fn rev_of(r: &Response) -> i64 {
    match r {
        Response::Put(p) => p.header.as_ref().expect("header").revision,
        Response::DeleteRange(d) => d.header.as_ref().expect("header").revision,
        Response::Txn(t) => t.header.as_ref().expect("header").revision,
        other => panic!("no revision in {other:?}"),
    }
}

#[tokio::test]
async fn revisions_versions_and_generations() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    assert_eq!(
        h.opened.store.revision(),
        1,
        "an empty store is at revision 1"
    );
    assert_eq!(rev_of(&h.put("a", "1").await), 2);
    assert_eq!(rev_of(&h.put("a", "2").await), 3);
    // A delete of nothing changes nothing.
    assert_eq!(rev_of(&h.delete("zz", "").await), 3);
    assert_eq!(rev_of(&h.delete("a", "").await), 4);
    assert_eq!(rev_of(&h.put("a", "3").await), 5);

    let kv = &h.get("a", "", 0).unwrap().kvs[0];
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (5, 5, 1),
        "delete resets version"
    );
    let old = &h.get("a", "", 3).unwrap().kvs[0];
    assert_eq!(
        (
            old.create_revision,
            old.mod_revision,
            old.version,
            old.value.as_slice()
        ),
        (2, 3, 2, &b"2"[..])
    );
    assert!(h.get("a", "", 4).unwrap().kvs.is_empty(), "deleted at 4");
    assert_eq!(
        h.get("a", "", 4).unwrap().header.unwrap().revision,
        5,
        "header carries the current revision"
    );
    assert!(matches!(h.get("a", "", 6), Err(Error::FutureRevision)));
}

#[tokio::test]
async fn txn_shares_one_revision_and_reads_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    h.put("a", "1").await;
    let range = cairn_proto::etcdserverpb::RequestOp {
        request: Some(
            cairn_proto::etcdserverpb::request_op::Request::RequestRange(RangeRequest {
                key: b"b".to_vec(),
                ..Default::default()
            }),
        ),
    };
    let r = h
        .apply(txn(
            vec![cmp_version("a", CompareResult::Equal, 1)],
            vec![put_op("b", "x"), put_op("c", "y"), range],
            vec![],
        ))
        .await;
    let Response::Txn(t) = &r else {
        panic!("{r:?}")
    };
    assert!(t.succeeded);
    assert_eq!(rev_of(&r), 3);
    let Some(response_op::Response::ResponseRange(rr)) = &t.responses[2].response else {
        panic!()
    };
    assert_eq!(
        rr.kvs[0].value, b"x",
        "a range after a put in one txn sees the put"
    );
    let b = &h.get("b", "", 0).unwrap().kvs[0];
    let c = &h.get("c", "", 0).unwrap().kvs[0];
    assert_eq!((b.mod_revision, c.mod_revision), (3, 3));

    // A read-only txn does not raise the revision.
    let r = h
        .apply(txn(
            vec![cmp_version("a", CompareResult::Greater, 5)],
            vec![put_op("a", "no")],
            vec![],
        ))
        .await;
    let Response::Txn(t) = &r else { panic!() };
    assert!(!t.succeeded);
    assert_eq!(rev_of(&r), 3);
}

#[tokio::test]
async fn nested_compares_see_the_state_before_the_txn() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    // Outer puts k; the nested txn asks whether k does not exist yet. As in
    // etcd, every compare is decided before any op runs, so it succeeds.
    let nested = cairn_proto::etcdserverpb::RequestOp {
        request: Some(cairn_proto::etcdserverpb::request_op::Request::RequestTxn(
            cairn_proto::etcdserverpb::TxnRequest {
                compare: vec![cmp_version("k", CompareResult::Equal, 0)],
                success: vec![put_op("inner", "then")],
                failure: vec![put_op("inner", "else")],
            },
        )),
    };
    let r = h
        .apply(txn(vec![], vec![put_op("k", "v"), nested], vec![]))
        .await;
    assert!(matches!(r, Response::Txn(_)));
    assert_eq!(h.get("inner", "", 0).unwrap().kvs[0].value, b"then");
}

#[tokio::test]
async fn refused_requests_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    h.put("a", "1").await;
    let r = h
        .apply(Request::Put(PutRequest {
            key: b"a".to_vec(),
            lease: 7,
            ..Default::default()
        }))
        .await;
    assert_eq!(r, Response::Rejected(ApplyError::LeaseNotFound));
    let r = h
        .apply(Request::Put(PutRequest {
            key: b"nope".to_vec(),
            ignore_value: true,
            ..Default::default()
        }))
        .await;
    assert_eq!(r, Response::Rejected(ApplyError::KeyNotFound));
    // A txn whose chosen branch holds a bad put fails whole.
    let mut bad = put_op("b", "x");
    if let Some(cairn_proto::etcdserverpb::request_op::Request::RequestPut(p)) = &mut bad.request {
        p.lease = 9;
    }
    let r = h
        .apply(txn(vec![], vec![put_op("c", "y"), bad], vec![]))
        .await;
    assert_eq!(r, Response::Rejected(ApplyError::LeaseNotFound));
    assert_eq!(h.opened.store.revision(), 2);
    assert!(h.get("c", "", 0).unwrap().kvs.is_empty());
}

#[tokio::test]
async fn compaction_rules_and_physical_removal() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    for i in 0..10 {
        h.put("a", &i.to_string()).await; // revisions 2..=11
    }
    h.put("b", "x").await; // 12
    h.delete("b", "").await; // 13
    let compact = |rev| {
        Request::Compaction(CompactionRequest {
            revision: rev,
            physical: true,
        })
    };
    assert_eq!(
        h.apply(compact(14)).await,
        Response::Rejected(ApplyError::FutureRevision)
    );
    assert!(matches!(
        h.apply(compact(13)).await,
        Response::Compaction(_)
    ));
    assert_eq!(
        h.apply(compact(13)).await,
        Response::Rejected(ApplyError::Compacted)
    );
    assert_eq!(
        h.apply(compact(5)).await,
        Response::Rejected(ApplyError::Compacted)
    );
    h.opened.store.wait_compacted(13).await;

    assert!(matches!(h.get("a", "", 12), Err(Error::Compacted)));
    let a = &h.get("a", "", 13).unwrap().kvs[0];
    assert_eq!(
        (a.value.as_slice(), a.version, a.create_revision),
        (&b"9"[..], 10, 2)
    );
    assert_eq!(
        h.opened.store.key_count(),
        1,
        "b's history is gone with its tombstone"
    );

    // Reopen: the compaction and the data survive; old revisions stay gone.
    drop(h);
    let h = Harness::new(dir.path());
    assert_eq!(h.opened.store.compact_revision(), 13);
    assert!(matches!(h.get("a", "", 12), Err(Error::Compacted)));
    assert_eq!(h.get("a", "", 0).unwrap().kvs[0].version, 10);
}

#[tokio::test]
async fn snapshot_round_trip_while_writes_continue() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let mut a = Harness::new(src.path());
    for i in 0..50 {
        a.put(&format!("k{i:02}"), "v").await;
    }
    a.delete("k1", "k2").await;
    let snap = a
        .opened
        .state_machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    // Writes after the build are not in it.
    a.put("later", "x").await;

    let mut b = Harness::new(dst.path());
    b.put("stale", "gone after install").await;
    // The transport's part: the leader's file, copied into the receiver's.
    let mut bytes = Vec::new();
    let mut sent = snap.snapshot;
    sent.read_to_end(&mut bytes).await.unwrap();
    let mut data = b
        .opened
        .state_machine
        .begin_receiving_snapshot()
        .await
        .unwrap();
    data.write_all(&bytes).await.unwrap();
    b.opened
        .state_machine
        .install_snapshot(&snap.meta, data)
        .await
        .unwrap();
    assert_eq!(b.opened.store.revision(), 52);
    let all = b.get("\0", "\0", 0).unwrap();
    assert_eq!(all.count, 40);
    assert!(b.get("stale", "", 0).unwrap().kvs.is_empty());
    assert!(b.get("later", "", 0).unwrap().kvs.is_empty());
    // History came along: k10 existed at revision 20.
    assert_eq!(b.get("k10", "", 20).unwrap().kvs.len(), 1);
    let cur = b
        .opened
        .state_machine
        .get_current_snapshot()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cur.meta, snap.meta);

    // A damaged snapshot is refused and the store is left alone.
    let mut bytes = Vec::new();
    let mut current = cur.snapshot;
    current.read_to_end(&mut bytes).await.unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let mut data = b
        .opened
        .state_machine
        .begin_receiving_snapshot()
        .await
        .unwrap();
    data.write_all(&bytes).await.unwrap();
    assert!(b
        .opened
        .state_machine
        .install_snapshot(&snap.meta, data)
        .await
        .is_err());
    assert_eq!(b.get("\0", "\0", 0).unwrap().count, 40);
}

#[test]
fn corrupt_data_dir_is_refused_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("conf"), b"this is not sled's config").unwrap();
    std::fs::write(db.join("db"), vec![0xAB; 4096]).unwrap();
    let err = cairn_raft_storage::open(&cairn_raft_storage::Options::new(dir.path())).err();
    assert!(err.is_some(), "a garbage database must not open");
    assert_eq!(
        std::fs::read(db.join("db")).unwrap(),
        vec![0xAB; 4096],
        "and must not be rewritten"
    );
}

#[tokio::test]
async fn a_batch_applies_each_request_at_its_own_revision() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    let put = |k: &str, v: &str| {
        Request::Put(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })
    };
    let r = h
        .apply(Request::Batch(vec![
            put("a", "1"),
            put("a", "2"),
            Request::Put(PutRequest {
                key: b"b".to_vec(),
                lease: 5,
                ..Default::default()
            }),
            txn(
                vec![cmp_version("a", CompareResult::Equal, 2)],
                vec![put_op("c", "3")],
                vec![],
            ),
        ]))
        .await;
    let Response::Batch(rs) = r else {
        panic!("{r:?}")
    };
    assert_eq!(rev_of(&rs[0]), 2);
    assert_eq!(rev_of(&rs[1]), 3);
    assert_eq!(
        rs[2],
        Response::Rejected(ApplyError::LeaseNotFound),
        "a refusal does not spoil the batch"
    );
    assert_eq!(rev_of(&rs[3]), 4, "the txn saw the batch's earlier puts");
    assert_eq!(h.get("a", "", 0).unwrap().kvs[0].version, 2);
    assert_eq!(h.get("c", "", 0).unwrap().kvs[0].mod_revision, 4);
}
