//! The workloads of etcd's benchmark tool, on raw etcd v3 gRPC clients so
//! that the client costs the same whichever server it measures.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::load::{Keys, Load};
use crate::report::Report;

/// etcd's `--max-txn-ops` default: puts per Txn when filling.
const FILL_TXN_OPS: usize = 128;

/// What every KV workload writes.
#[derive(Debug, Clone)]
pub struct Data {
    /// The keys.
    pub keys: Keys,
    /// Bytes per value.
    pub val_size: usize,
}

fn status(e: tonic::Status) -> String {
    format!("{:?}: {}", e.code(), e.message())
}

fn put(key: Vec<u8>, value: Vec<u8>) -> PutRequest {
    PutRequest {
        key,
        value,
        ..PutRequest::default()
    }
}

fn kv(channels: &[Channel], client: usize) -> KvClient<Channel> {
    KvClient::new(channels[client % channels.len()].clone())
}

/// `put`: one Put per operation.
pub async fn puts(load: &Load, data: &Data) -> anyhow::Result<Report> {
    let channels = load.connect().await?;
    let (data, value) = (data.clone(), vec![b'v'; data.val_size]);
    Ok(load
        .drive("put", move |client, n| {
            let request = put(data.keys.for_op(n), value.clone());
            let mut kv = kv(&channels, client);
            async move { kv.put(request).await.map(drop).map_err(status) }
        })
        .await)
}

/// `range`: one Range of one key per operation, linearizable or
/// serializable, after every key has been put once.
pub async fn ranges(load: &Load, data: &Data, serializable: bool) -> anyhow::Result<Report> {
    fill(load, data).await?;
    let channels = load.connect().await?;
    let keys = data.keys.clone();
    let name = if serializable { "range-s" } else { "range-l" };
    Ok(load
        .drive(name, move |client, n| {
            let request = RangeRequest {
                key: keys.for_op(n),
                serializable,
                ..RangeRequest::default()
            };
            let mut kv = kv(&channels, client);
            async move { kv.range(request).await.map(drop).map_err(status) }
        })
        .await)
}

/// `txn-put`: one Txn of `txn_ops` Puts per operation.
pub async fn txn_puts(load: &Load, data: &Data, txn_ops: usize) -> anyhow::Result<Report> {
    let channels = load.connect().await?;
    let (data, value) = (data.clone(), vec![b'v'; data.val_size]);
    let ops = txn_ops.max(1);
    Ok(load
        .drive("txn-put", move |client, n| {
            let success = (data.keys.run_for_op(n, ops).into_iter())
                .map(|key| RequestOp {
                    request: Some(Op::RequestPut(put(key, value.clone()))),
                })
                .collect();
            let request = TxnRequest {
                success,
                ..TxnRequest::default()
            };
            let mut kv = kv(&channels, client);
            async move { kv.txn(request).await.map(drop).map_err(status) }
        })
        .await)
}

/// `txn-mixed`: Txns that read one key (Range, linearizable or
/// serializable) or write one (Put), `rw_ratio` reads to a write, after
/// every key has been put once.
pub async fn txn_mixed(
    load: &Load,
    data: &Data,
    rw_ratio: f64,
    serializable: bool,
) -> anyhow::Result<Report> {
    fill(load, data).await?;
    let channels = load.connect().await?;
    let (data, value) = (data.clone(), vec![b'v'; data.val_size]);
    let reads_per_write = rw_ratio.max(0.0);
    let writes = Arc::new(AtomicUsize::new(0));
    let counted = writes.clone();
    let mut report = load
        .drive("txn-mixed", move |client, n| {
            // Operation n is a write when it crosses a multiple of
            // (reads_per_write + 1): an even spread at the ratio asked.
            let period = reads_per_write + 1.0;
            let write = ((n + 1) as f64 / period).floor() > (n as f64 / period).floor();
            let key = data.keys.for_op(n);
            let op = if write {
                counted.fetch_add(1, Ordering::Relaxed);
                Op::RequestPut(put(key, value.clone()))
            } else {
                Op::RequestRange(RangeRequest {
                    key,
                    serializable,
                    ..RangeRequest::default()
                })
            };
            let request = TxnRequest {
                success: vec![RequestOp { request: Some(op) }],
                ..TxnRequest::default()
            };
            let mut kv = kv(&channels, client);
            async move { kv.txn(request).await.map(drop).map_err(status) }
        })
        .await;
    report
        .extra
        .push(("writes".into(), writes.load(Ordering::Relaxed) as f64));
    Ok(report)
}

