//! Sending a request through Raft and waiting for apply's answer.

use std::time::Duration;

use cairn_raft_storage::{Raft, Request, Response};

use crate::status::RequestError;

/// Proposes requests to Raft with etcd's size limit and request timeout.
#[derive(Clone)]
pub(crate) struct Proposer {
    raft: Raft,
    max_request_bytes: usize,
    timeout: Duration,
}

impl Proposer {
    /// A proposer that refuses requests above `max_request_bytes` and gives
    /// up waiting after `timeout`.
    pub(crate) fn new(raft: Raft, max_request_bytes: usize, timeout: Duration) -> Self {
        Proposer {
            raft,
            max_request_bytes,
            timeout,
        }
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
        if request.encoded_len() > self.max_request_bytes {
            return Err(RequestError::TooLarge);
        }
        let written = tokio::time::timeout(self.timeout, self.raft.client_write(request))
            .await
            .map_err(|_| RequestError::Timeout)??;
        match written.data {
            Response::Rejected(e) => Err(RequestError::Apply(e)),
            response => Ok(response),
        }
    }
}
