//! Crash recovery: a child process (this test binary, re-run as the
//! `victim` test) works on a store and is killed with SIGKILL at varying
//! points of append, apply, physical compaction and snapshot install. The
//! store is then reopened and nothing acknowledged may be missing or
//! inconsistent.

use std::io::Write;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use cairn_proto::etcdserverpb::{CompactionRequest, PutRequest};
use cairn_raft_storage::{open, Error, Options, Request, TypeConfig};
use openraft::storage::{
    RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine,
};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

use crate::support::open_dir;

/// Runs the child until `stop` says so, kills it, and returns its lines.
fn run_and_kill(args: &[&Path], stage: &str, mut stop: impl FnMut(&str) -> bool) -> Vec<String> {
    let dirs: Vec<String> = args.iter().map(|p| p.display().to_string()).collect();
    let mut child: Child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash::victim",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(VICTIM, format!("{stage} {}", dirs.join(" ")))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let out = BufReader::new(child.stdout.take().unwrap());
    for line in out.lines() {
        let line = line.unwrap();
        let done = stop(&line);
        lines.push(line);
        if done {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    lines
}

/// Set in the child: "<stage> <dir> [<dir2>]".
const VICTIM: &str = "CAIRN_CRASH_VICTIM";

fn entry(index: u64, req: Request) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(req),
    }
}

fn put(i: u64, keys: u64) -> Request {
    Request::Put(PutRequest {
        key: format!("k{:05}", i % keys).into_bytes(),
        value: format!("v{i}").into_bytes(),
        ..Default::default()
    })
}

/// Put i of the defrag stage: k(i % 200), a 4 KiB value naming i.
fn big_put(i: u64) -> Request {
    let mut value = format!("v{i}-").into_bytes();
    value.resize(4096, b'x');
    Request::Put(PutRequest {
        key: format!("k{:05}", i % 200).into_bytes(),
        value,
        ..Default::default()
    })
}

/// Prints one acknowledgement line, at once.
fn say(line: String) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// In a child (VICTIM set), runs a stage until killed. Run plainly, it runs
/// each stage for a bounded number of steps instead, which must not fail.
#[tokio::test]
async fn victim() {
    if let Ok(spec) = std::env::var(VICTIM) {
        let args: Vec<&str> = spec.split(' ').collect();
        // End the harness's "test crash::victim ... " line first.
        say(String::new());
        workload(args[0], &args[1..], u64::MAX).await;
        return;
    }
    for stage in ["append", "apply", "compact", "defrag"] {
        let dir = tempfile::tempdir().unwrap();
        workload(stage, &[dir.path().to_str().unwrap()], 20).await;
        assert!(open_dir(dir.path()).store.revision() >= 1);
    }
}

