//! Watch: a differential script against etcd 3.4, recorded streams checked
//! by the watch validator (`cairn_jepsen::watch`), slow and stalled
//! streams, fragments, and the `etcd-client` crate. etcdctl's watch is in
//! `etcdctl.rs`.

use std::collections::BTreeSet;

use cairn_jepsen::watch::{check, check_complete, Change};
use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::WatchCreateRequest;
use cairn_server::{Config, Node};
use etcd_client::{EventType, WatchOptions};

use crate::client;
use crate::support::diff::{compact, del, del_span, put, txn, IntoOp};
use crate::support::recorder::{connect, Recorder, Writer};
use crate::support::watch_diff::{Step, WatchScript};

fn watch(key: &str, range_end: &str, start_revision: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        range_end: range_end.as_bytes().to_vec(),
        start_revision,
        ..Default::default()
    }
}

/// Puts, deletes, txns, compaction, cancel and progress, watched through
/// two streams; every response must match etcd's.
#[tokio::test]
async fn watch_script_matches_etcd() {
    use Step::*;
    let mut s = WatchScript::new();
    s.step("put a", Write(put("a", "1").into())); // 2
    s.step("put b", Write(put("b", "1").into())); // 3
    s.step("put a again", Write(put("a", "2").into())); // 4
    s.step("watch a from now", Watch(0, watch("a", "", 0)));
    s.step(
        "watch everything from 2 with prev_kv",
        Watch(
            0,
            WatchCreateRequest {
                prev_kv: true,
                ..watch("", "\0", 2)
            },
        ),
    );
    s.step(
        "watch [a, c) from 3 without puts",
        Watch(
            1,
            WatchCreateRequest {
                filters: vec![FilterType::Noput as i32],
                ..watch("a", "c", 3)
            },
        ),
    );
    s.step(
        "watch b with id 7 without deletes",
        Watch(
            1,
            WatchCreateRequest {
                watch_id: 7,
                filters: vec![FilterType::Nodelete as i32],
                ..watch("b", "", 0)
            },
        ),
    );
    s.step(
        "duplicate watch id",
        Watch(
            1,
            WatchCreateRequest {
                watch_id: 7,
                ..watch("b", "", 0)
            },
        ),
    );
    s.step("empty range", Watch(1, watch("b", "a", 0)));
    s.step("auto id after an explicit one", Watch(1, watch("c", "", 0)));
    s.step("put a a third time", Write(put("a", "3").into())); // 5
    s.step(
        "txn: put a, put c, delete b",
        Write(
            txn(
                vec![],
                vec![put("a", "4").op(), put("c", "1").op(), del("b").op()],
                vec![],
            )
            .into(),
        ),
    ); // 6
    s.step("delete [a, z)", Write(del_span("a", "z").into())); // 7
    s.step("progress on stream 0", Progress(0));
    s.step("progress on stream 1", Progress(1));
    s.step("cancel a watcher", Cancel(0, 0));
    s.step("cancel an unknown id", Cancel(0, 99));
    s.step("put after cancel", Write(put("a", "5").into())); // 8
    s.step("compact at 5", Write(compact(5).into()));
    s.step(
        "watch below the compact revision",
        Watch(1, watch("a", "", 3)),
    );
    s.step("watch at the compact revision", Watch(1, watch("a", "", 5)));
    s.step("watch from the future", Watch(1, watch("a", "", 10)));
    s.step("put 9", Write(put("a", "6").into())); // 9
    s.step("put 10", Write(put("a", "7").into())); // 10
    s.step("progress after the future watch fired", Progress(1));
    s.step(
        "watch from a negative revision",
        Watch(2, watch("a", "", -3)),
    );
    s.run().await;
}

/// A negative start on a store never compacted: etcd cancels the watcher
/// as compacted, with compact revision -1.
#[tokio::test]
async fn negative_start_matches_etcd() {
    use Step::*;
    let mut s = WatchScript::new();
    s.step("put a", Write(put("a", "1").into())); // 2
    s.step("watch from -3", Watch(0, watch("a", "", -3)));
    s.step("watch from -1", Watch(0, watch("a", "", -1)));
    s.step("put a again", Write(put("a", "2").into())); // 3
    s.run().await;
}

fn endpoint(node: &Node) -> String {
    format!("http://{}", node.client_addrs()[0])
}

/// An in-process node for a watch test, with its writers and recorders.
struct Fixture {
    node: Node,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Self {
        Self::start_with(|c| c).await
    }

