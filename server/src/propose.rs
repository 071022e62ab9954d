//! Sending requests through Raft and waiting for apply's answer.
//!
//! openraft 0.9 flushes the log once per append and appends one proposal at
//! a time, so one proposal per request would cost one fsync per request.
//! Instead a batching task collects the requests that arrive while earlier
//! proposals are in flight and proposes them as one [`Request::Batch`]
//! entry: one fsync for all of them. Apply gives each request of a batch its
//! own revision, exactly as separate entries would, so batching is invisible
//! to clients. Requests are independent (each client waits for its answer
//! before it sends the next), so their order within a batch is free.
//!
//! A follower batches what it forwards the same way: requests that queue up
//! while forwards are in flight go to the leader in one
//! `Forwarded::ProposeBatch` call (at most `--max-request-bytes`, the
//! leader's limit for one request), whose requests the leader splices into
//! one entry; the follower then waits once for its own apply of that entry.
//! A leader from before that call refuses it as undecodable, having done
//! nothing, and the follower then forwards each request on its own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cairn_raft_storage::{Member, NodeId, Raft, Request, Response};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::peer::{Answer, ForwardError, Forwarded, Relayed, Route, Target};
use crate::status::RequestError;

/// Proposals in flight at once. Two keep the log busy: one flushing while
/// the next is being formed.
const IN_FLIGHT: usize = 2;
/// At most this many requests in one entry, or one forwarded batch.
const MAX_BATCH: usize = 512;
/// An entry's batch holds at most this many encoded bytes (a single request
/// may be bigger, up to `--max-request-bytes`).
const MAX_BATCH_BYTES: usize = 2 << 20;

/// What apply produced, and the index of the entry that carried it.
type Reply = oneshot::Sender<Result<(Response, u64), RequestError>>;

struct Pending {
    request: Request,
    size: usize,
    reply: Reply,
}

/// Proposes requests to Raft with etcd's size limit and request timeout;
/// cheap to clone. The batching task ends when the last clone is dropped.
///
/// On a follower, a request is forwarded to the leader, which proposes it
/// through its own batching queue; the follower answers once it has
/// applied the entry itself, as etcd's members do, so that a client's next
/// read on the same member sees its write.
#[derive(Clone)]
pub(crate) struct Proposer {
    queue: mpsc::UnboundedSender<Pending>,
    /// Requests for the leader, when this member follows.
    forwards: mpsc::UnboundedSender<Pending>,
    max_request_bytes: usize,
    timeout: Duration,
    route: Route,
}

impl Proposer {
    /// Starts the batching task on `raft`. The proposer refuses requests
    /// above `max_request_bytes` and gives up waiting after `timeout`.
    pub(crate) fn spawn(
        raft: Raft,
        route: Route,
        max_request_bytes: usize,
        timeout: Duration,
    ) -> (Self, JoinHandle<()>) {
        let (queue, rx) = mpsc::unbounded_channel();
        let (forwards, forward_rx) = mpsc::unbounded_channel();
        let proposing = batches(rx, MAX_BATCH_BYTES, move |batch| {
            let raft = raft.clone();
            async move { write(&raft, batch).await }
        });
        // The leader takes a forwarded batch as one request.
        let forwarding = batches(forward_rx, max_request_bytes, {
            let (route, local) = (route.clone(), queue.clone());
            move |batch| {
                let (route, local) = (route.clone(), local.clone());
                async move { forward(&route, &local, batch).await }
            }
        });
        let task = tokio::spawn(async move {
            tokio::join!(proposing, forwarding);
        });
        let proposer = Proposer {
            queue,
            forwards,
            max_request_bytes,
            timeout,
            route,
        };
        (proposer, task)
    }