/// Puts every key once, `FILL_TXN_OPS` to a Txn, with the load's clients.
pub async fn fill(load: &Load, data: &Data) -> anyhow::Result<Report> {
    let txns = data.keys.space.div_ceil(FILL_TXN_OPS);
    let filler = Load {
        total: txns,
        rate: 0,
        ..load.clone()
    };
    let channels = filler.connect().await?;
    let (keys, value) = (data.keys.clone(), vec![b'v'; data.val_size]);
    let report = filler
        .drive("fill", move |client, t| {
            let success = (t * FILL_TXN_OPS..((t + 1) * FILL_TXN_OPS).min(keys.space))
                .map(|k| RequestOp {
                    request: Some(Op::RequestPut(put(keys.nth(k), value.clone()))),
                })
                .collect();
            let request = TxnRequest {
                success,
                ..TxnRequest::default()
            };
            let mut kv = kv(&channels, client);
            async move { kv.txn(request).await.map(drop).map_err(status) }
        })
        .await;
    anyhow::ensure!(
        report.errors == 0,
        "filling the key space failed: {}",
        report.first_error.as_deref().unwrap_or("?")
    );
    Ok(report)
}

/// `watch` and `watch-latency`: `streams` watch streams with
/// `watchers_per_stream` watchers each, all on the key space's prefix,
/// receive `total` puts made by the load's clients (at the load's rate).
/// Each value carries its send time, so every delivery gives a latency:
/// the report's latencies are deliveries, its throughput events per
/// second.
pub async fn watches(
    load: &Load,
    data: &Data,
    streams: usize,
    watchers_per_stream: usize,
) -> anyhow::Result<Report> {
    let channels = load.connect().await?;
    let origin = Instant::now();
    let watchers = streams.max(1) * watchers_per_stream.max(1);
    let expected = watchers * load.total;
    let (deliveries, mut delivered) = mpsc::unbounded_channel::<Duration>();
    let created_at = Instant::now();
    let mut ready = Vec::new();
    for s in 0..streams.max(1) {
        let (requests, receiver) = mpsc::channel(watchers_per_stream.max(1));
        for _ in 0..watchers_per_stream.max(1) {
            let create = WatchCreateRequest {
                key: data.keys.prefix.clone().into_bytes(),
                range_end: data.keys.range_end(),
                ..WatchCreateRequest::default()
            };
            requests
                .send(WatchRequest {
                    request_union: Some(RequestUnion::CreateRequest(create)),
                })
                .await?;
        }
        let mut client = WatchClient::new(channels[s % channels.len()].clone());
        let mut answers = client
            .watch(ReceiverStream::new(receiver))
            .await
            .map_err(|e| anyhow::anyhow!("watch: {}", status(e)))?
            .into_inner();
        let (created_tx, created) = tokio::sync::oneshot::channel();
        let deliveries = deliveries.clone();
        let per_stream = watchers_per_stream.max(1);
        tokio::spawn(async move {
            let _requests = requests;
            let mut created_tx = Some(created_tx);
            let mut created = 0;
            while let Some(Ok(answer)) = answers.next().await {
                if answer.created {
                    created += 1;
                    if created == per_stream {
                        if let Some(tx) = created_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                let now = origin.elapsed();
                for event in answer.events {
                    let Some(kv) = event.kv else { continue };
                    let sent = sent_at(&kv.value);
                    let _ = deliveries.send(now.saturating_sub(sent));
                }
            }
        });
        ready.push(created);
    }
    for created in ready {
        created.await?;
    }
    let creation = created_at.elapsed();
    drop(deliveries);

    let (data, val_size) = (data.clone(), data.val_size.max(8));
    let puts = load
        .drive("watch-puts", move |client, n| {
            let mut value = vec![b'v'; val_size];
            value[..8].copy_from_slice(&(origin.elapsed().as_nanos() as u64).to_le_bytes());
            let request = put(data.keys.for_op(n), value);
            let mut kv = kv(&channels, client);
            async move { kv.put(request).await.map(drop).map_err(status) }
        })
        .await;
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(expected);
    let deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(deadline);
    let due = expected.saturating_sub(puts.errors * watchers);
    while latencies.len() < due {
        tokio::select! {
            got = delivered.recv() => match got {
                Some(latency) => latencies.push(latency),
                None => break,
            },
            () = &mut deadline => break,
        }
    }
    let mut report = Report::new("watch", puts.elapsed.max(started.elapsed()), latencies);
    report.errors = puts.errors + due.saturating_sub(report.latencies.len());
    report.first_error = puts.first_error.clone();
    // CPU per operation is per put: the puts' own figures.
    report.extra = puts.extra.clone();
    report.extra.extend([
        ("watchers".into(), watchers as f64),
        ("creation_secs".into(), creation.as_secs_f64()),
        ("puts_per_sec".into(), puts.throughput()),
    ]);
    Ok(report)
}

/// The send time a watch workload's value carries.
fn sent_at(value: &[u8]) -> Duration {
    let mut nanos = [0u8; 8];
    if let Some(head) = value.get(..8) {
        nanos.copy_from_slice(head);
    }
    Duration::from_nanos(u64::from_le_bytes(nanos))
}

/// `lease-keepalive`: each client grants a lease, then sends keep-alives on
/// its own stream, one at a time; an operation is one round trip.
pub async fn lease_keepalives(load: &Load) -> anyhow::Result<Report> {
    let channels = load.connect().await?;
    let mut streams = Vec::new();
    for client in 0..load.clients.max(1) {
        let mut leases = LeaseClient::new(channels[client % channels.len()].clone());
        let grant = leases
            .lease_grant(LeaseGrantRequest { ttl: 600, id: 0 })
            .await
            .map_err(|e| anyhow::anyhow!("LeaseGrant: {}", status(e)))?
            .into_inner();
        let (requests, receiver) = mpsc::channel(1);
        // etcd sends headers with the first answer: send before awaiting.
        requests
            .send(LeaseKeepAliveRequest { id: grant.id })
            .await?;
        let mut answers = leases
            .lease_keep_alive(ReceiverStream::new(receiver))
            .await
            .map_err(|e| anyhow::anyhow!("LeaseKeepAlive: {}", status(e)))?
            .into_inner();
        answers.next().await;
        streams.push(Arc::new(tokio::sync::Mutex::new((
            grant.id, requests, answers,
        ))));
    }
    Ok(load
        .drive("lease-keepalive", move |client, _| {
            let stream = streams[client % streams.len()].clone();
            async move {
                let mut stream = stream.lock().await;
                let (id, requests, answers) = &mut *stream;
                requests
                    .send(LeaseKeepAliveRequest { id: *id })
                    .await
                    .map_err(|_| "the keep-alive stream closed".to_owned())?;
                match answers.next().await {
                    Some(Ok(answer)) if answer.ttl > 0 => Ok(()),
                    Some(Ok(_)) => Err("the lease expired".to_owned()),
                    Some(Err(e)) => Err(status(e)),
                    None => Err("the keep-alive stream ended".to_owned()),
                }
            }
        })
        .await)
}
