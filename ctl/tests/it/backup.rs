//! The backup runbook of docs/operations.md, end to end: a 3-member cluster
//! under writes; a backup with cairnctl and one with etcdctl 3.5; both
//! verified; the cluster destroyed; a new 3-member cluster restored from
//! cairnctl's backup; every key, value, revision and lease as it was at the
//! backup's revision.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use cairn_client::{Get, Put, Revision};

use crate::support::{self, cairnctl, run_program, ETCDCTL35};

/// (key, value, create_revision, mod_revision, version, lease)
type Row = (Vec<u8>, Vec<u8>, i64, i64, i64, i64);

fn rows(kvs: &[cairn_client::KeyValue]) -> Vec<Row> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.clone(),
                kv.create_revision.get(),
                kv.mod_revision.get(),
                kv.version,
                kv.lease.map_or(0, |l| l.get()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_verify_destroy_restore_into_a_new_cluster() {
    let root = tempfile::tempdir().expect("temp dir");
    let old = support::reserve(0, 3, root.path(), "old");
    let nodes = support::start_all(&old, "old-cluster").await;
    let client = support::client(&old).await;

    // Some history: overwrites, deletes, a lease with keys.
    let lease = client.lease_grant(3600, None).await.expect("grant").id;
    for i in 0..200 {
        client
            .put(Put::new(format!("k/{:03}", i % 50), format!("v{i}")))
            .await
            .expect("put");
    }
    client
        .delete(cairn_client::Delete::one("k/007"))
        .await
        .expect("delete");
    for i in 0..5 {
        client
            .put(Put::new(format!("leased/{i}"), "x").with_lease(lease))
            .await
            .expect("leased put");
    }

    // Writes go on while both backups are taken.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (client, stop, written) = (client.clone(), stop.clone(), written.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                client
                    .put(Put::new(format!("w/{}", i % 100), format!("{i}")))
                    .await
                    .expect("writer put");
                i += 1;
                written.store(i, Ordering::Relaxed);
            }
        })
    };
    let ours = root.path().join("cairnctl.db");
    let theirs = root.path().join("etcdctl.db");
    let started = Instant::now();
    let saved = cairnctl(&[
        "--endpoints",
        &old[0].client_url(),
        "snapshot",
        "save",
        ours.to_str().expect("utf-8"),
    ])
    .await
    .ok();
    let ours_took = started.elapsed();
    assert!(saved.starts_with("Snapshot saved at"), "{saved}");
    let started = Instant::now();
    let out = run_program(
        ETCDCTL35,
        &[
            "--endpoints",
            &old[1].client_url(),
            "snapshot",
            "save",
            theirs.to_str().expect("utf-8"),
        ],
        "",
    )
    .await;
    assert_eq!(out.code, 0, "etcdctl snapshot save: {out:?}");
    let theirs_took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    assert!(written.load(Ordering::Relaxed) > 0, "writes went on");

    // Both verify with no server, and etcdctl's size rule holds.
    for f in [&ours, &theirs] {
        let len = std::fs::metadata(f).expect("saved").len();
        assert_eq!(len % 512, 32, "{}", f.display());
        let v = cairnctl(&["snapshot", "verify", f.to_str().expect("utf-8")])
            .await
            .ok();
        assert!(v.contains(": OK (revision"), "{v}");
    }
    let status = cairnctl(&[
        "-w",
        "json",
        "snapshot",
        "status",
        ours.to_str().expect("utf-8"),
    ])
    .await
    .ok();
    let status: serde_json::Value = serde_json::from_str(&status).expect("json");
    let at = status["revision"].as_i64().expect("revision");
    eprintln!(
        "backup: {} bytes at revision {at}, cairnctl {ours_took:?}, etcdctl {theirs_took:?}",
        status["totalSize"]
    );

    // What the restored cluster must hold: the old cluster at that revision.
    let expected = client
        .get(Get::all().with_revision(Revision::new(at)))
        .await
        .expect("read at the backup's revision");
    let expected = rows(&expected.kvs);
    assert!(expected.len() > 50);

    // Destroy the old cluster, data dirs included.
    drop(client);
    for n in nodes {
        n.shutdown().await;
    }
    for m in &old {
        std::fs::remove_dir_all(&m.data_dir).expect("wiped");
    }

    // Restore into a new cluster: new names, addresses and token.
    let new = support::reserve(1, 3, root.path(), "new");
    let cluster = support::initial_cluster(&new);
    for m in &new {
        let out = cairnctl(&[
            "snapshot",
            "restore",
            ours.to_str().expect("utf-8"),
            "--name",
            &m.name,
            "--initial-cluster",
            &cluster,
            "--initial-cluster-token",
            "new-cluster",
            "--initial-advertise-peer-urls",
            &m.peer_url(),
            "--data-dir",
            m.data_dir.to_str().expect("utf-8"),
        ])
        .await
        .ok();
        assert!(out.starts_with("restored snapshot"), "{out}");
    }
    // A second restore into a used data dir is refused.
    let again = cairnctl(&[
        "snapshot",
        "restore",
        ours.to_str().expect("utf-8"),
        "--name",
        &new[0].name,
        "--initial-cluster",
        &cluster,
        "--initial-advertise-peer-urls",
        &new[0].peer_url(),
        "--data-dir",
        new[0].data_dir.to_str().expect("utf-8"),
    ])
    .await;
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("not empty"), "{again:?}");

    let nodes = support::start_all(&new, "new-cluster").await;
    let client = support::client(&new).await;
    let got = client
        .get(Get::all())
        .await
        .expect("read the restored cluster");
    assert_eq!(got.header.revision.get(), at, "the revision is kept");
    assert_eq!(rows(&got.kvs), expected, "every key, value and revision");
    // The lease and its keys came along.
    let ttl = client
        .lease_time_to_live(lease, true)
        .await
        .expect("ttl")
        .expect("the lease is restored");
    assert_eq!(ttl.keys.len(), 5);
    // Every member holds the same history, and the cluster takes writes.
    let hashes = support::hashkv(&new.iter().collect::<Vec<_>>(), at)
        .await
        .expect("hashkv");
    assert_eq!(hashes.len(), 3);
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
    let put = client.put(Put::new("after", "restore")).await.expect("put");
    assert_eq!(put.header.revision.get(), at + 1);
    drop(client);
    for n in nodes {
        n.shutdown().await;
    }
}