    /// Appends `request` to the log and returns what applying it produced.
    ///
    /// # Errors
    ///
    /// [`RequestError::TooLarge`] before proposing; [`RequestError::Apply`]
    /// when apply refused it (nothing changed); [`RequestError::Write`] when
    /// Raft would not take it; [`RequestError::Timeout`] when no answer came
    /// in time, in which case the request may or may not be applied later.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future does not withdraw the proposal: it may still be
    /// applied.
    pub(crate) async fn propose(&self, request: Request) -> Result<Response, RequestError> {
        let size = request.encoded_len();
        if size > self.max_request_bytes {
            return Err(RequestError::TooLarge);
        }
        if self.route.learner() {
            return Err(RequestError::NotForLearner);
        }
        let response = match self.route.target() {
            Target::Here => self.queue_here(request, size).await?.0,
            // The forwarding task answers once this member has applied it.
            Target::There(..) => self.wait_in(&self.forwards, request, size).await?.0,
            Target::Nobody => return Err(RequestError::NoLeader),
        };
        match response {
            Response::Rejected(e) => Err(RequestError::Apply(e)),
            response => Ok(response),
        }
    }

    /// Proposes `request` on this member, which should lead, and returns
    /// what apply produced (a refusal included) and the entry's index. For
    /// requests a follower forwarded: it never forwards again.
    ///
    /// # Errors
    ///
    /// As [`Proposer::propose`], but apply's refusals come back as
    /// [`Response::Rejected`].
    pub(crate) async fn propose_here(
        &self,
        request: Request,
    ) -> Result<(Response, u64), RequestError> {
        let size = request.encoded_len();
        if size > self.max_request_bytes {
            return Err(RequestError::TooLarge);
        }
        self.queue_here(request, size).await
    }

    async fn queue_here(
        &self,
        request: Request,
        size: usize,
    ) -> Result<(Response, u64), RequestError> {
        // A leader handing over leadership takes nothing new (MoveLeader).
        if self.route.transferring() {
            return Err(RequestError::NoLeader);
        }
        self.wait_in(&self.queue, request, size).await
    }

    /// Queues `request` on `queue` and waits for its answer, up to the
    /// request timeout.
    async fn wait_in(
        &self,
        queue: &mpsc::UnboundedSender<Pending>,
        request: Request,
        size: usize,
    ) -> Result<(Response, u64), RequestError> {
        let (reply, answer) = oneshot::channel();
        queue
            .send(Pending {
                request,
                size,
                reply,
            })
            .map_err(|_| RequestError::Stopped)?;
        tokio::time::timeout(self.timeout, answer)
            .await
            .map_err(|_| RequestError::Timeout)?
            .map_err(|_| RequestError::Stopped)?
    }
}

/// Takes what is queued, up to [`MAX_BATCH`] requests and `max_bytes` as
/// one `Request::Batch` counts them (a request alone may be bigger),
/// whenever one of [`IN_FLIGHT`] slots is free, and runs `send` on it.
async fn batches<F, Fut>(mut rx: mpsc::UnboundedReceiver<Pending>, max_bytes: usize, send: F)
where
    F: Fn(Vec<Pending>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // A request that did not fit the last batch starts the next.
    let mut carried = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // While we waited for a slot, more requests queued up: take them.
        // A batch costs 5 bytes a request over their sizes (see
        // `Request::encoded_len`).
        let mut bytes = 5 + first.size;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) if bytes + 5 + p.size <= max_bytes => {
                    bytes += 5 + p.size;
                    batch.push(p);
                }
                Ok(p) => {
                    carried = Some(p);
                    break;
                }
                Err(_) => break,
            }
        }
        let sending = send(batch);
        tokio::spawn(async move {
            let _slot = slot;
            sending.await;
        });
    }
}

