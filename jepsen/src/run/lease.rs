//! The lease workload's client: keys attached to leases, some kept alive,
//! some abandoned, read again and again to see when they vanish.
//!
//! Each worker grants a lease (TTL 2–4 s; Cairn's minimum with 1 s
//! elections is 2 s), puts a key `l/<n>` (each key put once) attached to
//! it, then for 3–8 s reads the key every 200–400 ms and, for half of the
//! leases, sends a keepalive every TTL/3. Then it abandons the lease (no
//! revoke) and starts over. Every request goes into a
//! [`crate::leases`] history, which [`crate::leases::check`] judges.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest,
};
use tokio::time::Instant;

use super::client::{self, Ctx, OP_TIMEOUT};
use super::register;
use crate::history;
use crate::leases::{Call, Op, Outcome};
use crate::rng::Rng;

/// The longest TTL asked for, seconds.
pub const MAX_TTL: u64 = 4;

/// The lease history. A std Mutex: held only to push.
#[derive(Default)]
pub struct Log(Mutex<Vec<Op>>);

impl Log {
    fn record(&self, op: Op) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(op);
    }

    /// The history, in invocation order.
    pub fn take(&self) -> Vec<Op> {
        let mut ops = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        ops.sort_by_key(|op| (op.invoke, op.complete));
        ops
    }

    /// Every key a put was attempted for.
    pub fn keys(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|op| match &op.call {
                Call::Put { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Sends `call` to member `node` and records it.
pub async fn invoke(ctx: &Ctx, log: &Log, process: u64, node: usize, call: Call) -> Outcome {
    let channel = ctx.channel(node);
    let invoke = ctx.now();
    let answer = tokio::time::timeout(OP_TIMEOUT, async {
        match &call {
            Call::Grant { ttl } => {
                let r = LeaseClient::new(channel)
                    .lease_grant(LeaseGrantRequest { ttl: *ttl, id: 0 })
                    .await?
                    .into_inner();
                Ok(Outcome::Granted {
                    lease: r.id,
                    ttl: r.ttl,
                })
            }
            Call::Put { key, value, lease } => {
                KvClient::new(channel)
                    .put(PutRequest {
                        key: key.clone().into_bytes(),
                        value: value.to_string().into_bytes(),
                        lease: *lease,
                        ..PutRequest::default()
                    })
                    .await?;
                Ok(Outcome::Put)
            }
            Call::KeepAlive { lease } => {
                // The request side stays open until the answer came: a
                // server may end the call when the client half-closes.
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                let _ = tx.try_send(LeaseKeepAliveRequest { id: *lease });
                let mut responses = LeaseClient::new(channel)
                    .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await?
                    .into_inner();
                let answer = responses.message().await?;
                drop(tx);
                match answer {
                    Some(r) => Ok(Outcome::KeptAlive { ttl: r.ttl }),
                    None => Err(tonic::Status::unavailable("keepalive stream ended")),
                }
            }
            Call::Read { key } => {
                let r = KvClient::new(channel)
                    .range(RangeRequest {
                        key: key.clone().into_bytes(),
                        ..RangeRequest::default()
                    })
                    .await?
                    .into_inner();
                let value = match r.kvs.first() {
                    Some(kv) => Some(register::parse(&kv.value)?),
                    None => None,
                };
                Ok(Outcome::Read { value })
            }
        }
    })
    .await;
    let complete = ctx.now();
    let writes = matches!(call, Call::Grant { .. } | Call::Put { .. });
    let outcome = match answer {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(status)) => match client::classify(&status, writes) {
            history::Outcome::Fail { error } => Outcome::Fail { error },
            history::Outcome::Info { error } => Outcome::Info { error },
            // classify gives Fail or Info only.
            history::Outcome::Ok { .. } => Outcome::Info {
                error: status.message().to_owned(),
            },
        },
        Err(_) => Outcome::Info {
            error: "timeout".into(),
        },
    };
    log.record(Op {
        process,
        node,
        invoke,
        complete,
        call,
        outcome: outcome.clone(),
    });
    outcome
}

/// One worker until `deadline`.
pub async fn worker(ctx: Arc<Ctx>, log: Arc<Log>, id: usize, mut rng: Rng, deadline: Instant) {
    let n = ctx.members();
    let mut node = id % n;
    let process = id as u64;
    let failed = |node: &mut usize| *node = (*node + 1) % n;
    while Instant::now() < deadline {
        let asked = i64::try_from(rng.between(2, MAX_TTL)).unwrap_or(2);
        let (lease, ttl) = match invoke(&ctx, &log, process, node, Call::Grant { ttl: asked }).await
        {
            Outcome::Granted { lease, ttl } => (lease, ttl),
            _ => {
                failed(&mut node);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let key = format!("l/{}", ctx.unique());
        let put = Call::Put {
            key: key.clone(),
            value: ctx.unique(),
            lease,
        };
        if invoke(&ctx, &log, process, node, put).await != Outcome::Put {
            failed(&mut node);
            continue;
        }
        let kept = rng.chance(0.5);
        let until =
            (Instant::now() + Duration::from_millis(rng.between(3_000, 8_000))).min(deadline);
        let every = Duration::from_millis(u64::try_from(ttl.max(1)).unwrap_or(1) * 1000 / 3);
        let mut next_keepalive = Instant::now() + every;
        while Instant::now() < until {
            if kept && Instant::now() >= next_keepalive {
                let outcome = invoke(&ctx, &log, process, node, Call::KeepAlive { lease }).await;
                if !matches!(outcome, Outcome::KeptAlive { .. }) {
                    failed(&mut node);
                }
                next_keepalive = Instant::now() + every;
            }
            let read = Call::Read { key: key.clone() };
            if !matches!(
                invoke(&ctx, &log, process, node, read).await,
                Outcome::Read { .. }
            ) {
                failed(&mut node);
            }
            tokio::time::sleep(Duration::from_millis(rng.between(200, 400))).await;
        }
    }
}

/// After recovery: waits out every TTL, then reads every key (starting on
/// `leader`, moving on after a failed read) until it is gone or `patience`
/// passed. Returns the keys last read present; a key whose reads all
/// failed is not counted, as nothing is known of it.
pub async fn remaining(ctx: &Ctx, log: &Log, leader: usize, patience: Duration) -> Vec<String> {
    tokio::time::sleep(Duration::from_secs(MAX_TTL + 1)).await;
    let deadline = Instant::now() + patience;
    let mut left = log.keys();
    let mut present = std::collections::BTreeSet::new();
    let process = u64::MAX / 2;
    let mut node = leader;
    while !left.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for key in left {
            let read = Call::Read { key: key.clone() };
            match invoke(ctx, log, process, node, read).await {
                Outcome::Read { value: None } => {
                    present.remove(&key);
                }
                Outcome::Read { value: Some(_) } => {
                    present.insert(key.clone());
                    still.push(key);
                }
                _ => {
                    node = (node + 1) % ctx.members();
                    still.push(key);
                }
            }
        }
        left = still;
        if !left.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    left.retain(|key| present.contains(key));
    left
}