    async fn start_with(config: impl FnOnce(Config) -> Config) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let node = Node::start(config(Config::default_for_tests(dir.path())))
            .await
            .expect("node starts");
        Self { node, _dir: dir }
    }

    async fn writer(&self) -> Writer {
        Writer::new(connect(&endpoint(&self.node), false).await)
    }

    /// A recorded stream; with `small_windows`, one that backs up into the
    /// server soon after its client stops reading.
    async fn recorder(&self, small_windows: bool) -> Recorder {
        Recorder::open(connect(&endpoint(&self.node), small_windows).await).await
    }

    async fn stop(self) {
        self.node.shutdown().await;
    }
}

fn with_prev_kv(c: WatchCreateRequest) -> WatchCreateRequest {
    WatchCreateRequest { prev_kv: true, ..c }
}

/// Every create option on one stream, through puts, deletes, txns and a
/// cancel; the validator checks the whole recording, and that every
/// watcher got everything up to the last revision.
#[tokio::test]
async fn recorded_streams_keep_every_guarantee() {
    let f = Fixture::start().await;
    let mut w = f.writer().await;
    let mut r = f.recorder(false).await;
    let mut live = BTreeSet::new();
    for i in 0..20 {
        let key = format!("k{}", i % 5);
        w.put(&key, format!("v{i}")).await;
        live.insert(key);
    }
    w.delete("k1").await;
    live.remove("k1");

    r.create(with_prev_kv(watch("k", "l", 0)));
    r.create(watch("k2", "", 2));
    r.create(WatchCreateRequest {
        filters: vec![FilterType::Noput as i32],
        ..watch("", "\0", 5)
    });
    r.create(WatchCreateRequest {
        filters: vec![FilterType::Nodelete as i32],
        progress_notify: true,
        ..with_prev_kv(watch("k3", "", 0))
    });
    r.create(watch("k4", "", 0));
    r.sync().await;

    for i in 0..300 {
        let key = format!("k{}", i % 7);
        match i % 11 {
            3 if live.contains(&key) => {
                w.delete(&key).await;
                live.remove(&key);
            }
            5 => {
                let mut changes = vec![Change::put(format!("t{i}"), "x"), Change::put("k9", "y")];
                if live.remove("k0") {
                    changes.push(Change::delete("k0"));
                }
                w.txn(changes).await;
                live.insert("k9".into());
            }
            _ => {
                w.put(&key, format!("v{i}")).await;
                live.insert(key);
            }
        }
        if i == 150 {
            r.cancel(4);
        }
    }
    let rev = r.sync().await;
    assert_eq!(rev, w.history.revision());
    let report = check_complete(&w.history, &r.stream, rev);
    report.ensure().unwrap();
    assert_eq!(report.watchers, 5);
    assert!(report.events > 400, "{report:?}");
    f.stop().await;
}

/// A stream whose client stops reading backs up into the server: its
/// watchers fall back to history while every write completes, and once it
/// reads again it gets everything, in order, once.
#[tokio::test]
async fn a_stalled_stream_blocks_no_write_and_catches_up() {
    let f = Fixture::start().await;
    let mut w = f.writer().await;
    let mut slow = f.recorder(true).await;
    let mut fast = f.recorder(false).await;
    for r in [&mut slow, &mut fast] {
        r.create(with_prev_kv(watch("", "\0", 0)));
        r.next().await;
    }
    // 2 MB of events: far more than the slow stream's 64 KiB window and
    // its server-side queue. None of these writes may wait for it.
    let value = vec![b'x'; 2048];
    for i in 0..1000 {
        w.put(&format!("k{}", i % 50), value.clone()).await;
    }
    let rev = fast.sync().await;
    assert_eq!(slow.sync().await, rev);
    for r in [&slow, &fast] {
        let report = check_complete(&w.history, &r.stream, rev);
        report.ensure().unwrap();
        assert_eq!(report.events, 1000);
    }
    f.stop().await;
}