/// Sends `batch` to the leader in one call, waits until this member has
/// applied its entry, and hands each request its answer. Should this member
/// have become leader meanwhile, it proposes them itself.
async fn forward(route: &Route, local: &mpsc::UnboundedSender<Pending>, batch: Vec<Pending>) {
    let (id, leader) = match route.target() {
        Target::There(id, leader) => (id, leader),
        Target::Here => {
            for p in batch {
                if let Err(mpsc::error::SendError(p)) = local.send(p) {
                    let _ = p.reply.send(Err(RequestError::Stopped));
                }
            }
            return;
        }
        Target::Nobody => {
            for p in batch {
                let _ = p.reply.send(Err(RequestError::NoLeader));
            }
            return;
        }
    };
    let (mut requests, replies): (Vec<Request>, Vec<Reply>) =
        batch.into_iter().map(|p| (p.request, p.reply)).unzip();
    let answers = if requests.len() == 1 {
        let request = requests.pop().expect("invariant: one request");
        vec![forward_one(route, id, &leader, request).await]
    } else {
        forward_many(route, id, &leader, requests).await
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
}

/// One request, forwarded on its own.
async fn forward_one(
    route: &Route,
    id: NodeId,
    leader: &Member,
    request: Request,
) -> Result<(Response, u64), RequestError> {
    match route
        .forward(id, leader, &Forwarded::Propose(request))
        .await?
    {
        Answer::Proposed(response, index) => {
            route.applied(index).await?;
            Ok((response, index))
        }
        _ => Err(ForwardError::Mismatch.into()),
    }
}

/// Several requests in one call; an answer for each, in order.
async fn forward_many(
    route: &Route,
    id: NodeId,
    leader: &Member,
    requests: Vec<Request>,
) -> Vec<Result<(Response, u64), RequestError>> {
    let n = requests.len();
    let forwarded = Forwarded::ProposeBatch(requests);
    let answer = route.forward(id, leader, &forwarded).await;
    if let (Err(ForwardError::Peer(e)), Forwarded::ProposeBatch(requests)) = (&answer, forwarded) {
        if e.undecodable_there() {
            // A leader from before batched forwarding: a call each.
            let calls = requests
                .into_iter()
                .map(|request| forward_one(route, id, leader, request));
            return futures::future::join_all(calls).await;
        }
    }
    let applied = async {
        match answer? {
            Answer::Proposed(Response::Batch(responses), index) if responses.len() == n => {
                route.applied(index).await?;
                Ok((responses, index))
            }
            _ => Err(ForwardError::Mismatch),
        }
    };
    let mut answers = Vec::with_capacity(n);
    match applied.await {
        Ok((responses, index)) => {
            for response in responses {
                answers.push(Ok((response, index)));
            }
        }
        // Each request gets the code and message the batch got.
        Err(e) => {
            let relayed = Relayed::from(tonic::Status::from(RequestError::from(e)));
            for _ in 0..n {
                answers.push(Err(ForwardError::Relayed(relayed.clone()).into()));
            }
        }
    }
    answers
}

/// Proposes `batch` as one entry and hands each request its answer. A
/// request that is itself a batch (a follower's forwards) is spliced in, as
/// batches never nest in an entry, and gets a batch of its answers back.
async fn write(raft: &Raft, batch: Vec<Pending>) {
    // Per pending request: how many of the entry's requests are its own,
    // `None` for a plain one.
    let mut spans = Vec::with_capacity(batch.len());
    let mut requests = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for p in batch {
        match p.request {
            Request::Batch(items) => {
                spans.push(Some(items.len()));
                requests.extend(items);
            }
            request => {
                spans.push(None);
                requests.push(request);
            }
        }
        replies.push(p.reply);
    }
    let alone = spans == [None];
    let request = if alone {
        requests.pop().expect("invariant: one request")
    } else {
        Request::Batch(requests)
    };
    let written = match raft.client_write(request).await {
        Ok(written) => written,
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(RequestError::Write(e.clone())));
            }
            return;
        }
    };
    let index = written.log_id.index;
    let mut responses = match written.data {
        response if alone => vec![response],
        Response::Batch(responses) => responses,
        _ => Vec::new(),
    };
    let expected: usize = spans.iter().map(|span| span.unwrap_or(1)).sum();
    if responses.len() != expected {
        for reply in replies {
            let _ = reply.send(Err(RequestError::UnexpectedResponse("batch")));
        }
        return;
    }
    // Hand out from the back, so that each answer is a cheap split.
    for (reply, span) in replies.into_iter().zip(spans).rev() {
        let at = responses.len() - span.unwrap_or(1);
        let mut own = responses.split_off(at);
        let response = match span {
            None => own.pop().expect("invariant: one response"),
            Some(_) => Response::Batch(own),
        };
        let _ = reply.send(Ok((response, index)));
    }
}
