//! Watches: events, options, progress, compaction, multiplexing, and
//! resuming across the death of the member serving the stream.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_client::{
    Client, ConnectOptions, Error, EventKind, Get, Put, Revision, WatchOptions, WatchResponse,
    Watcher,
};
use futures::StreamExt;

use crate::support::{Cluster, Flavor};

crate::both_flavors!(
    events_options_and_progress,
    compaction_is_its_own_error,
    many_watchers_share_one_stream,
    resumes_across_leader_kill,
);

/// How long a test waits for a watch response.
const WAIT: Duration = Duration::from_secs(10);

async fn next(watcher: &mut Watcher) -> cairn_client::Result<WatchResponse> {
    tokio::time::timeout(WAIT, watcher.next())
        .await
        .expect("a watch response within 10 s")
        .expect("the watcher has not ended")
}

/// Collects events until `n` arrived.
async fn events(watcher: &mut Watcher, n: usize) -> Vec<cairn_client::Event> {
    let mut out = Vec::new();
    while out.len() < n {
        let response = next(watcher).await.expect("watch response");
        out.extend(response.events);
    }
    assert_eq!(out.len(), n, "no more events than written");
    out
}

async fn events_options_and_progress(flavor: Flavor) {
    let cluster = Cluster::start(flavor, 1).await;
    let client = cluster.client().await;
    let mut watcher = client
        .watch(WatchOptions::prefix("w/"))
        .await
        .expect("watch");
    // An empty store is at revision 1; a watch from now starts after it.
    assert_eq!(watcher.start_revision(), Revision::new(2));
    let mut with_prev = client
        .watch(WatchOptions::prefix("w/").with_prev_kv().with_no_put())
        .await
        .expect("watch");

    client.put(Put::new("w/a", "1")).await.expect("put");
    client.put(Put::new("other", "x")).await.expect("put");
    client.put(Put::new("w/a", "2")).await.expect("put");
    client.delete("w/a").await.expect("delete");

    let seen = events(&mut watcher, 3).await;
    let summary: Vec<(EventKind, i64, Vec<u8>)> = seen
        .iter()
        .map(|e| (e.kind, e.revision().get(), e.kv.value.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (EventKind::Put, 2, b"1".to_vec()),
            (EventKind::Put, 4, b"2".to_vec()),
            (EventKind::Delete, 5, Vec::new()),
        ]
    );
    // Only the delete passes the no-put filter, with the value before it.
    let deletes = events(&mut with_prev, 1).await;
    assert_eq!(deletes[0].kind, EventKind::Delete);
    assert_eq!(deletes[0].prev_kv.as_ref().expect("prev kv").value, b"2");

    // From history.
    let mut past = client
        .watch(WatchOptions::key("w/a").with_start_revision(Revision::new(3)))
        .await
        .expect("watch");
    let replay = events(&mut past, 2).await;
    let revisions: Vec<i64> = replay.iter().map(|e| e.revision().get()).collect();
    assert_eq!(revisions, [4, 5]);

    // A progress request is answered on every watcher of the stream, at
    // the current revision.
    watcher.request_progress().expect("progress");
    let progress = next(&mut watcher).await.expect("progress response");
    assert!(progress.is_progress_notify(), "{progress:?}");
    assert_eq!(progress.header.revision, Revision::new(5));
}

async fn compaction_is_its_own_error(flavor: Flavor) {
    let cluster = Cluster::start(flavor, 1).await;
    let client = cluster.client().await;
    for i in 0..5 {
        client
            .put(Put::new("c", format!("{i}")))
            .await
            .expect("put");
    }
    client
        .compact(Revision::new(5), true)
        .await
        .expect("compact");
    let result = client
        .watch(WatchOptions::key("c").with_start_revision(Revision::new(3)))
        .await;
    // etcd creates the watch, then cancels it; either way the caller sees
    // Compacted with the compact revision, and the watcher ends.
    let error = match result {
        Err(error) => error,
        Ok(mut watcher) => {
            let error = next(&mut watcher).await.expect_err("compacted");
            let end = tokio::time::timeout(WAIT, watcher.next())
                .await
                .expect("ends");
            assert!(end.is_none(), "the watcher ends after the error: {end:?}");
            error
        }
    };
    assert!(
        matches!(
            error,
            Error::Compacted {
                compact_revision: Some(r)
            } if r == Revision::new(5)
        ),
        "{error:?}"
    );
    // At the compact revision itself, the watch works.
    let mut watcher = client
        .watch(WatchOptions::key("c").with_start_revision(Revision::new(5)))
        .await
        .expect("watch at the compact revision");
    let seen = events(&mut watcher, 2).await;
    assert_eq!(seen[0].revision(), Revision::new(5));
}

