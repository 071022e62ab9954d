//! `cairn-jepsen`: runs a Jepsen-style test against a cluster of `cairn`
//! processes. Exits 0 when the history is valid, 1 on any anomaly, 2 when
//! the harness itself failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use cairn_jepsen::run::{self, Family, Options, Workload};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cairn-jepsen",
    about = "Fault injection and consistency checks for Cairn"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs a cluster, clients and faults, then checks the history.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Members: 3 or 5.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
    nodes: u8,
    /// Seconds the clients run.
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// The workload.
    #[arg(long, value_enum, default_value_t = Workload::Register)]
    workload: Workload,
    /// Fault families, comma-separated (kill, pause, partition, membership,
    /// restart, failpoint), all, or none.
    #[arg(long, default_value = "kill,partition")]
    nemesis: String,
    /// Seeds the fault schedule and the clients; random if absent.
    #[arg(long)]
    seed: Option<u64>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// The last octet of member 0's address, 127.0.0.x; member i gets
    /// x + i. Two runs at once need addresses apart, or one's partitions
    /// cut the other's members.
    #[arg(long, default_value_t = 61)]
    first_host: u8,
    /// The `cairn` binary; defaults to the one next to this binary.
    #[arg(long)]
    cairn: Option<PathBuf>,
    /// The results dir; defaults to jepsen-results/<time>-<workload>-<seed>.
    #[arg(long)]
    results: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Cmd::Run(args) = cli.command;
    match run_cmd(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("cairn-jepsen: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_cmd(args: RunArgs) -> anyhow::Result<bool> {
    let nemesis = parse_nemesis(&args.nemesis)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seed = args
        .seed
        .unwrap_or(u64::from(now.subsec_nanos()) ^ now.as_secs());
    let cairn = match args.cairn {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("the binary's dir")?
            .join("cairn"),
    };
    anyhow::ensure!(
        cairn.exists(),
        "no cairn binary at {} (build it with `cargo build -p cairn-server --bin cairn`, or pass --cairn)",
        cairn.display()
    );
    let workload = args.workload;
    let results = args.results.unwrap_or_else(|| {
        PathBuf::from("jepsen-results").join(format!(
            "{}-{}-{seed}",
            now.as_secs(),
            format!("{workload:?}").to_lowercase()
        ))
    });
    let options = Options {
        cairn,
        nodes: usize::from(args.nodes),
        time_limit: Duration::from_secs(args.time_limit),
        workload,
        nemesis,
        seed,
        concurrency: args.concurrency.max(1),
        first_host: args.first_host,
        results,
    };
    let runtime = tokio::runtime::Runtime::new().context("start the runtime")?;
    let report = runtime.block_on(run::run(options))?;
    print!("{}", run::summary(&report, &[]));
    println!("results: {}", report.options.results.display());
    Ok(report.valid)
}

fn parse_nemesis(s: &str) -> anyhow::Result<Vec<Family>> {
    use clap::ValueEnum as _;
    if s == "none" || s.is_empty() {
        return Ok(Vec::new());
    }
    if s == "all" {
        return Ok(Family::value_variants().to_vec());
    }
    s.split(',')
        .map(|f| {
            Family::from_str(f.trim(), true).map_err(|e| anyhow::anyhow!("nemesis {f:?}: {e}"))
        })
        .collect()
}
