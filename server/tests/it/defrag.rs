//! Defragment on a running member: the file shrinks, the writes that run
//! through it are all kept in order, and a restart serves the same data.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_server::{Config, Node};
use etcd_client::{CompactionOptions, GetOptions};

use crate::client;

fn config(dir: &Path) -> Config {
    let mut c = Config::default_for_tests(dir);
    // Snapshots (and so log purges) often, as a long-running member has
    // them: what is left of the log is copied too.
    c.snapshot_count = 2000;
    c.experimental_snapshot_catchup_entries = 200;
    c
}

/// Every key at the current revision: key → (value, mod_revision, version).
async fn everything(c: &mut etcd_client::Client) -> (i64, BTreeMap<Vec<u8>, (Vec<u8>, i64, i64)>) {
    let r = c
        .get("\0", Some(GetOptions::new().with_from_key()))
        .await
        .expect("get all");
    let kvs = r
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key().to_vec(),
                (kv.value().to_vec(), kv.mod_revision(), kv.version()),
            )
        })
        .collect();
    (r.header().expect("header").revision(), kvs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defragment_under_writes_shrinks_the_file_and_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(config(dir.path())).await.expect("starts");
    let mut c = client(&node).await;

    // 6000 overwrites of 2 KiB over 100 keys, by 4 clients, then compacted.
    let mut fill = Vec::new();
    for w in 0..4u32 {
        let mut c = c.clone();
        fill.push(tokio::spawn(async move {
            for i in 0..1500u32 {
                let n = i * 4 + w;
                c.put(
                    format!("big/{:03}", n % 100),
                    vec![b'a' + (n % 26) as u8; 2048],
                    None,
                )
                .await
                .expect("fill");
            }
        }));
    }
    for f in fill {
        f.await.expect("filler");
    }
    let (rev, _) = everything(&mut c).await;
    c.compact(rev, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    let before = c.status().await.expect("status").db_size();

    // A writer runs through the defragment, timing each put.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (mut c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut worst = Duration::ZERO;
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) || i < 200 {
                let t = Instant::now();
                let r = c
                    .put(format!("w/{i:05}"), i.to_string(), None)
                    .await
                    .expect("put");
                worst = worst.max(t.elapsed());
                acked.push(r.header().expect("header").revision());
                i += 1;
            }
            (acked, worst)
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    c.defragment().await.expect("defragment");
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (acked, worst) = writer.await.expect("writer");

    let after = c.status().await.expect("status").db_size();
    eprintln!("db size {before} -> {after}, defragment {took:?}, worst put {worst:?}");
    assert!(after * 3 < before, "the file shrank: {before} -> {after}");
    let store = dir.path().join("member/store");
    let mut gens: Vec<String> = std::fs::read_dir(&store)
        .expect("store dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .filter(|n| n.starts_with("db"))
        .collect();
    gens.sort();
    assert_eq!(gens, ["db-current", "db.1"], "the old database is gone");

    // Every acknowledged write, at its revision, in order.
    for w in acked.windows(2) {
        assert!(w[0] < w[1], "revisions rise: {w:?}");
    }
    let (now, all) = everything(&mut c).await;
    for (i, rev) in acked.iter().enumerate() {
        let (value, mod_rev, _) = &all[format!("w/{i:05}").as_bytes()];
        assert_eq!(
            (value.as_slice(), *mod_rev),
            (i.to_string().as_bytes(), *rev)
        );
    }
    assert_eq!(all.len(), 100 + acked.len());

    // A restart serves the same.
    drop(c);
    node.shutdown().await;
    let node = Node::start(config(dir.path())).await.expect("restarts");
    let mut c = client(&node).await;
    assert_eq!(everything(&mut c).await, (now, all));
    let next = c.put("after", "x", None).await.expect("put");
    assert_eq!(next.header().expect("header").revision(), now + 1);
    drop(c);
    node.shutdown().await;
}