async fn many_watchers_share_one_stream(flavor: Flavor) {
    let cluster = Cluster::start(flavor, 1).await;
    let client = cluster.client().await;
    let mut watchers = Vec::new();
    for i in 0..20 {
        watchers.push(client.watch(format!("m/{i}")).await.expect("watch"));
    }
    // Dropped watchers are cancelled and do not disturb the others.
    let dropped: Vec<Watcher> = watchers.drain(10..).collect();
    drop(dropped);
    for i in 0..20 {
        client
            .put(Put::new(format!("m/{i}"), format!("{i}")))
            .await
            .expect("put");
    }
    for (i, watcher) in watchers.iter_mut().enumerate() {
        let seen = events(watcher, 1).await;
        assert_eq!(seen[0].kv.key, format!("m/{i}").into_bytes());
    }
}

/// What the writer saw: revision of each acknowledged put, and how many
/// writes ended ambiguous.
#[derive(Default)]
struct Writes {
    acked: BTreeMap<String, Revision>,
    ambiguous: usize,
}

/// Puts `w/<n>` keys one after another until `stop`, through `client`.
async fn write_until(client: Client, stop: Arc<AtomicBool>) -> Writes {
    let mut writes = Writes::default();
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("w/{n:06}");
        n += 1;
        match client.put(Put::new(key.clone(), "v")).await {
            Ok(r) => {
                writes.acked.insert(key, r.header.revision);
            }
            Err(Error::Ambiguous { status }) => {
                if writes.ambiguous < 3 {
                    eprintln!("writer: {key}: ambiguous: {status:?}");
                }
                writes.ambiguous += 1
            }
            // Nothing was applied (e.g. no leader until the deadline).
            Err(error) => eprintln!("writer: {key}: {error}"),
        }
    }
    writes
}

/// Reads the watch until it delivered revision `revision`.
async fn watch_until(watcher: &mut Watcher, seen: &mut Vec<cairn_client::Event>, revision: i64) {
    while seen.last().map_or(0, |e| e.revision().get()) < revision {
        seen.extend(next(watcher).await.expect("watch").events);
    }
}

/// The member serving a watch stream dies mid-watch, twice: first a
/// follower while the leader goes on committing (so a resume from anywhere
/// but the last revision + 1 shows as a gap or a duplicate), then the
/// leader (a leader change). Each time the watch moves to the other
/// endpoint it has and resumes. Every revision committed under the prefix
/// is delivered exactly once, in order, with no gap.
async fn resumes_across_leader_kill(flavor: Flavor) {
    let mut cluster = Cluster::start(flavor, 3).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    // The watch client knows two members, the follower first: its first
    // request (the watch stream) goes to the first endpoint.
    let endpoints = [cluster.endpoint(follower), cluster.endpoint(leader)];
    let watch_client = Client::connect(&endpoints, ConnectOptions::default())
        .await
        .expect("connect");
    let mut watcher = watch_client
        .watch(WatchOptions::prefix("w/"))
        .await
        .expect("watch");
    let start = watcher.start_revision();

    let writer_client = cluster.client().await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(writer_client.clone(), Arc::clone(&stop)));

    let mut seen: Vec<cairn_client::Event> = Vec::new();
    watch_until(&mut watcher, &mut seen, start.get() + 30).await;
    cluster.kill(follower).await;
    let follower_killed_at = seen.last().expect("events").revision().get();
    // The watch is on the leader now; bring the follower back for quorum.
    watch_until(&mut watcher, &mut seen, follower_killed_at + 30).await;
    cluster.restart(follower).await;
    cluster.leader().await;
    watch_until(&mut watcher, &mut seen, follower_killed_at + 60).await;
    cluster.kill(leader).await;
    let leader_killed_at = seen.last().expect("events").revision().get();
    // The watch is back on the follower; a new leader takes writes.
    watch_until(&mut watcher, &mut seen, leader_killed_at + 30).await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.expect("writer");

    // The truth: every w/ key (each written once), at its revision.
    let truth = writer_client
        .get(Get::prefix("w/"))
        .await
        .expect("final read");
    let last = truth
        .kvs
        .iter()
        .map(|kv| kv.mod_revision)
        .max()
        .expect("keys");
    watch_until(&mut watcher, &mut seen, last.get()).await;

    let revisions: Vec<i64> = seen.iter().map(|e| e.revision().get()).collect();
    assert_eq!(
        revisions[0],
        start.get(),
        "the first write is the first event"
    );
    for pair in revisions.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "revisions are contiguous: no gap, no duplicate (kills at {follower_killed_at} and {leader_killed_at})"
        );
    }
    let watched: BTreeMap<Vec<u8>, Revision> = seen
        .iter()
        .map(|e| (e.kv.key.clone(), e.revision()))
        .collect();
    let stored: BTreeMap<Vec<u8>, Revision> = truth
        .kvs
        .iter()
        .map(|kv| (kv.key.clone(), kv.mod_revision))
        .collect();
    assert_eq!(watched, stored, "the watch saw exactly what was committed");
    for (key, revision) in &writes.acked {
        assert_eq!(
            stored.get(key.as_bytes()),
            Some(revision),
            "acknowledged write {key} is stored at its revision"
        );
    }
    eprintln!(
        "{flavor:?}: {} events, {} acknowledged writes, {} ambiguous, kills at revisions {follower_killed_at} and {leader_killed_at}",
        seen.len(),
        writes.acked.len(),
        writes.ambiguous
    );
}