/// A watcher that fell behind and whose next revision is then compacted is
/// cancelled with the compact revision: it never skips events (etcd
/// #18089, #17529).
#[tokio::test]
async fn compaction_during_catch_up_cancels_the_watcher() {
    let f = Fixture::start().await;
    let mut w = f.writer().await;
    let mut slow = f.recorder(true).await;
    slow.create(watch("k", "l", 0));
    slow.next().await;
    let value = vec![b'x'; 2048];
    let mut rev = 0;
    for i in 0..600 {
        rev = w.put(&format!("k{}", i % 10), value.clone()).await;
    }
    w.compact(rev).await;
    // Read until the cancel; everything before it must be gap-free.
    let cancel = loop {
        let resp = slow.next().await;
        if resp.canceled {
            break resp;
        }
    };
    assert_eq!(cancel.compact_revision, rev);
    check(&w.history, &slow.stream).ensure().unwrap();
    // The watcher is gone, the stream is not: a new watcher from the
    // compact revision works.
    slow.create(watch("k", "l", rev));
    w.put("k0", "after").await;
    let last = slow.sync().await;
    check_complete(&w.history, &slow.stream, last)
        .ensure()
        .unwrap();
    f.stop().await;
}

/// A revision bigger than `--max-request-bytes` is split into fragments
/// only for a watcher that asked for them.
#[tokio::test]
async fn fragments_only_when_asked() {
    let f = Fixture::start_with(|c| Config {
        max_request_bytes: 4096,
        ..c
    })
    .await;
    let mut w = f.writer().await;
    let mut r = f.recorder(false).await;
    for i in 0..4 {
        w.put(&format!("k{i}"), vec![b'v'; 1500]).await;
    }
    r.create(WatchCreateRequest {
        fragment: true,
        ..with_prev_kv(watch("k", "l", 0))
    });
    r.create(with_prev_kv(watch("k", "l", 0)));
    r.sync().await;
    // One revision of four deletes, each carrying a 1500-byte prev_kv.
    w.txn((0..4).map(|i| Change::delete(format!("k{i}"))).collect())
        .await;
    let rev = r.sync().await;
    let shape = |id: i64| -> Vec<(usize, bool)> {
        r.stream
            .responses
            .iter()
            .filter(|resp| resp.watch_id == id && !resp.events.is_empty())
            .map(|resp| (resp.events.len(), resp.fragment))
            .collect()
    };
    let fragments = shape(0);
    assert!(fragments.len() > 1, "{fragments:?}");
    assert!(fragments[..fragments.len() - 1].iter().all(|f| f.1));
    assert!(!fragments[fragments.len() - 1].1);
    assert_eq!(fragments.iter().map(|f| f.0).sum::<usize>(), 4);
    assert_eq!(shape(1), [(4, false)]);
    check_complete(&w.history, &r.stream, rev).ensure().unwrap();
    f.stop().await;
}