/// One stage's workload; `limit` bounds its open-ended loop.
async fn workload(stage: &str, dirs: &[&str], limit: u64) {
    let dir = dirs[0];
    let mut o = open(&Options::new(dir)).expect("open");
    match stage {
        // Log entries i = 1.. each put k(i % 1000); "ack i" once flushed.
        "append" => {
            for i in 1..=limit {
                o.log_store
                    .blocking_append(vec![entry(i, put(i, 1000))])
                    .await
                    .unwrap();
                say(format!("ack {i}"));
            }
        }
        // As append, and each entry applied after its flush.
        "apply" => {
            for i in 1..=limit {
                let e = entry(i, put(i, 1000));
                o.log_store.blocking_append(vec![e.clone()]).await.unwrap();
                o.state_machine.apply(vec![e]).await.unwrap();
                say(format!("ack {i}"));
            }
        }
        // 3000 puts over 100 keys, a compaction at 3001, then more puts.
        "compact" => {
            let mut i = 1;
            let mut step = |req: Request| {
                let e = entry(i, req);
                i += 1;
                e
            };
            for n in 1..=3000 {
                let e = step(put(n, 100));
                o.log_store.blocking_append(vec![e.clone()]).await.unwrap();
                o.state_machine.apply(vec![e]).await.unwrap();
            }
            let e = step(Request::Compaction(CompactionRequest {
                revision: 3001,
                physical: true,
            }));
            o.log_store.blocking_append(vec![e.clone()]).await.unwrap();
            o.state_machine.apply(vec![e]).await.unwrap();
            say("compacting".into());
            for n in 3001..3001u64.saturating_add(limit) {
                let e = step(put(n, 100));
                o.log_store.blocking_append(vec![e.clone()]).await.unwrap();
                o.state_machine.apply(vec![e]).await.unwrap();
                say(format!("ack {n}"));
            }
        }
        // As apply, with 4 KiB values, while another thread defragments
        // over and over ("defragged n" after each).
        "defrag" => {
            let store = o.store.clone();
            let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let defrags = {
                let done = done.clone();
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !done.load(std::sync::atomic::Ordering::SeqCst) {
                        store.defragment().expect("defragment");
                        n += 1;
                        say(format!("defragged {n}"));
                    }
                })
            };
            for i in 1..=limit {
                let e = entry(i, big_put(i));
                o.log_store.blocking_append(vec![e.clone()]).await.unwrap();
                o.state_machine.apply(vec![e]).await.unwrap();
                say(format!("ack {i}"));
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            defrags.join().unwrap();
        }
        // Build snapshots of `dir` and install them into `dir2`, forever.
        "snapshot" => {
            let mut dst = open(&Options::new(dirs[1])).expect("open dst");
            for n in 1..=limit {
                let snap = o
                    .state_machine
                    .get_snapshot_builder()
                    .await
                    .build_snapshot()
                    .await
                    .unwrap();
                // The transport's part: the bytes, into the receiver's file.
                let mut data = dst.state_machine.begin_receiving_snapshot().await.unwrap();
                let mut sent = snap.snapshot;
                tokio::io::copy(&mut sent, &mut data).await.unwrap();
                tokio::io::AsyncWriteExt::flush(&mut data).await.unwrap();
                dst.state_machine
                    .install_snapshot(&snap.meta, data)
                    .await
                    .unwrap();
                say(format!("installed {n}"));
            }
        }
        other => panic!("unknown stage {other}"),
    }
}

fn last_ack(lines: &[String]) -> u64 {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("ack "))
        .filter_map(|n| n.parse().ok())
        .max()
        .unwrap_or(0)
}

/// Applies the log entries the state machine had not applied (as openraft
/// does on restart), then returns the opened store.
async fn reopen_and_catch_up(dir: &Path) -> cairn_raft_storage::Opened {
    let mut o = open_dir(dir);
    let state = o.log_store.get_log_state().await.unwrap();
    let applied = o.store.applied_index().unwrap_or(0);
    let last = state.last_log_id.map_or(0, |l| l.index);
    assert!(
        applied <= last,
        "the state machine ({applied}) is never ahead of the log ({last})"
    );
    let missing = o
        .log_store
        .try_get_log_entries(applied + 1..=last)
        .await
        .unwrap();
    assert_eq!(missing.len() as u64, last - applied, "no hole in the log");
    o.state_machine.apply(missing).await.unwrap();
    o
}

#[tokio::test]
async fn kill_during_append_loses_no_acknowledged_entry() {
    for kill_after in [1u64, 37, 150] {
        let dir = tempfile::tempdir().unwrap();
        let lines = run_and_kill(&[dir.path()], "append", |l| {
            l == format!("ack {kill_after}")
        });
        let acked = last_ack(&lines);
        assert!(acked >= kill_after);
        let mut o = open_dir(dir.path());
        let state = o.log_store.get_log_state().await.unwrap();
        assert!(
            state.last_log_id.unwrap().index >= acked,
            "acked {acked}, log has {:?}",
            state.last_log_id
        );
        let entries = o.log_store.try_get_log_entries(1..=acked).await.unwrap();
        assert_eq!(entries.len() as u64, acked);
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.log_id.index, i as u64 + 1);
        }
    }
}

