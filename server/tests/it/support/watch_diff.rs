//! Differential testing of Watch: one script of writes and watch-stream
//! requests, run on etcd and on Cairn at once, with every watch response
//! compared.
//!
//! After each step the runner waits until no stream has said anything for
//! [`QUIET`], so each response is attributed to the step that caused it.
//! Within one step, responses are compared per watch id in arrival order;
//! the order *between* watchers of one stream is left open, as etcd leaves
//! it (it notifies watchers in map order). Headers are normalized as in
//! [`super::diff`]: `cluster_id`, `member_id` and `raft_term` are zeroed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::diff::{Clients, Reply, Request};
use super::{CairnProc, EtcdProc, ServerProc};

/// How long every stream must stay silent before the next step.
const QUIET: Duration = Duration::from_millis(500);
/// Bound on waiting for silence, so a chatty server fails the step.
const STEP_LIMIT: Duration = Duration::from_secs(10);

/// One step of a watch script.
#[derive(Debug, Clone)]
pub enum Step {
    /// A KV request; its reply is compared too.
    Write(Request),
    /// A create request on stream `n` (streams open on first use).
    Watch(usize, WatchCreateRequest),
    /// A cancel request on stream `n`.
    Cancel(usize, i64),
    /// A progress request on stream `n`.
    Progress(usize),
}

/// What one server said during one step.
#[derive(Debug, Default, PartialEq)]
struct Said {
    reply: Option<Reply>,
    /// Per (stream, watch id), the responses in arrival order.
    responses: BTreeMap<(usize, i64), Vec<WatchResponse>>,
}

/// A named list of watch steps.
#[derive(Default)]
pub struct WatchScript {
    steps: Vec<(String, Step)>,
}

impl WatchScript {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn step(&mut self, name: impl Into<String>, step: Step) {
        self.steps.push((name.into(), step));
    }

    /// Runs the script on a fresh etcd and a fresh Cairn, concurrently.
    ///
    /// # Panics
    /// If any step differs, listing each such step with both transcripts.
    pub async fn run(self) {
        let (etcd, cairn) = tokio::join!(EtcdProc::start(), CairnProc::start());
        let (expected, actual) = tokio::join!(play(&etcd, &self.steps), play(&cairn, &self.steps));
        // A create always gets a reply: a script where one is silent is
        // broken (or the streams never opened), not a match.
        for ((name, step), said) in self.steps.iter().zip(&expected) {
            if matches!(step, Step::Watch(..)) {
                assert!(!said.responses.is_empty(), "etcd said nothing to {name:?}");
            }
        }
        if std::env::var_os("CAIRN_SHOW_WATCH").is_some() {
            for ((name, _), said) in self.steps.iter().zip(&actual) {
                eprintln!("{name}: {said:?}");
            }
        }
        let mut report = String::new();
        let mut differing = 0;
        for (i, ((name, step), (e, c))) in self
            .steps
            .iter()
            .zip(expected.iter().zip(&actual))
            .enumerate()
        {
            if e != c {
                differing += 1;
                let _ = write!(
                    report,
                    "\n#{i} {name:?}: {step:?}\n  etcd:  {e:?}\n  cairn: {c:?}\n"
                );
            }
        }
        assert!(
            differing == 0,
            "{differing} of {} watch steps differ between etcd and Cairn (the first difference \
             may cause later ones):{report}",
            self.steps.len()
        );
    }
}

/// Plays the script on one server and returns what it said at each step.
async fn play(server: &impl ServerProc, steps: &[(String, Step)]) -> Vec<Said> {
    let mut kv = Clients::new(server);
    let (events_tx, mut events) = mpsc::unbounded_channel::<(usize, WatchResponse)>();
    let mut streams: Vec<mpsc::UnboundedSender<WatchRequest>> = Vec::new();
    let mut out = Vec::with_capacity(steps.len());
    for (_, step) in steps {
        let mut said = Said::default();
        let request = |n: usize, streams: &mut Vec<mpsc::UnboundedSender<WatchRequest>>| {
            while streams.len() <= n {
                streams.push(open(server, streams.len(), events_tx.clone()));
            }
            streams[n].clone()
        };
        match step {
            Step::Write(r) => said.reply = Some(kv.send(r).await),
            Step::Watch(n, create) => send(
                &request(*n, &mut streams),
                RequestUnion::CreateRequest(create.clone()),
            ),
            Step::Cancel(n, watch_id) => send(
                &request(*n, &mut streams),
                RequestUnion::CancelRequest(WatchCancelRequest {
                    watch_id: *watch_id,
                }),
            ),
            Step::Progress(n) => send(
                &request(*n, &mut streams),
                RequestUnion::ProgressRequest(WatchProgressRequest {}),
            ),
        }
        let deadline = tokio::time::Instant::now() + STEP_LIMIT;
        while let Ok(Some((n, mut resp))) = tokio::time::timeout(QUIET, events.recv()).await {
            if let Some(h) = &mut resp.header {
                h.cluster_id = 0;
                h.member_id = 0;
                h.raft_term = 0;
            }
            said.responses
                .entry((n, resp.watch_id))
                .or_default()
                .push(resp);
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server never went quiet"
            );
        }
        out.push(said);
    }
    out
}

fn send(tx: &mpsc::UnboundedSender<WatchRequest>, request: RequestUnion) {
    tx.send(WatchRequest {
        request_union: Some(request),
    })
    .expect("the stream's request channel is open");
}

/// Opens watch stream `n`; its responses go to `events`, tagged with `n`.
fn open(
    server: &impl ServerProc,
    n: usize,
    events: mpsc::UnboundedSender<(usize, WatchResponse)>,
) -> mpsc::UnboundedSender<WatchRequest> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut client = WatchClient::new(server.channel());
    tokio::spawn(async move {
        let mut responses = client
            .watch(UnboundedReceiverStream::new(rx))
            .await
            .expect("open a watch stream")
            .into_inner();
        while let Ok(Some(resp)) = responses.message().await {
            if events.send((n, resp)).is_err() {
                return;
            }
        }
    });
    tx
}
