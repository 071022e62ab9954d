//! A lease load loop for one etcd v3 endpoint. Prints one JSON line.
//!
//! - `--op cycles`: `clients` workers each repeat grant → put with the
//!   lease → one keep-alive → revoke, `total / clients` times; reports
//!   cycles/s and cycle latency percentiles.
//! - `--op expiry`: grants `leases` leases of `ttl` seconds, each holding
//!   one key, then runs `clients` put workers until every lease has
//!   expired; reports put p99 before the expiry (the quiet baseline) and
//!   during it (from the TTL on, until the keys are gone).
//!
//! `cargo run --release -p cairn-benches --example leaseload -- --op cycles`

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use etcd_client::{Client, GetOptions, PutOptions};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Op {
    Cycles,
    Expiry,
}

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, alias = "endpoints", default_value = "http://127.0.0.1:2379")]
    endpoint: String,
    #[arg(long, value_enum, default_value = "cycles")]
    op: Op,
    #[arg(long, default_value_t = 32)]
    clients: usize,
    #[arg(long, default_value_t = 8)]
    conns: usize,
    #[arg(long, default_value_t = 10_000)]
    total: usize,
    #[arg(long, default_value_t = 10_000)]
    leases: usize,
    #[arg(long, default_value_t = 5)]
    ttl: i64,
}

async fn cycles(args: &Args, conns: &[Client]) -> anyhow::Result<()> {
    let per = args.total / args.clients.max(1);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.clients.max(1) {
        let mut c = conns[w % conns.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let t = Instant::now();
                let id = c.lease_grant(60, None).await?.id();
                c.put(
                    format!("cycle/{w}/{i}"),
                    "v",
                    Some(PutOptions::new().with_lease(id)),
                )
                .await?;
                let (mut keeper, mut answers) = c.lease_keep_alive(id).await?;
                keeper.keep_alive().await?;
                answers.message().await?;
                c.lease_revoke(id).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, etcd_client::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(
            t.await
                .context("worker panicked")?
                .context("cycle failed")?,
        );
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    println!(
        "{{\"op\":\"cycles\",\"cycles\":{},\"seconds\":{secs:.3},\"cycles_per_sec\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}",
        lat.len(),
        lat.len() as f64 / secs,
        common::percentile(&lat, 0.50),
        common::percentile(&lat, 0.99)
    );
    Ok(())
}

async fn expiry(args: &Args, conns: &[Client]) -> anyhow::Result<()> {
    let mut c = conns[0].clone();
    // Grant and attach from several tasks, so the leases expire together.
    let per = args.leases / 16;
    let mut grants = Vec::new();
    for g in 0..16 {
        let mut c = conns[g % conns.len()].clone();
        let ttl = args.ttl;
        grants.push(tokio::spawn(async move {
            for i in 0..per {
                let id = c.lease_grant(ttl, None).await?.id();
                c.put(
                    format!("expire/{g}/{i}"),
                    "v",
                    Some(PutOptions::new().with_lease(id)),
                )
                .await?;
            }
            Ok::<_, etcd_client::Error>(())
        }));
    }
    for g in grants {
        g.await
            .context("grant task panicked")?
            .context("grant failed")?;
    }
    let granted = Instant::now();

    // Writers record (time since the grants ended, latency).
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..args.clients.max(1) {
        let mut c = conns[w % conns.len()].clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                c.put(format!("write/{w}/{}", i % 1000), "v", None).await?;
                samples.push((t.duration_since(granted), t.elapsed()));
                i += 1;
            }
            Ok::<_, etcd_client::Error>(samples)
        }));
    }
    // Wait until every leased key is gone.
    let gone_at = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let left = c
            .get(
                "expire/",
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await?
            .count();
        if left == 0 {
            break granted.elapsed();
        }
        if granted.elapsed() > Duration::from_secs(120) {
            bail!("{left} leased keys still there after 120 s");
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let ttl = Duration::from_secs(u64::try_from(args.ttl).unwrap_or(0));
    let (mut quiet, mut during) = (Vec::new(), Vec::new());
    for w in writers {
        for (at, lat) in w.await.context("writer panicked")?.context("put failed")? {
            if at < ttl {
                quiet.push(lat);
            } else if at <= gone_at {
                during.push(lat);
            }
        }
    }
    quiet.sort();
    during.sort();
    println!(
        "{{\"op\":\"expiry\",\"leases\":{},\"expired_after_s\":{:.2},\"quiet_puts\":{},\"quiet_p50_ms\":{:.3},\"quiet_p99_ms\":{:.3},\"expiry_puts\":{},\"expiry_p50_ms\":{:.3},\"expiry_p99_ms\":{:.3}}}",
        per * 16,
        gone_at.as_secs_f64(),
        quiet.len(),
        common::percentile(&quiet, 0.50),
        common::percentile(&quiet, 0.99),
        during.len(),
        common::percentile(&during, 0.50),
        common::percentile(&during, 0.99),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let conns = common::connect(&args.endpoint, args.conns).await?;
    match args.op {
        Op::Cycles => cycles(&args, &conns).await,
        Op::Expiry => expiry(&args, &conns).await,
    }
}