#[tokio::test]
async fn kill_during_apply_recovers_every_write_at_its_revision() {
    for kill_after in [3u64, 250, 1300] {
        let dir = tempfile::tempdir().unwrap();
        let lines = run_and_kill(&[dir.path()], "apply", |l| l == format!("ack {kill_after}"));
        let acked = last_ack(&lines);
        let o = reopen_and_catch_up(dir.path()).await;
        let rev = o.store.revision();
        assert!(
            rev > acked as i64,
            "revision {rev} after {acked} acknowledged puts"
        );
        // Entry i is a put at revision i + 1: check every acknowledged one.
        for i in 1..=acked {
            let key = format!("k{:05}", i % 1000);
            let r = o
                .store
                .range(&cairn_proto::etcdserverpb::RangeRequest {
                    key: key.clone().into(),
                    revision: i as i64 + 1,
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(
                r.kvs[0].value,
                format!("v{i}").into_bytes(),
                "{key} at {}",
                i + 1
            );
            assert_eq!(r.kvs[0].mod_revision, i as i64 + 1);
        }
    }
}

#[tokio::test]
async fn kill_during_physical_compaction_resumes_it() {
    for acks in [0usize, 5, 60] {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = 0;
        let lines = run_and_kill(&[dir.path()], "compact", |l| {
            if l.starts_with("ack") {
                seen += 1;
            }
            (l == "compacting" && acks == 0) || seen >= acks && acks > 0
        });
        assert!(lines.iter().any(|l| l == "compacting"));
        let o = reopen_and_catch_up(dir.path()).await;
        assert_eq!(o.store.compact_revision(), 3001);
        o.store.wait_compacted(3001).await;
        let below = o.store.range(&cairn_proto::etcdserverpb::RangeRequest {
            key: b"k00001".to_vec(),
            revision: 3000,
            ..Default::default()
        });
        assert!(matches!(below, Err(Error::Compacted)));
        // Every key still reads its newest value at the compact revision:
        // put n went to k(n % 100) at revision n + 1.
        for k in 0..100u64 {
            let r = o
                .store
                .range(&cairn_proto::etcdserverpb::RangeRequest {
                    key: format!("k{k:05}").into_bytes(),
                    revision: 3001,
                    ..Default::default()
                })
                .unwrap();
            let n = if k == 0 { 3000 } else { 2900 + k };
            assert_eq!(r.kvs[0].value, format!("v{n}").into_bytes(), "k{k:05}");
            assert_eq!(r.kvs[0].version, 30);
        }
        // And the superseded revisions are gone from disk: one per key at or
        // below 3001, and everything written after it.
        let after = o.store.revision() - 3001;
        assert_eq!(o.store.stored_revisions() as i64, 100 + after);
    }
}

#[tokio::test]
async fn kill_during_snapshot_install_leaves_a_whole_state() {
    let src = tempfile::tempdir().unwrap();
    {
        let mut h = crate::support::Harness::new(src.path());
        for i in 0..2000 {
            h.apply(Request::Put(PutRequest {
                key: format!("key{:04}", i % 700).into_bytes(),
                value: vec![b'x'; 64],
                ..Default::default()
            }))
            .await;
        }
    }
    for installs in [1u32, 2, 4] {
        let dst = tempfile::tempdir().unwrap();
        let lines = run_and_kill(&[src.path(), dst.path()], "snapshot", |l| {
            l == format!("installed {installs}")
        });
        assert_eq!(
            lines.last(),
            Some(&format!("installed {installs}")),
            "the victim died before its installs"
        );
        let mut o = open_dir(dst.path());
        // Whatever instant the kill hit, the store is the snapshot's whole
        // state: every revision, every key.
        assert_eq!(o.store.revision(), 2001);
        let all = o
            .store
            .range(&cairn_proto::etcdserverpb::RangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(all.count, 700);
        let (applied, _) = o.state_machine.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(2000));
    }
}

/// Killed while a defragment copies, catches up or switches (the kills
/// land at different points of its loop): the store reopens on one whole
/// generation with every acknowledged write at its revision.
#[tokio::test]
async fn kill_during_defragment_loses_nothing() {
    for kill_after in [150u64, 400, 900, 1500] {
        let dir = tempfile::tempdir().unwrap();
        let mut defrags = 0;
        let lines = run_and_kill(&[dir.path()], "defrag", |l| {
            if l.starts_with("defragged") {
                defrags += 1;
            }
            l == format!("ack {kill_after}")
        });
        let acked = last_ack(&lines);
        let o = reopen_and_catch_up(dir.path()).await;
        let gens: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("db") && n != "db-current")
            .collect();
        assert_eq!(gens.len(), 1, "one generation left: {gens:?}");
        assert!(o.store.revision() > acked as i64);
        for i in 1..=acked {
            let r = o
                .store
                .range(&cairn_proto::etcdserverpb::RangeRequest {
                    key: format!("k{:05}", i % 200).into_bytes(),
                    revision: i as i64 + 1,
                    ..Default::default()
                })
                .unwrap();
            let Request::Put(want) = big_put(i) else {
                unreachable!()
            };
            assert_eq!(
                r.kvs[0].value, want.value,
                "put {i} after {defrags} defragments"
            );
        }
        eprintln!("killed after {acked} acks, {defrags} defragments, in {gens:?}");
    }
}
