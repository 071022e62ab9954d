//! cairn-bench: etcd's benchmark workloads against any etcd v3 endpoint.
//!
//! `cairn-bench --endpoints http://127.0.0.1:2379 --clients 64 --total
//! 100000 put`, then `range --consistency s`, `txn-put --txn-ops 4`,
//! `txn-mixed --rw-ratio 4`, `watch`, `watch-latency`, `lease-keepalive`.
//! `--json` prints one JSON object instead of text.

use std::process::ExitCode;

use cairn_benches::load::{Keys, Load};
use cairn_benches::report::Report;
use cairn_benches::workload::{self, Data};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "cairn-bench",
    version,
    about = "Load for etcd v3 endpoints, as etcd's benchmark tool."
)]
struct Args {
    /// Client URLs, comma-separated; connections go round-robin.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// gRPC connections.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Concurrent clients, one request in flight each.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Operations in all.
    #[arg(long, default_value_t = 10_000)]
    total: usize,
    /// Bytes per key.
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 8)]
    val_size: usize,
    /// Distinct keys.
    #[arg(long = "key-space-size", default_value_t = 1)]
    key_space: usize,
    /// Keys in order rather than at random.
    #[arg(long)]
    sequential_keys: bool,
    /// Operations per second in all; 0 for no limit.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Put before every key.
    #[arg(long, default_value = "b/")]
    key_prefix: String,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// The server's process ids, comma-separated (all members on this
    /// machine): reports their CPU time per operation, and this process's.
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand, Debug)]
enum Workload {
    /// One Put per operation.
    Put,
    /// One Range of one key per operation (the key space is filled first).
    Range {
        /// l: linearizable, s: serializable.
        #[arg(long, value_enum, default_value = "l")]
        consistency: Consistency,
    },
    /// One Txn of `--txn-ops` Puts per operation.
    TxnPut {
        #[arg(long, default_value_t = 1)]
        txn_ops: usize,
    },
    /// Txns reading or writing one key, `--rw-ratio` reads to a write.
    TxnMixed {
        #[arg(long, default_value_t = 1.0)]
        rw_ratio: f64,
        #[arg(long, value_enum, default_value = "l")]
        consistency: Consistency,
    },
    /// Watchers on the key space receive `--total` puts made as fast as
    /// they go: events/s and delivery latency.
    Watch {
        #[arg(long, default_value_t = 10)]
        streams: usize,
        #[arg(long, default_value_t = 10)]
        watchers_per_stream: usize,
    },
    /// As `watch`, with puts at `--rate` (default 100/s): delivery latency
    /// under a steady load.
    WatchLatency {
        #[arg(long, default_value_t = 10)]
        streams: usize,
        #[arg(long, default_value_t = 10)]
        watchers_per_stream: usize,
    },
    /// Lease keep-alive round trips, one stream and lease per client.
    LeaseKeepalive,
    /// Put every key of the key space once, in Txns of 128 Puts.
    Fill,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Consistency {
    L,
    S,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(report) => {
            if args.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.text());
            }
            if report.errors > 0 && report.latencies.is_empty() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cairn-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<Report> {
    let mut load = Load {
        endpoints: args.endpoints.clone(),
        conns: args.conns,
        clients: args.clients,
        total: args.total,
        rate: args.rate,
        server_pids: args.server_pids.clone(),
    };
    let data = Data {
        keys: Keys {
            size: args.key_size,
            space: args.key_space,
            sequential: args.sequential_keys,
            prefix: args.key_prefix.clone(),
        },
        val_size: args.val_size,
    };
    let serializable = |c: &Consistency| matches!(c, Consistency::S);
    match &args.workload {
        Workload::Put => workload::puts(&load, &data).await,
        Workload::Range { consistency } => {
            workload::ranges(&load, &data, serializable(consistency)).await
        }
        Workload::TxnPut { txn_ops } => workload::txn_puts(&load, &data, *txn_ops).await,
        Workload::TxnMixed {
            rw_ratio,
            consistency,
        } => workload::txn_mixed(&load, &data, *rw_ratio, serializable(consistency)).await,
        Workload::Watch {
            streams,
            watchers_per_stream,
        } => workload::watches(&load, &data, *streams, *watchers_per_stream).await,
        Workload::WatchLatency {
            streams,
            watchers_per_stream,
        } => {
            if load.rate == 0 {
                load.rate = 100;
            }
            let mut report =
                workload::watches(&load, &data, *streams, *watchers_per_stream).await?;
            report.workload = "watch-latency".into();
            Ok(report)
        }
        Workload::LeaseKeepalive => workload::lease_keepalives(&load).await,
        Workload::Fill => workload::fill(&load, &data).await,
    }
}