/// `--backup-dir`: backups appear on schedule, each verifies, and only the
/// newest `--backup-retention` are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_verify_and_rotate() {
    let root = tempfile::tempdir().expect("temp dir");
    let members = support::reserve(2, 1, root.path(), "s");
    let dir = root.path().join("backups");
    let mut config = support::config(&members[0], &members, "scheduled");
    config.backup_dir = Some(dir.clone());
    config.backup_interval = std::time::Duration::from_millis(200);
    config.backup_retention = 2;
    let node = cairn_server::Node::start(config).await.expect("starts");
    let client = support::client(&members).await;
    let list = || {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".db"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    // Writes between backups, until at least four backups were taken (the
    // newest names a revision past the first few).
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    let mut i = 0;
    loop {
        client
            .put(Put::new(format!("s/{i}"), "v"))
            .await
            .expect("put");
        i += 1;
        let names = list();
        // The newest is renamed into place before the oldest goes.
        assert!(names.len() <= 3, "retention: {names:?}");
        if names.iter().any(|n| {
            n.rsplit_once("-rev")
                .and_then(|(_, r)| r.trim_end_matches(".db").parse::<i64>().ok())
                .is_some_and(|r| r > 20)
        }) && names.len() == 2
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no rotation within 20 s: {names:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(client);
    node.shutdown().await;
    for name in list() {
        let path = dir.join(&name);
        let v = cairnctl(&["snapshot", "verify", path.to_str().expect("utf-8")])
            .await
            .ok();
        assert!(v.contains(": OK (revision"), "{v}");
    }
}
