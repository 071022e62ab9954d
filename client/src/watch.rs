//! Watches: many [`Watcher`]s multiplexed over one gRPC Watch stream, which
//! survives disconnects and leader changes.
//!
//! # Layout
//!
//! One task per [`Client`] (started by the first watch) owns the stream. A
//! [`Watcher`] is a `Stream` fed by that task through its own queue; it
//! talks back (cancel, progress) through the task's command queue.
//!
//! # Resuming without gaps or duplicates
//!
//! For each watcher the task keeps its resume point: the revision after the
//! last one delivered (from its events, or from a progress notification
//! addressed to it, which etcd sends only for a watcher that has caught
//! up). When the stream breaks (the member died, was cut off from its
//! leader, or refused with "no leader"), the task opens a new stream on
//! another endpoint and creates every watcher again from its resume point.
//! Events below the resume point are dropped, so a server that repeats
//! itself cannot cause a duplicate either.
//!
//! A stream-wide progress response (`watch_id` -1, asked for with
//! [`Watcher::request_progress`]) is delivered to every watcher but does
//! not move resume points: etcd 3.4 may send it before a lagging watcher
//! caught up (etcd #15220).
//!
//! If the resume point has been compacted, the watcher ends with
//! [`Error::Compacted`] (its compact revision), so the caller relists.
//!
//! # Invariants
//!
//! - per watcher, delivered events have strictly increasing revisions;
//! - create requests are answered in the order they were sent on a stream,
//!   so `pending` (the watchers awaiting their Created reply) is a FIFO.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use cairn_proto::etcdserverpb as pb;
use futures::channel::mpsc as fmpsc;
use futures::Stream;
use pb::watch_client::WatchClient;
use pb::watch_create_request::FilterType;
use pb::watch_request::RequestUnion;
use tokio::sync::{mpsc, oneshot};
use tonic::metadata::MetadataValue;
use tonic::Status;

use crate::client::{Client, MAX_DECODING_MESSAGE_SIZE};
use crate::error::{Error, Result};
use crate::kv::KeyRange;
use crate::transport::{never_sent, Pool};
use crate::types::{Event, ResponseHeader, Revision};

/// First pause before reopening a broken stream; doubled up to
/// [`MAX_RECONNECT_BACKOFF`].
const FIRST_RECONNECT_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between attempts to reopen the stream.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// What to watch and how.
///
/// ```
/// use cairn_client::{Revision, WatchOptions};
///
/// let options = WatchOptions::prefix("jobs/")
///     .with_start_revision(Revision::new(100))
///     .with_prev_kv()
///     .with_progress_notify()
///     .with_no_delete();
/// assert_eq!(options.start_revision(), Some(Revision::new(100)));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct WatchOptions {
    request: pb::WatchCreateRequest,
}

impl WatchOptions {
    fn over(range: KeyRange) -> Self {
        Self {
            request: pb::WatchCreateRequest {
                key: range.key,
                range_end: range.range_end,
                ..Default::default()
            },
        }
    }

    /// The key `key`.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self::over(KeyRange::key(key))
    }

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self::over(KeyRange::prefix(prefix))
    }

    /// Keys in `[key, end)`.
    pub fn range(key: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        Self::over(KeyRange::range(key, end))
    }

    /// Every key `>= key`.
    pub fn from_key(key: impl Into<Vec<u8>>) -> Self {
        Self::over(KeyRange::from_key(key))
    }

    /// Every key.
    pub fn all() -> Self {
        Self::over(KeyRange::all())
    }

    /// Start at `revision` (inclusive) instead of after the current one.
    pub fn with_start_revision(mut self, revision: Revision) -> Self {
        self.request.start_revision = revision.get();
        self
    }

    /// Include each key's previous value in its events.
    pub fn with_prev_kv(mut self) -> Self {
        self.request.prev_kv = true;
        self
    }

    /// Ask the server for periodic progress notifications (empty responses
    /// that tell the watcher is caught up to a revision).
    pub fn with_progress_notify(mut self) -> Self {
        self.request.progress_notify = true;
        self
    }

    /// Leave out put events.
    pub fn with_no_put(mut self) -> Self {
        self.request.filters.push(FilterType::Noput as i32);
        self
    }

    /// Leave out delete events.
    pub fn with_no_delete(mut self) -> Self {
        self.request.filters.push(FilterType::Nodelete as i32);
        self
    }

    /// The start revision, if one was set.
    pub fn start_revision(&self) -> Option<Revision> {
        (self.request.start_revision > 0).then_some(Revision::new(self.request.start_revision))
    }
}

impl From<&str> for WatchOptions {
    fn from(key: &str) -> Self {
        WatchOptions::key(key)
    }
}

