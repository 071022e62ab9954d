//! A background writer that fails over between endpoints, as etcd clients
//! do, and records every acknowledged put.
//!
//! [`Writer`] puts `<prefix><seq>` = `v<seq>` one at a time, each bounded
//! by a timeout. On any error it moves to the next endpoint of the list it
//! was given (the list can change while it runs, as members come and go)
//! and tries the same key again; `seq` only advances on an
//! acknowledgement. What it saw comes back as a [`Report`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::PutRequest;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

/// Bound on one put, so a write stuck on a dead leader fails over.
const PUT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed put, so a refused connection does not spin.
const BACKOFF: Duration = Duration::from_millis(50);

/// One acknowledged put.
#[derive(Clone, Debug)]
pub struct Ack {
    pub key: String,
    pub value: String,
    /// `header.revision` of the answer.
    pub revision: i64,
}

/// What a [`Writer`] saw, from its start to [`Writer::stop`].
#[derive(Debug)]
pub struct Report {
    /// In the order they were acknowledged.
    pub acks: Vec<Ack>,
    /// Failed attempts.
    pub errors: usize,
    /// Each distinct error, with how often it came.
    pub error_kinds: BTreeMap<String, usize>,
    /// The longest time without an acknowledgement: from the start to the
    /// first, between two, or from the last to the stop.
    pub longest_gap: Duration,
}

/// A put loop on its own task; see the module docs.
pub struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    task: JoinHandle<Report>,
}

impl Writer {
    /// Starts writing under `prefix` to the endpoints in `endpoints`,
    /// beginning with the first.
    pub fn spawn(prefix: &str, endpoints: watch::Receiver<Vec<String>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(run(
            prefix.to_owned(),
            endpoints,
            stop.clone(),
            acked.clone(),
        ));
        Self { stop, acked, task }
    }

    /// Acknowledged puts so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }

    /// Waits until `more` puts beyond those acknowledged now are.
    ///
    /// # Panics
    ///
    /// If that takes longer than `timeout`.
    pub async fn wait_for_more(&self, more: usize, timeout: Duration) {
        let target = self.acked() + more;
        let deadline = Instant::now() + timeout;
        while self.acked() < target {
            assert!(
                Instant::now() < deadline,
                "the writer got {} of {more} more acknowledgements within {timeout:?}",
                more - (target - self.acked())
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops after the put in flight and returns what it saw.
    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the writer task does not panic")
    }
}

async fn run(
    prefix: String,
    endpoints: watch::Receiver<Vec<String>>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> Report {
    let mut report = Report {
        acks: Vec::new(),
        errors: 0,
        error_kinds: BTreeMap::new(),
        longest_gap: Duration::ZERO,
    };
    let mut target = 0;
    let mut kv = connect(&endpoints.borrow()[0]);
    let mut last_ack = Instant::now();
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let key = format!("{prefix}{seq:06}");
        let value = format!("v{seq}");
        let put = PutRequest {
            key: key.clone().into_bytes(),
            value: value.clone().into_bytes(),
            ..PutRequest::default()
        };
        let error = match tokio::time::timeout(PUT_TIMEOUT, kv.put(put)).await {
            Ok(Ok(answer)) => {
                let revision = answer.into_inner().header.expect("header").revision;
                report.acks.push(Ack {
                    key,
                    value,
                    revision,
                });
                acked.fetch_add(1, Ordering::SeqCst);
                report.longest_gap = report.longest_gap.max(last_ack.elapsed());
                last_ack = Instant::now();
                seq += 1;
                continue;
            }
            Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
            Err(_) => format!("no answer within {PUT_TIMEOUT:?}"),
        };
        report.errors += 1;
        *report.error_kinds.entry(error).or_default() += 1;
        let list = endpoints.borrow().clone();
        target = (target + 1) % list.len();
        kv = connect(&list[target]);
        tokio::time::sleep(BACKOFF).await;
    }
    report.longest_gap = report.longest_gap.max(last_ack.elapsed());
    report
}

fn connect(endpoint: &str) -> KvClient<Channel> {
    let channel = Endpoint::from_shared(endpoint.to_owned())
        .expect("endpoints are well-formed URLs")
        .connect_timeout(PUT_TIMEOUT)
        .connect_lazy();
    KvClient::new(channel)
}