/// The `etcd-client` crate: several watchers on one stream, prev_kv,
/// filters, progress and cancel.
#[tokio::test]
async fn etcd_client_watch() {
    let f = Fixture::start().await;
    let mut c = client(&f.node).await;
    c.put("a/1", "old", None).await.unwrap(); // 2
    let mut stream = c
        .watch(
            "a/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    let created = stream.message().await.unwrap().unwrap();
    assert!(created.created());
    assert_eq!(created.header().unwrap().revision(), 2);
    let prefix_id = created.watch_id();
    stream
        .watch(
            "b",
            Some(
                WatchOptions::new()
                    .with_start_revision(1)
                    .with_filters([etcd_client::WatchFilterType::NoPut]),
            ),
        )
        .await
        .unwrap();
    let created = stream.message().await.unwrap().unwrap();
    let b_id = created.watch_id();
    assert_ne!(b_id, prefix_id);

    c.put("a/1", "new", None).await.unwrap(); // 3
    c.put("b", "1", None).await.unwrap(); // 4
    c.delete("b", None).await.unwrap(); // 5
    let resp = stream.message().await.unwrap().unwrap();
    assert_eq!(resp.watch_id(), prefix_id);
    let ev = &resp.events()[0];
    assert_eq!(ev.event_type(), EventType::Put);
    assert_eq!(ev.kv().unwrap().value(), b"new");
    assert_eq!(ev.prev_kv().unwrap().value(), b"old");
    // Only b's delete: its put is filtered out.
    let resp = stream.message().await.unwrap().unwrap();
    assert_eq!(resp.watch_id(), b_id);
    assert_eq!(resp.events().len(), 1);
    assert_eq!(resp.events()[0].event_type(), EventType::Delete);
    assert_eq!(resp.events()[0].kv().unwrap().mod_revision(), 5);

    stream.request_progress().await.unwrap();
    let progress = stream.message().await.unwrap().unwrap();
    assert_eq!(progress.watch_id(), -1);
    assert!(progress.events().is_empty());
    assert_eq!(progress.header().unwrap().revision(), 5);

    stream.cancel(prefix_id).await.unwrap();
    let canceled = stream.message().await.unwrap().unwrap();
    assert!(canceled.canceled());
    assert_eq!(canceled.watch_id(), prefix_id);
    c.put("a/2", "x", None).await.unwrap(); // 6: nobody watches it now
    c.delete("b", None).await.unwrap(); // deletes nothing: no event
    c.put("b", "2", None).await.unwrap(); // 7
    c.delete("b", None).await.unwrap(); // 8
    let resp = stream.message().await.unwrap().unwrap();
    assert_eq!(resp.watch_id(), b_id);
    assert_eq!(resp.events()[0].kv().unwrap().mod_revision(), 8);
    f.stop().await;
}

/// 10,000 watchers over 100 streams while 8 writers run, one stream
/// stalled throughout: every write completes, and every stream, the
/// stalled one included once it reads again, gets exactly its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_watchers_and_a_stalled_stream() {
    const STREAMS: usize = 100;
    const PER_STREAM: usize = 100;
    const KEYS: usize = 500;
    const WRITERS: usize = 8;
    const PUTS_PER_WRITER: usize = 250;
    let f = Fixture::start().await;
    let ep = endpoint(&f.node);

    // Stream 0 is stalled (tiny windows, never read until the end); it
    // watches everything. The others watch single keys and prefixes.
    let mut streams = Vec::with_capacity(STREAMS);
    for s in 0..STREAMS {
        let mut r = f.recorder(s == 0).await;
        for j in 0..PER_STREAM {
            let create = match (s, j % 10) {
                (0, _) => with_prev_kv(watch("", "\0", 0)),
                (_, 0) => watch(&format!("k{}", j % 10), &format!("k{}", j % 10 + 1), 0),
                _ => watch(&format!("k{}", (s * PER_STREAM + j) % KEYS), "", 0),
            };
            r.create(create);
        }
        r.sync().await;
        streams.push(r);
    }

    let writers = (0..WRITERS).map(|wi| {
        let ep = ep.clone();
        tokio::spawn(async move {
            let mut kv =
                cairn_proto::etcdserverpb::kv_client::KvClient::new(connect(&ep, false).await);
            let mut done = Vec::new();
            for i in 0..PUTS_PER_WRITER {
                let key = format!("k{}", (wi * PUTS_PER_WRITER + i * 7) % KEYS);
                let value = format!("w{wi}-{i}").into_bytes();
                let resp = kv
                    .put(cairn_proto::etcdserverpb::PutRequest {
                        key: key.clone().into_bytes(),
                        value: value.clone(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                done.push((resp.header.unwrap().revision, key, value));
            }
            done
        })
    });
    let mut writes = Vec::new();
    for w in writers.collect::<Vec<_>>() {
        writes.extend(w.await.unwrap());
    }
    writes.sort();
    let mut history = cairn_jepsen::watch::History::new();
    for (rev, key, value) in writes {
        history.commit(rev, [Change::put(key, value)]).unwrap();
    }

    let mut events = 0;
    for r in streams.iter_mut().rev() {
        let rev = r.sync().await;
        assert_eq!(rev, history.revision());
        let report = check_complete(&history, &r.stream, rev);
        report.ensure().unwrap();
        events += report.events;
    }
    assert_eq!(
        streams[0]
            .stream
            .responses
            .iter()
            .map(|r| r.events.len())
            .sum::<usize>(),
        WRITERS * PUTS_PER_WRITER * PER_STREAM
    );
    assert!(events > WRITERS * PUTS_PER_WRITER * PER_STREAM);
    f.stop().await;
}

/// A progress request waits while a watcher of its stream starts in the
/// future: a client resumes from a progress revision, and must not be told
/// of one below its start (etcd #20221).
#[tokio::test]
async fn progress_waits_for_a_watcher_from_the_future() {
    let f = Fixture::start().await;
    let mut w = f.writer().await;
    let mut r = f.recorder(false).await;
    w.put("a", "1").await; // 2
    r.create(watch("a", "", 5));
    assert!(r.next().await.created);
    r.request_progress();
    w.put("b", "1").await; // 3
    w.put("b", "2").await; // 4: the next revision is the watcher's start
    let progress = r.next().await;
    assert_eq!(progress.watch_id, -1);
    assert!(progress.events.is_empty());
    assert_eq!(progress.header.unwrap().revision, 4);
    w.put("a", "2").await; // 5
    let last = r.sync().await;
    let report = check_complete(&w.history, &r.stream, last);
    report.ensure().unwrap();
    assert_eq!(report.events, 1);
    f.stop().await;
}
