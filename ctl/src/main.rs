//! cairnctl: the operator's command for Cairn (and any etcd v3 cluster),
//! with etcdctl's verbs and flags where they exist.
//!
//! # Layout
//! - `cli`: the command line (clap derive).
//! - `kv`, `ops`: the commands that talk to a cluster, through
//!   `cairn-client`.
//! - `txn`: etcdctl's txn script format.
//! - `snapshot`: save (from a cluster), and status, verify and restore,
//!   which need no server.
//! - `output`: the simple, json and table formats.
//!
//! # Conventions
//! - Results go to stdout; errors are one line on stderr, `Error: ...`,
//!   and a non-zero exit.
//! - A `get` that finds nothing says so on stderr and exits 1 (etcdctl
//!   prints nothing and exits 0, which users keep asking about).
//! - Progress bars only when stderr is a terminal.

mod cli;
mod kv;
mod ops;
mod output;
mod snapshot;
mod txn;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// Why a command failed without an error to show: it already said so.
#[derive(Debug)]
pub(crate) struct Quiet(pub(crate) u8);

impl std::fmt::Display for Quiet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for Quiet {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<Quiet>() {
            Some(Quiet(code)) => ExitCode::from(*code),
            None => {
                // One line: the context chain, joined.
                eprintln!("Error: {}", format!("{e:#}").replace('\n', " "));
                ExitCode::FAILURE
            }
        },
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::Version => {
            println!("cairnctl version: {}", env!("CARGO_PKG_VERSION"));
            println!("API version: 3.5");
            Ok(())
        }
        Command::Snapshot(cmd) => snapshot::run(g, cmd).await,
        Command::Get(a) => kv::get(g, a).await,
        Command::Put(a) => kv::put(g, a).await,
        Command::Del(a) => kv::del(g, a).await,
        Command::Txn(a) => kv::txn(g, a).await,
        Command::Watch(a) => kv::watch(g, a).await,
        Command::Compaction(a) => kv::compaction(g, a).await,
        Command::Lease(cmd) => ops::lease(g, cmd).await,
        Command::Member(cmd) => ops::member(g, cmd).await,
        Command::Endpoint(cmd) => ops::endpoint(g, cmd).await,
        Command::Alarm(cmd) => ops::alarm(g, cmd).await,
        Command::Defrag(a) => ops::defrag(g, a).await,
        Command::MoveLeader(a) => ops::move_leader(g, a).await,
        Command::Lock(a) => ops::lock(g, a).await,
        Command::Elect(a) => ops::elect(g, a).await,
    }
}
