//! The clients: concurrent workers that invoke ops and record them.
//!
//! Each worker is a loop of one op at a time on one member. After an error
//! it moves to the next member; after an indeterminate op it also takes a
//! new process number, as Jepsen does, because the old request may still be
//! in flight and one process must never have two.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::kv_client::KvClient;
use tonic::transport::Channel;

use super::append;
use super::register::{self, Register};
use super::Workload;
use crate::history::{Call, Op, Outcome};
use crate::rng::Rng;

/// How long a client waits for an answer before recording the op as
/// indeterminate: two election timeouts, enough for a failover.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers after which the request certainly did not happen: Cairn (like
/// etcd) refuses these before proposing. A write refused this way that
/// shows up later is an anomaly the checkers will report.
const REFUSED: &[&str] = &[
    "etcdserver: no leader",
    "etcdserver: leader changed",
    "etcdserver: too many requests",
    "etcdserver: rpc not supported for learner",
    "etcdserver: not capable",
];

/// What every worker shares.
pub struct Ctx {
    start: Instant,
    ops: AtomicU64,
    values: AtomicU64,
    /// The completed ops. A std Mutex: held only to push.
    history: Mutex<Vec<Op>>,
    channels: Vec<Channel>,
    concurrency: u64,
}

impl Ctx {
    /// A context for `concurrency` workers on members reached by `channels`.
    pub fn new(start: Instant, channels: Vec<Channel>, concurrency: usize) -> Self {
        Ctx {
            start,
            ops: AtomicU64::new(0),
            values: AtomicU64::new(1),
            history: Mutex::new(Vec::new()),
            channels,
            concurrency: concurrency as u64,
        }
    }

    /// Nanoseconds since the start of the run.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Counts an op; returns how many came before it.
    pub fn tick(&self) -> u64 {
        self.ops.fetch_add(1, Ordering::Relaxed)
    }

    /// A value never returned before in this run.
    pub fn unique(&self) -> u64 {
        self.values.fetch_add(1, Ordering::Relaxed)
    }

    /// The channel to member `node`.
    pub fn channel(&self, node: usize) -> Channel {
        self.channels[node].clone()
    }

    /// How many members.
    pub fn members(&self) -> usize {
        self.channels.len()
    }

    /// Records a completed op.
    pub fn record(&self, op: Op) {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(op);
    }

    /// The history so far, in completion order.
    pub fn take_history(&self) -> Vec<Op> {
        std::mem::take(&mut *self.history.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A connection to one member.
pub struct Exec {
    /// The member's KV service.
    pub kv: KvClient<Channel>,
}

/// Runs `call` on member `node` and records it; returns the op.
pub async fn invoke(ctx: &Ctx, process: u64, node: usize, call: Call) -> Op {
    let mut exec = Exec {
        kv: KvClient::new(ctx.channels[node].clone()),
    };
    let invoke = ctx.now();
    let answer = match call {
        Call::Txn { .. } => {
            tokio::time::timeout(OP_TIMEOUT, append::execute(&mut exec, &call)).await
        }
        _ => tokio::time::timeout(OP_TIMEOUT, register::execute(&mut exec, &call)).await,
    };
    let complete = ctx.now();
    let outcome = match answer {
        Ok(Ok((revision, result))) => Outcome::Ok { revision, result },
        Ok(Err(status)) => classify(&status, call.writes()),
        Err(_) => Outcome::Info {
            error: "timeout".into(),
        },
    };
    let op = Op {
        process,
        node,
        invoke,
        complete,
        call,
        outcome,
    };
    ctx.record(op.clone());
    op
}

/// Fail if the request certainly did not take effect, else Info.
pub(super) fn classify(status: &tonic::Status, writes: bool) -> Outcome {
    let message = status.message();
    let error = format!("{:?}: {message}", status.code());
    let refused = REFUSED.contains(&message)
        || (status.code() == tonic::Code::Unavailable && message.contains("tcp connect error"))
        || message.starts_with(append::READ_PHASE)
        || message == append::COMPARE_FAILED;
    if refused || (!writes && status.code() != tonic::Code::DataLoss) {
        Outcome::Fail { error }
    } else {
        Outcome::Info { error }
    }
}

/// One worker of `workload` until `deadline`.
pub async fn worker(ctx: Arc<Ctx>, workload: Workload, id: usize, mut rng: Rng, deadline: Instant) {
    let n = ctx.channels.len();
    let mut process = id as u64;
    let mut node = id % n;
    let mut state = Register::default();
    while Instant::now() < deadline {
        let call = match workload {
            Workload::Register => state.next(&ctx, &mut rng, "r/"),
            // The register workload's ops, on the keys the watchers watch.
            Workload::Watch => state.next(&ctx, &mut rng, super::watcher::PREFIX),
            // These have workers of their own.
            Workload::Lease | Workload::Lock => return,
            Workload::Append => append::next(&ctx, &mut rng),
        };
        let op = invoke(&ctx, process, node, call).await;
        match &op.outcome {
            Outcome::Ok { revision, result } => state.learn(&op.call, result, *revision),
            Outcome::Fail { error } if error.ends_with(append::COMPARE_FAILED) => {}
            Outcome::Fail { .. } => {
                node = (node + 1) % n;
                // Don't spin on a dead member.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Outcome::Info { .. } => {
                node = (node + 1) % n;
                process += ctx.concurrency;
            }
        }
    }
}
