//! A watch load loop for one etcd v3 endpoint.
//!
//! `watchers` watchers of the prefix `w/`, spread over `streams` gRPC
//! streams on `conns` connections, receive `puts` puts made by `writers`
//! concurrent writers. Each value carries its send time, so every delivery
//! yields a latency. With `--stalled N`, one more stream of N watchers on
//! the same prefix is opened and never read. With `--pid`, the server's RSS
//! is read before and after the watchers are created (memory per idle
//! watcher), and its CPU time during the puts and deliveries (CPU per
//! event, a measure that holds when the load loop itself, on the same
//! cores, limits events/s). Prints one JSON line.
//!
//! `cargo run --release -p cairn-benches --example watchload -- --endpoint
//! http://127.0.0.1:2379 --watchers 200 --streams 200 --puts 500`

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use etcd_client::{Client, WatchOptions, WatchStream};
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, alias = "endpoints", default_value = "http://127.0.0.1:2379")]
    endpoint: String,
    #[arg(long, default_value_t = 200)]
    watchers: usize,
    #[arg(long, default_value_t = 200)]
    streams: usize,
    #[arg(long, default_value_t = 8)]
    conns: usize,
    #[arg(long, default_value_t = 500)]
    puts: usize,
    #[arg(long, default_value_t = 1)]
    writers: usize,
    /// Watchers on one extra stream that is never read.
    #[arg(long, default_value_t = 0)]
    stalled: usize,
    /// The server's pid, to report its RSS.
    #[arg(long)]
    pid: Option<u32>,
    #[arg(long, default_value_t = 128)]
    val_size: usize,
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn rss_kb(pid: Option<u32>) -> anyhow::Result<u64> {
    let Some(pid) = pid else { return Ok(0) };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            return Ok(v.trim().trim_end_matches("kB").trim().parse()?);
        }
    }
    bail!("no VmRSS in /proc/{pid}/status")
}

/// The server's CPU time (user + system) in milliseconds, from
/// `/proc/<pid>/stat` (clock ticks of 10 ms).
fn cpu_ms(pid: Option<u32>) -> anyhow::Result<u64> {
    let Some(pid) = pid else { return Ok(0) };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks * 10)
}

/// Opens one stream with `n` watchers of `w/` and waits for their
/// Created responses.
async fn open(client: &mut Client, n: usize) -> anyhow::Result<WatchStream> {
    let opts = || Some(WatchOptions::new().with_prefix());
    let mut stream = client.watch("w/", opts()).await?;
    for _ in 1..n {
        stream.watch("w/", opts()).await?;
    }
    for _ in 0..n {
        let resp = stream.message().await?.context("stream closed")?;
        if !resp.created() {
            bail!("expected a Created response");
        }
    }
    Ok(stream)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut conns = common::connect(&args.endpoint, args.conns).await?;
    let rss_before = rss_kb(args.pid)?;
    let streams = args.streams.clamp(1, args.watchers.max(1));
    let mut opened = Vec::new();
    for s in 0..streams {
        let n = args.watchers / streams + usize::from(s < args.watchers % streams);
        if n > 0 {
            let c = &mut conns[s % args.conns.max(1)];
            opened.push((open(c, n).await?, n));
        }
    }
    let _stalled = if args.stalled > 0 {
        let mut c = Client::connect([args.endpoint.as_str()], None).await?;
        Some((open(&mut c, args.stalled).await?, c))
    } else {
        None
    };
    let rss_after = rss_kb(args.pid)?;

    let writers = args.writers.max(1);
    let per = args.puts / writers;
    let puts = per * writers;
    // Each stream's reader reports latencies until it has seen every put.
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Duration>>();
    for (mut stream, n) in opened {
        let (tx, want) = (tx.clone(), n * puts);
        tokio::spawn(async move {
            let mut lat = Vec::with_capacity(want);
            while lat.len() < want {
                let Ok(Some(resp)) = stream.message().await else {
                    break;
                };
                let now = now_nanos();
                for ev in resp.events() {
                    let sent = ev
                        .kv()
                        .and_then(|kv| std::str::from_utf8(&kv.value()[..20]).ok())
                        .and_then(|s| s.parse::<u128>().ok())
                        .unwrap_or(now);
                    let nanos = u64::try_from(now.saturating_sub(sent)).unwrap_or(u64::MAX);
                    lat.push(Duration::from_nanos(nanos));
                }
            }
            let _ = tx.send(lat);
        });
    }
    drop(tx);

    let cpu_before = cpu_ms(args.pid)?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut c = conns[w % conns.len()].clone();
        let val_size = args.val_size.max(20);
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let mut value = format!("{:020}", now_nanos()).into_bytes();
                value.resize(val_size, b'v');
                c.put(format!("w/{w}/{i}"), value, None).await?;
            }
            Ok::<_, etcd_client::Error>(())
        }));
    }
    for w in tasks {
        w.await.context("writer panicked")?.context("put failed")?;
    }
    let put_secs = start.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    while let Some(part) = rx.recv().await {
        lat.extend(part);
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_ms(args.pid)?.saturating_sub(cpu_before);
    lat.sort();
    let watchers = args.watchers.max(1) as f64;
    println!(
        "{{\"watchers\":{},\"streams\":{},\"stalled\":{},\"puts\":{},\"put_per_sec\":{:.0},\
         \"events\":{},\"events_per_sec\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\
         \"rss_before_kb\":{},\"rss_after_kb\":{},\"bytes_per_watcher\":{:.0},\
         \"server_cpu_ms\":{},\"server_us_per_event\":{:.2}}}",
        args.watchers,
        streams,
        args.stalled,
        puts,
        puts as f64 / put_secs,
        lat.len(),
        lat.len() as f64 / secs,
        common::percentile(&lat, 0.50),
        common::percentile(&lat, 0.99),
        rss_before,
        rss_after,
        (rss_after.saturating_sub(rss_before) * 1024) as f64 / watchers,
        cpu,
        cpu as f64 * 1000.0 / lat.len().max(1) as f64,
    );
    Ok(())
}