impl From<String> for WatchOptions {
    fn from(key: String) -> Self {
        WatchOptions::key(key)
    }
}

/// What a [`Watcher`] yields: events of one or more whole revisions, or
/// (with no events) a progress notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchResponse {
    /// `header.revision`: for a progress notification, every event up to it
    /// has been delivered.
    pub header: ResponseHeader,
    /// The events, in revision order.
    pub events: Vec<Event>,
}

impl WatchResponse {
    /// Whether this is a progress notification (no events).
    pub fn is_progress_notify(&self) -> bool {
        self.events.is_empty()
    }
}

/// A stream of one watch's responses. It ends after yielding an error
/// ([`Error::Compacted`]: relist, then watch again; or
/// [`Error::WatchCanceled`]). Dropping it cancels the watch.
///
/// # Cancel safety
///
/// Polling is cancel safe: responses wait in the watcher's queue (which is
/// unbounded: a watcher that is not polled keeps its events in memory).
#[derive(Debug)]
pub struct Watcher {
    id: u64,
    start: Revision,
    events: mpsc::UnboundedReceiver<Result<WatchResponse>>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Watcher {
    /// The first revision this watcher can deliver: its start revision, or
    /// the revision after the one current when it was created.
    pub fn start_revision(&self) -> Revision {
        self.start
    }

    /// Asks the server for a progress notification on this watcher's
    /// stream; every watcher on it receives one.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the watch task is gone.
    pub fn request_progress(&self) -> Result<()> {
        self.commands
            .send(Command::Progress)
            .map_err(|_| Error::Closed)
    }
}

impl Stream for Watcher {
    type Item = Result<WatchResponse>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // The task may be gone already; then there is nothing to cancel.
        let _ = self.commands.send(Command::Cancel { id: self.id });
    }
}

/// A request to the watch task.
#[derive(Debug)]
pub(crate) enum Command {
    Create {
        id: u64,
        request: pb::WatchCreateRequest,
        events: mpsc::UnboundedSender<Result<WatchResponse>>,
        created: oneshot::Sender<Result<Revision>>,
    },
    Cancel {
        id: u64,
    },
    Progress,
}

