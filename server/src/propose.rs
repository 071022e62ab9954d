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

use std::sync::Arc;
use std::time::Duration;

use cairn_raft_storage::{Raft, Request, Response};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::peer::{Answer, ForwardError, Forwarded, Route, Target};
use crate::status::RequestError;

/// Proposals in flight at once. Two keep the log busy: one flushing while
/// the next is being formed.
const IN_FLIGHT: usize = 2;
/// At most this many requests in one entry.
const MAX_BATCH: usize = 512;
/// A batch stops growing past this many encoded bytes (a single request may
/// be bigger, up to `--max-request-bytes`).
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
        let task = tokio::spawn(batch_loop(raft, rx));
        let proposer = Proposer {
            queue,
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
            Target::There(id, leader) => {
                let forwarded = Forwarded::Propose(request);
                match self.route.forward(id, &leader, &forwarded).await? {
                    Answer::Proposed(response, index) => {
                        self.route.applied(index).await?;
                        response
                    }
                    _ => return Err(ForwardError::Mismatch.into()),
                }
            }
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
        let (reply, answer) = oneshot::channel();
        self.queue
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

/// Takes what is queued, up to the limits, whenever a proposal slot is free.
async fn batch_loop(raft: Raft, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // While we waited for a slot, more requests queued up: take them.
        let mut bytes = first.size;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.size;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let _slot = slot;
            write(&raft, batch).await;
        });
    }
}

/// Proposes `batch` as one entry and hands each request its answer.
async fn write(raft: &Raft, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        let p = batch.pop().expect("invariant: the batch has one request");
        let result = raft.client_write(p.request).await;
        // The client may have given up waiting; nothing to do then.
        let _ = p.reply.send(
            result
                .map(|w| (w.data, w.log_id.index))
                .map_err(RequestError::from),
        );
        return;
    }
    let (requests, replies): (Vec<Request>, Vec<Reply>) =
        batch.into_iter().map(|p| (p.request, p.reply)).unzip();
    match raft.client_write(Request::Batch(requests)).await {
        Ok(written) => match written.data {
            Response::Batch(responses) if responses.len() == replies.len() => {
                for (reply, response) in replies.into_iter().zip(responses) {
                    let _ = reply.send(Ok((response, written.log_id.index)));
                }
            }
            _ => {
                for reply in replies {
                    let _ = reply.send(Err(RequestError::UnexpectedResponse("batch")));
                }
            }
        },
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(RequestError::Write(e.clone())));
            }
        }
    }
}
