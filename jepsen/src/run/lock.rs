//! The lock workload's client: sessions (kept-alive leases) contending for
//! one lock through the Lock service.
//!
//! Each worker grants a lease (TTL 3 s) and keeps it alive every second
//! from a task of its own, calls Lock("jepsen-lock", lease) (waiting up to
//! [`LOCK_WAIT`]), reads the returned key for its create_revision, holds
//! for 50–300 ms, reads the key again, unlocks and revokes the lease. The
//! holds go to [`crate::locks::check`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, RangeRequest,
};
use cairn_proto::v3lockpb::lock_client::LockClient;
use cairn_proto::v3lockpb::{LockRequest, UnlockRequest};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::client::{Ctx, OP_TIMEOUT};
use crate::locks::Hold;
use crate::rng::Rng;

/// The lock's name.
const NAME: &str = "jepsen-lock";
/// The session lease's TTL, seconds.
const TTL: i64 = 3;
/// How long a Lock call may wait for the lock.
const LOCK_WAIT: Duration = Duration::from_secs(8);

/// The holds. A std Mutex: held only to push.
#[derive(Default)]
pub struct Log {
    holds: Mutex<Vec<Hold>>,
    /// Lock calls that failed or timed out, by error.
    pub failed: Mutex<std::collections::BTreeMap<String, usize>>,
}

impl Log {
    /// The holds.
    pub fn take(&self) -> Vec<Hold> {
        std::mem::take(&mut *self.holds.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn fail(&self, error: String) {
        *self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(error)
            .or_insert(0) += 1;
    }
}

/// One worker until `deadline`.
pub async fn worker(ctx: Arc<Ctx>, log: Arc<Log>, id: usize, mut rng: Rng, deadline: Instant) {
    let n = ctx.members();
    let mut node = id % n;
    while Instant::now() < deadline {
        let channel = ctx.channel(node);
        match session(&ctx, &log, channel, id as u64, node, &mut rng).await {
            Ok(()) => {}
            Err(e) => {
                log.fail(e);
                node = (node + 1) % n;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One session: grant, lock, hold, unlock, revoke.
async fn session(
    ctx: &Ctx,
    log: &Log,
    channel: Channel,
    process: u64,
    node: usize,
    rng: &mut Rng,
) -> Result<(), String> {
    let mut leases = LeaseClient::new(channel.clone());
    let grant = leases.lease_grant(LeaseGrantRequest { ttl: TTL, id: 0 });
    let lease = match tokio::time::timeout(OP_TIMEOUT, grant).await {
        Ok(Ok(r)) => r.into_inner().id,
        Ok(Err(s)) => return Err(format!("grant: {}", s.message())),
        Err(_) => return Err("grant: timeout".into()),
    };
    let keepalive = tokio::spawn(keep_alive(channel.clone(), lease));
    let result = hold(ctx, log, channel.clone(), process, node, lease, rng).await;
    keepalive.abort();
    let revoke = leases.lease_revoke(LeaseRevokeRequest { id: lease });
    let _ = tokio::time::timeout(OP_TIMEOUT, revoke).await;
    result
}

/// Lock, read, hold, read, unlock.
async fn hold(
    ctx: &Ctx,
    log: &Log,
    channel: Channel,
    process: u64,
    node: usize,
    lease: i64,
    rng: &mut Rng,
) -> Result<(), String> {
    let invoked = ctx.now();
    let mut locks = LockClient::new(channel.clone());
    let lock = locks.lock(LockRequest {
        name: NAME.as_bytes().to_vec(),
        lease,
    });
    let key = match tokio::time::timeout(LOCK_WAIT, lock).await {
        Ok(Ok(r)) => r.into_inner().key,
        Ok(Err(s)) => return Err(format!("lock: {}", s.message())),
        Err(_) => return Err("lock: timeout".into()),
    };
    let acquired = ctx.now();
    let mut hold = Hold {
        process,
        node,
        key: String::from_utf8_lossy(&key).into_owned(),
        lease,
        invoked,
        acquired,
        token: None,
        confirmed: None,
    };
    let kv = KvClient::new(channel.clone());
    if let Some((at, token)) = read(ctx, kv.clone(), &key).await {
        hold.token = Some(token);
        hold.confirmed = Some(at);
        tokio::time::sleep(Duration::from_millis(rng.between(50, 300))).await;
        if let Some((at, again)) = read(ctx, kv, &key).await {
            if again == token {
                hold.confirmed = Some(at);
            }
        }
    }
    log.holds
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(hold);
    let unlock = locks.unlock(UnlockRequest { key });
    let _ = tokio::time::timeout(OP_TIMEOUT, unlock).await;
    Ok(())
}

/// A linearizable read of `key`: its invocation time and create_revision,
/// if it is there.
async fn read(ctx: &Ctx, mut kv: KvClient<Channel>, key: &[u8]) -> Option<(u64, i64)> {
    let at = ctx.now();
    let range = kv.range(RangeRequest {
        key: key.to_vec(),
        ..RangeRequest::default()
    });
    let r = tokio::time::timeout(OP_TIMEOUT, range).await.ok()?.ok()?;
    let create = r.into_inner().kvs.first()?.create_revision;
    Some((at, create))
}

/// Renews `lease` every second until aborted.
async fn keep_alive(channel: Channel, lease: i64) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let Ok(Ok(responses)) = tokio::time::timeout(
        OP_TIMEOUT,
        LeaseClient::new(channel).lease_keep_alive(ReceiverStream::new(rx)),
    )
    .await
    else {
        return;
    };
    let mut responses = responses.into_inner();
    loop {
        if tx.send(LeaseKeepAliveRequest { id: lease }).await.is_err() {
            return;
        }
        match tokio::time::timeout(OP_TIMEOUT, responses.message()).await {
            Ok(Ok(Some(_))) => {}
            _ => return,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