impl Client {
    /// Watches keys. Returns once the server has created the watch.
    ///
    /// ```no_run
    /// # async fn run(client: cairn_client::Client) -> cairn_client::Result<()> {
    /// use futures::StreamExt;
    /// use cairn_client::{Error, WatchOptions};
    ///
    /// let mut watcher = client.watch(WatchOptions::prefix("jobs/")).await?;
    /// while let Some(response) = watcher.next().await {
    ///     match response {
    ///         Ok(response) => {
    ///             for event in &response.events {
    ///                 println!("{:?} {:?} at {}", event.kind, event.kv.key_str(), event.revision());
    ///             }
    ///         }
    ///         Err(Error::Compacted { .. }) => { /* relist, then watch again */ break }
    ///         Err(other) => return Err(other),
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Compacted`] if the start revision is compacted,
    /// [`Error::Timeout`] if no member created it within the request
    /// timeout, [`Error::Closed`] if the watch task is gone.
    pub async fn watch(&self, options: impl Into<WatchOptions>) -> Result<Watcher> {
        let options = options.into();
        let commands = self.watch_commands();
        let id = next_watcher_id();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (created_tx, created) = oneshot::channel();
        commands
            .send(Command::Create {
                id,
                request: options.request,
                events: events_tx,
                created: created_tx,
            })
            .map_err(|_| Error::Closed)?;
        let mut watcher = Watcher {
            id,
            start: Revision::default(),
            events,
            commands,
        };
        match tokio::time::timeout(self.timeout, created).await {
            Ok(Ok(Ok(start))) => {
                watcher.start = start;
                Ok(watcher)
            }
            Ok(Ok(Err(error))) => Err(error),
            Ok(Err(_)) => Err(Error::Closed),
            // Dropping the watcher cancels the creation.
            Err(_) => Err(Error::Timeout(self.timeout)),
        }
    }

    /// Asks for a progress notification on the shared watch stream: every
    /// watcher receives an empty [`WatchResponse`] at the current revision.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the watch task is gone.
    pub fn request_watch_progress(&self) -> Result<()> {
        self.watch_commands()
            .send(Command::Progress)
            .map_err(|_| Error::Closed)
    }

    fn watch_commands(&self) -> mpsc::UnboundedSender<Command> {
        self.inner
            .watch
            .get_or_init(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let task = Task {
                    pool: Arc::clone(&self.inner.pool),
                    timeout: self.timeout,
                    commands: rx,
                    watchers: BTreeMap::new(),
                };
                tokio::spawn(task.run());
                tx
            })
            .clone()
    }
}

fn next_watcher_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One watcher as the task sees it.
struct Watch {
    request: pb::WatchCreateRequest,
    /// The resume point; `None` until a watch "from now" is first created.
    next: Option<Revision>,
    events: mpsc::UnboundedSender<Result<WatchResponse>>,
    /// Answered once, by the first Created reply.
    created: Option<oneshot::Sender<Result<Revision>>>,
}

impl Watch {
    fn create_request(&self) -> pb::WatchRequest {
        let mut request = self.request.clone();
        if let Some(next) = self.next {
            request.start_revision = next.get();
        }
        request.watch_id = 0;
        request.fragment = false;
        pb::WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(request)),
        }
    }

    /// Ends the watcher with `error`: to its creator if still waiting,
    /// else on its stream.
    fn fail(mut self, error: Error) {
        match self.created.take() {
            Some(created) => {
                let _ = created.send(Err(error));
            }
            None => {
                let _ = self.events.send(Err(error));
            }
        }
    }
}

/// Why a stream session ended.
enum Ended {
    /// Every command sender is gone: the client and all watchers.
    Closed,
    /// The stream failed; reconnect.
    Broken(Status),
}

/// The watch task: owns the stream and every watcher's state.
struct Task {
    pool: Arc<Pool>,
    timeout: Duration,
    commands: mpsc::UnboundedReceiver<Command>,
    watchers: BTreeMap<u64, Watch>,
}

impl Task {
    async fn run(mut self) {
        let mut backoff = FIRST_RECONNECT_BACKOFF;
        let mut failed: Vec<String> = Vec::new();
        loop {
            if self.watchers.is_empty() {
                match self.commands.recv().await {
                    None => return,
                    Some(command) => self.offline(command),
                }
                continue;
            }
            let endpoint = self.pool.pick(&failed);
            let started = tokio::time::Instant::now();
            match self.session(&endpoint).await {
                Ended::Closed => return,
                Ended::Broken(status) => {
                    tracing::debug!(endpoint = %endpoint.url, %status, "watch stream broke; resuming");
                    if never_sent(&status) || status.message() == "etcdserver: no leader" {
                        endpoint.mark_unhealthy(self.pool.options.unhealthy_backoff);
                    }
                    failed.push(endpoint.url.clone());
                    if failed.len() >= self.pool.urls().len() {
                        failed.clear();
                    }
                    // A stream that lived a while earns a quick retry.
                    if started.elapsed() > MAX_RECONNECT_BACKOFF * 5 {
                        backoff = FIRST_RECONNECT_BACKOFF;
                    }
                    if self.pause(backoff).await.is_err() {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
                }
            }
        }
    }

    /// Waits `delay` while handling commands. `Err` if the commands closed.
    async fn pause(&mut self, delay: Duration) -> std::result::Result<(), ()> {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return Ok(()),
                command = self.commands.recv() => match command {
                    None => return Err(()),
                    Some(command) => self.offline(command),
                },
            }
        }
    }

    /// A command while no stream is open.
    fn offline(&mut self, command: Command) {
        match command {
            Command::Create {
                id,
                request,
                events,
                created,
            } => {
                self.watchers.insert(
                    id,
                    Watch {
                        request,
                        next: None,
                        events,
                        created: Some(created),
                    },
                );
            }
            Command::Cancel { id } => {
                self.watchers.remove(&id);
            }
            // Nobody is connected to notify.
            Command::Progress => {}
        }
    }

    /// One stream: create every watcher, then serve until it breaks.
    async fn session(&mut self, endpoint: &crate::transport::Endpoint) -> Ended {
        let (requests, requests_rx) = fmpsc::unbounded::<pb::WatchRequest>();
        let mut pending: VecDeque<u64> = VecDeque::new();
        for (id, watch) in &self.watchers {
            let _ = requests.unbounded_send(watch.create_request());
            pending.push_back(*id);
        }
        let mut request = tonic::Request::new(requests_rx);
        if self.pool.options.require_leader {
            request
                .metadata_mut()
                .insert("hasleader", MetadataValue::from_static("true"));
        }
        let mut client = WatchClient::new(endpoint.channel.clone())
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE);
        // grpc-go sends the response headers with the first message, which
        // is the first Created reply: queued above.
        let mut stream = match tokio::time::timeout(self.timeout, client.watch(request)).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return Ended::Broken(status),
            Err(_) => return Ended::Broken(Status::deadline_exceeded("opening the watch stream")),
        };
        let mut by_server: HashMap<i64, u64> = HashMap::new();
        loop {
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else { return Ended::Closed };
                    self.online(command, &requests, &mut pending, &mut by_server);
                }
                message = stream.message() => match message {
                    Ok(Some(response)) => {
                        self.handle(response, &requests, &mut pending, &mut by_server);
                    }
                    Ok(None) => return Ended::Broken(Status::unavailable("the watch stream ended")),
                    Err(status) => return Ended::Broken(status),
                },
            }
        }
    }

    /// A command while a stream is open.
    fn online(
        &mut self,
        command: Command,
        requests: &fmpsc::UnboundedSender<pb::WatchRequest>,
        pending: &mut VecDeque<u64>,
        by_server: &mut HashMap<i64, u64>,
    ) {
        match command {
            Command::Create {
                id,
                request,
                events,
                created,
            } => {
                let watch = Watch {
                    request,
                    next: None,
                    events,
                    created: Some(created),
                };
                let _ = requests.unbounded_send(watch.create_request());
                pending.push_back(id);
                self.watchers.insert(id, watch);
            }
            Command::Cancel { id } => {
                if self.watchers.remove(&id).is_some() {
                    // Not yet created: its Created reply finds no watcher
                    // and cancels it then.
                    let server_id = by_server.iter().find(|(_, &v)| v == id).map(|(&k, _)| k);
                    if let Some(server_id) = server_id {
                        by_server.remove(&server_id);
                        let _ = requests.unbounded_send(cancel_request(server_id));
                    }
                }
            }
            Command::Progress => {
                let _ = requests.unbounded_send(pb::WatchRequest {
                    request_union: Some(RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
                });
            }
        }
    }

    /// One response from the server.
    fn handle(
        &mut self,
        response: pb::WatchResponse,
        requests: &fmpsc::UnboundedSender<pb::WatchRequest>,
        pending: &mut VecDeque<u64>,
        by_server: &mut HashMap<i64, u64>,
    ) {
        let header = ResponseHeader::from_pb(response.header);
        if response.created {
            let Some(id) = pending.pop_front() else {
                tracing::warn!(
                    watch_id = response.watch_id,
                    "a Created reply nobody waits for"
                );
                return;
            };
            let refused = response.canceled || response.watch_id == -1;
            let Some(watch) = self.watchers.get_mut(&id) else {
                // Cancelled while being created.
                if !refused {
                    let _ = requests.unbounded_send(cancel_request(response.watch_id));
                }
                return;
            };
            if refused {
                if let Some(watch) = self.watchers.remove(&id) {
                    watch.fail(cancel_error(&response));
                }
                return;
            }
            by_server.insert(response.watch_id, id);
            // A watch "from now" starts after the revision current at its
            // creation; one with a start revision, there.
            let start = *watch
                .next
                .get_or_insert(match watch.request.start_revision {
                    r if r > 0 => Revision::new(r),
                    _ => header.revision.next(),
                });
            if let Some(created) = watch.created.take() {
                let _ = created.send(Ok(start));
            }
            return;
        }
        if response.watch_id == -1 {
            // Stream-wide progress: deliver, but do not move resume points
            // (see the module docs).
            for watch in self.watchers.values() {
                if watch.created.is_none() {
                    let _ = watch.events.send(Ok(WatchResponse {
                        header,
                        events: Vec::new(),
                    }));
                }
            }
            return;
        }
        let Some(&id) = by_server.get(&response.watch_id) else {
            return;
        };
        if response.canceled {
            by_server.remove(&response.watch_id);
            if let Some(watch) = self.watchers.remove(&id) {
                watch.fail(cancel_error(&response));
            }
            return;
        }
        let Some(watch) = self.watchers.get_mut(&id) else {
            return;
        };
        let next = watch.next.unwrap_or_default();
        if response.events.is_empty() {
            // This watcher's own progress notification: it is caught up.
            watch.next = Some(next.max(header.revision.next()));
            let _ = watch.events.send(Ok(WatchResponse {
                header,
                events: Vec::new(),
            }));
            return;
        }
        let events: Vec<Event> = response
            .events
            .into_iter()
            .map(Event::from_pb)
            .filter(|e| e.revision() >= next)
            .collect();
        let Some(last) = events.last() else {
            return;
        };
        watch.next = Some(last.revision().next());
        let _ = watch.events.send(Ok(WatchResponse { header, events }));
    }
}

fn cancel_request(watch_id: i64) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(pb::WatchCancelRequest {
            watch_id,
        })),
    }
}

/// The error a server-side cancel stands for.
fn cancel_error(response: &pb::WatchResponse) -> Error {
    if response.compact_revision > 0 {
        Error::Compacted {
            compact_revision: Some(Revision::new(response.compact_revision)),
        }
    } else {
        Error::WatchCanceled {
            reason: response.cancel_reason.clone(),
        }
    }
}
