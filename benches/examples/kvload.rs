//! A small load loop for etcd v3 endpoints: `clients` concurrent workers
//! spread over `conns` connections (round-robin over the comma-separated
//! `--endpoint`s) each send `total / clients`
//! requests back to back, and the run prints throughput and latency
//! percentiles as one JSON line.
//!
//! `cargo run --release -p cairn-benches --example kvload -- --endpoint
//! http://127.0.0.1:2379 --op put --clients 64 --total 100000`
//!
//! The full benchmark tool (cairn-bench) replaces this in the benchmark
//! issue; scripts/compare-kv.sh runs it against cairn and etcd in turn.

mod common;

use std::time::Instant;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use etcd_client::{GetOptions, Txn, TxnOp};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Op {
    /// Put a random key of the key space.
    Put,
    /// Linearizable Range of one key.
    Get,
    /// Serializable Range of one key.
    GetSerializable,
    /// Put every key of the key space once, in Txns of `--txn-ops` puts
    /// (`--total` is ignored).
    Fill,
}

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoint: String,
    #[arg(long, value_enum, default_value = "put")]
    op: Op,
    #[arg(long, default_value_t = 64)]
    clients: usize,
    #[arg(long, default_value_t = 8)]
    conns: usize,
    #[arg(long, default_value_t = 100_000)]
    total: usize,
    #[arg(long, default_value_t = 10_000)]
    key_space: usize,
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Puts per Txn for `--op fill` (etcd's `--max-txn-ops` is 128).
    #[arg(long, default_value_t = 128)]
    txn_ops: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let conns = common::connect(&args.endpoint, args.conns).await?;
    if matches!(args.op, Op::Get | Op::GetSerializable) {
        // Fill the key space first so reads find values.
        let mut c = conns[0].clone();
        for k in 0..args.key_space {
            c.put(format!("key{k:08}"), vec![b'v'; args.val_size], None)
                .await?;
        }
    }
    if matches!(args.op, Op::Fill) {
        return fill(&args, &conns).await;
    }
    let per = args.total / args.clients.max(1);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.clients {
        let mut c = conns[w % conns.len()].clone();
        let (op, key_space, val_size) = (args.op, args.key_space, args.val_size);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            let value = vec![b'v'; val_size];
            // A cheap per-worker sequence spreads keys without a RNG crate.
            let mut k = w.wrapping_mul(2_654_435_761);
            for _ in 0..per {
                k = k
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let key = format!("key{:08}", (k >> 33) % key_space);
                let t = Instant::now();
                match op {
                    Op::Put => c.put(key, value.clone(), None).await.map(|_| ())?,
                    Op::Get => c.get(key, None).await.map(|_| ())?,
                    Op::GetSerializable => c
                        .get(key, Some(GetOptions::new().with_serializable()))
                        .await
                        .map(|_| ())?,
                    Op::Fill => unreachable!("fill runs on its own"),
                }
                lat.push(t.elapsed());
            }
            Ok::<_, etcd_client::Error>(lat)
        }));
    }
    let mut lat = Vec::with_capacity(args.total);
    for t in tasks {
        lat.extend(
            t.await
                .context("worker panicked")?
                .context("request failed")?,
        );
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort();
    println!(
        "{{\"op\":\"{:?}\",\"requests\":{},\"seconds\":{:.3},\"rps\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}",
        args.op,
        lat.len(),
        elapsed,
        lat.len() as f64 / elapsed,
        common::percentile(&lat, 0.50),
        common::percentile(&lat, 0.99)
    );
    Ok(())
}

/// Puts keys `key00000000`… of the key space, `txn_ops` to a Txn, from
/// `clients` workers taking Txns in turn; prints keys per second.
async fn fill(args: &Args, conns: &[etcd_client::Client]) -> anyhow::Result<()> {
    let txns = args.key_space.div_ceil(args.txn_ops.max(1));
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.clients.max(1) {
        let mut c = conns[w % conns.len()].clone();
        let next = next.clone();
        let (ops, key_space, val_size) = (args.txn_ops.max(1), args.key_space, args.val_size);
        tasks.push(tokio::spawn(async move {
            let value = vec![b'v'; val_size];
            loop {
                let t = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if t >= txns {
                    return Ok::<_, etcd_client::Error>(());
                }
                let puts: Vec<TxnOp> = (t * ops..((t + 1) * ops).min(key_space))
                    .map(|k| TxnOp::put(format!("key{k:08}"), value.clone(), None))
                    .collect();
                c.txn(Txn::new().and_then(puts)).await?;
            }
        }));
    }
    for t in tasks {
        t.await
            .context("worker panicked")?
            .context("a txn failed")?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{{\"op\":\"Fill\",\"keys\":{},\"seconds\":{:.3},\"keys_per_s\":{:.0}}}",
        args.key_space,
        elapsed,
        args.key_space as f64 / elapsed
    );
    Ok(())
}
