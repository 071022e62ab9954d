//! Micro-benches of the storage hot paths through cairn-raft-storage's
//! public API: applying puts to the MVCC store on sled (one put to an
//! entry, and a batch of 64 as the proposer makes under load), and ranges
//! over 100,000 keys (one key, a prefix of 100, a count of all).
//!
//! `cargo bench -p cairn-benches --bench storage`

use std::time::Duration;

use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use cairn_raft_storage::{open, Opened, Options, Request, TypeConfig};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

/// Keys in the store the ranges read.
const KEYS: usize = 100_000;
/// Bytes per value.
const VALUE: usize = 256;

fn key(n: usize) -> Vec<u8> {
    format!("key/{n:08}").into_bytes()
}

fn put(n: usize) -> Request {
    Request::Put(PutRequest {
        key: key(n),
        value: vec![b'v'; VALUE],
        ..PutRequest::default()
    })
}

/// A store in a fresh temp dir, and the next log index to apply at.
struct Bench {
    opened: Opened,
    next: u64,
    _dir: tempfile::TempDir,
}

impl Bench {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let opened = open(&Options::new(dir.path())).expect("open the store");
        Bench {
            opened,
            next: 1,
            _dir: dir,
        }
    }

    async fn apply(&mut self, request: Request) {
        let entry: Entry<TypeConfig> = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.next),
            payload: EntryPayload::Normal(request),
        };
        self.next += 1;
        self.opened
            .state_machine
            .apply(vec![entry])
            .await
            .expect("apply");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
}

fn apply(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("apply");
    for batch in [1usize, 64] {
        let mut bench = Bench::new();
        let mut n = 0usize;
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(BenchmarkId::new("puts", batch), |b| {
            b.iter(|| {
                let requests: Vec<Request> = (0..batch)
                    .map(|_| {
                        n = (n + 7_919) % KEYS;
                        put(n)
                    })
                    .collect();
                let request = if batch == 1 {
                    requests.into_iter().next().expect("one")
                } else {
                    Request::Batch(requests)
                };
                rt.block_on(bench.apply(request));
            })
        });
    }
    group.finish();
}

fn range(c: &mut Criterion) {
    let rt = runtime();
    let mut bench = Bench::new();
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(512) {
        rt.block_on(bench.apply(Request::Batch(chunk.iter().map(|&n| put(n)).collect())));
    }
    let store = bench.opened.store.clone();
    let mut group = c.benchmark_group("range");
    let mut n = 0usize;
    group.bench_function("one key", |b| {
        b.iter(|| {
            n = (n + 7_919) % KEYS;
            let request = RangeRequest {
                key: key(n),
                ..RangeRequest::default()
            };
            store.range(&request).expect("range")
        })
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function("prefix of 100", |b| {
        b.iter(|| {
            n = (n + 7_919) % (KEYS / 100);
            let request = RangeRequest {
                key: format!("key/{:06}", n).into_bytes(),
                range_end: format!("key/{:06}", n + 1).into_bytes(),
                ..RangeRequest::default()
            };
            store.range(&request).expect("range")
        })
    });
    group.throughput(Throughput::Elements(KEYS as u64));
    group.bench_function("count all", |b| {
        b.iter(|| {
            let request = RangeRequest {
                key: b"key/".to_vec(),
                range_end: b"key0".to_vec(),
                count_only: true,
                ..RangeRequest::default()
            };
            store.range(&request).expect("range")
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = apply, range
}
criterion_main!(benches);
