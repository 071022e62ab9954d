//! `cairn`: runs one member until SIGINT or SIGTERM.
//!
//! Flags are etcd's (see `cairn --help`); each can also come from its
//! `ETCD_*` environment variable.

use std::process::ExitCode;

use anyhow::Context;
use cairn_server::{Config, LogLevel, Node};
use clap::{CommandFactory, Parser};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Test-only crash points, armed from the FAILPOINTS env var; kept for
    // the whole run (dropping the scenario disarms them).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    // Bad flags: clap prints its message and exits with status 2.
    let config = Config::parse();
    if let Err(e) = config.validate() {
        Config::command()
            .error(clap::error::ErrorKind::ValueValidation, e)
            .exit();
    }
    init_logging(config.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cairn: error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr at `--log-level`; `RUST_LOG`, when set, overrides it.
fn init_logging(level: LogLevel) {
    // openraft narrates every election and snapshot at info; keep it to
    // warnings unless debugging.
    let default = match level {
        LogLevel::Debug => "debug".to_owned(),
        other => format!("{},openraft=warn", other.as_str()),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

async fn run(config: Config) -> anyhow::Result<()> {
    let node = Node::start(config).await.context("starting the member")?;
    for addr in node.client_addrs() {
        tracing::info!(%addr, "serving client requests");
    }
    tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!("received {signal}, shutting down");
            node.shutdown().await;
            signal_result(signal)
        }
        () = node.removed() => {
            // etcd exits with status 0 here: the removal was asked for.
            tracing::error!("the member has been permanently removed from the cluster; the data dir used by this member must be removed");
            node.shutdown().await;
            Ok(())
        }
    }
}

/// Which signal arrived, or why none can be waited for.
enum Signal {
    Interrupt,
    Terminate,
    Failed(std::io::Error),
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signal::Interrupt => f.write_str("SIGINT"),
            Signal::Terminate => f.write_str("SIGTERM"),
            Signal::Failed(e) => write!(f, "an error waiting for signals ({e})"),
        }
    }
}

fn signal_result(signal: Signal) -> anyhow::Result<()> {
    match signal {
        Signal::Failed(e) => Err(e).context("waiting for SIGINT/SIGTERM"),
        _ => Ok(()),
    }
}

#[cfg(unix)]
async fn shutdown_signal() -> Signal {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => return Signal::Failed(e),
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => match r {
            Ok(()) => Signal::Interrupt,
            Err(e) => Signal::Failed(e),
        },
        _ = term.recv() => Signal::Terminate,
    }
}

#[cfg(not(unix))]
async fn shutdown_signal() -> Signal {
    match tokio::signal::ctrl_c().await {
        Ok(()) => Signal::Interrupt,
        Err(e) => Signal::Failed(e),
    }
}
