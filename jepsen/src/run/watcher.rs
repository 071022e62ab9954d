//! The watch workload's watchers, and the reference watch read at the end.
//!
//! A watcher watches the prefix `w/` (every other one with prev_kv) from
//! revision 1, over raw gRPC Watch streams, one *segment* (stream) at a
//! time. A segment ends when its stream errors, when no response comes for
//! [`STALL`] although progress was asked for every [`PROGRESS_EVERY`], or
//! after a random 3–10 s (so reconnections happen without faults too).
//! The next segment opens on the next member from the last delivered
//! revision + 1, as etcd's clients resume. Everything sent and received is
//! recorded; [`crate::watchers`] checks it.
//!
//! At the end the runner sends the head revision; each watcher keeps going
//! until a progress notification at or above it arrives (it then holds
//! every event through the head), or [`CATCH_UP`] passes.

use std::time::Duration;

use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{WatchCreateRequest, WatchProgressRequest, WatchRequest};
use tokio::sync::{mpsc, watch as signal};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::rng::Rng;
use crate::watch::wire::{response, spec};
use crate::watch::{self as validator, Stream};
use crate::watchers::{Reference, Segment, Watcher};

/// The prefix the watch workload writes and watches.
pub const PREFIX: &str = "w/";
/// How often a segment asks for progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// A segment with no response for this long is abandoned.
const STALL: Duration = Duration::from_secs(3);
/// How long a watcher has to catch up once the head is known.
pub const CATCH_UP: Duration = Duration::from_secs(30);

/// Why a segment ended.
enum End {
    /// Confirmed complete through the head.
    CaughtUp,
    /// Error, stall, cancel, or its time was up: open another.
    Reconnect,
}

/// One watcher, until it has caught up with the head `stop` brings (or
/// [`CATCH_UP`] after it came).
pub async fn run(
    channels: Vec<Channel>,
    id: usize,
    mut rng: Rng,
    mut stop: signal::Receiver<Option<i64>>,
) -> Watcher {
    let n = channels.len();
    let mut member = id % n;
    let mut resume = 1;
    let mut watcher = Watcher::default();
    let mut give_up: Option<Instant> = None;
    loop {
        let head = *stop.borrow_and_update();
        if head.is_some() {
            let at = *give_up.get_or_insert_with(|| Instant::now() + CATCH_UP);
            if Instant::now() > at {
                return watcher;
            }
        }
        let spec = WatchCreateRequest {
            key: PREFIX.as_bytes().to_vec(),
            range_end: validator::WatchSpec::prefix(PREFIX).range_end,
            start_revision: resume,
            prev_kv: id.is_multiple_of(2),
            ..WatchCreateRequest::default()
        };
        let lifetime = Duration::from_millis(rng.between(3_000, 10_000));
        let mut segment = Segment {
            member,
            stream: Stream::default(),
        };
        let end = segment_run(
            channels[member].clone(),
            spec,
            &mut segment.stream,
            &mut resume,
            lifetime,
            &mut stop,
            give_up,
        )
        .await;
        watcher.segments.push(segment);
        match end {
            End::CaughtUp => {
                watcher.caught_up = true;
                return watcher;
            }
            End::Reconnect => {
                member = (member + 1) % n;
                // Don't spin on a dead member.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One stream: create, then record responses until it ends.
async fn segment_run(
    channel: Channel,
    create: WatchCreateRequest,
    stream: &mut Stream,
    resume: &mut i64,
    lifetime: Duration,
    stop: &mut signal::Receiver<Option<i64>>,
    give_up: Option<Instant>,
) -> End {
    let (tx, requests) = mpsc::channel(4);
    stream.creates.push(spec(&create));
    let send = |tx: &mpsc::Sender<WatchRequest>, r: RequestUnion| {
        let _ = tx.try_send(WatchRequest {
            request_union: Some(r),
        });
    };
    send(&tx, RequestUnion::CreateRequest(create));
    let opened = tokio::time::timeout(
        STALL,
        WatchClient::new(channel).watch(ReceiverStream::new(requests)),
    )
    .await;
    let Ok(Ok(responses)) = opened else {
        return End::Reconnect;
    };
    let mut responses = responses.into_inner();
    let started = Instant::now();
    let mut last_heard = Instant::now();
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        let head = *stop.borrow_and_update();
        // While the run goes on, segments end by their lifetime; once the
        // head is known, a segment stays until it caught up (or gives up).
        let end_at = match (head, give_up) {
            (Some(_), Some(at)) => at,
            _ => started + lifetime,
        };
        tokio::select! {
            message = responses.message() => {
                let Ok(Some(r)) = message else {
                    return End::Reconnect;
                };
                last_heard = Instant::now();
                let recorded = response(&r);
                for e in &recorded.events {
                    *resume = (*resume).max(e.kv.mod_revision + 1);
                }
                let progress = !r.created && !r.canceled && r.events.is_empty() && !r.fragment;
                let at = recorded.header_revision;
                stream.responses.push(recorded);
                if r.canceled && !r.created {
                    return End::Reconnect;
                }
                if r.created && r.canceled {
                    return End::Reconnect;
                }
                if progress && head.is_some_and(|h| at >= h) {
                    return End::CaughtUp;
                }
            }
            _ = tick.tick() => {
                if last_heard.elapsed() > STALL {
                    return End::Reconnect;
                }
                send(&tx, RequestUnion::ProgressRequest(WatchProgressRequest {}));
            }
            _ = tokio::time::sleep_until(end_at) => return End::Reconnect,
            _ = stop.changed() => {}
        }
    }
}

/// Reads the reference: a watch of every key from revision 1 on `channel`,
/// until a progress notification at or above `head`.
///
/// # Errors
/// The stream fails, or no such progress comes within [`CATCH_UP`].
pub async fn reference(channel: Channel, head: i64) -> anyhow::Result<Reference> {
    let create = WatchCreateRequest {
        key: vec![0],
        range_end: vec![0],
        start_revision: 1,
        ..WatchCreateRequest::default()
    };
    let mut reference = Reference {
        stream: Stream::default(),
        head,
    };
    let (tx, requests) = mpsc::channel(4);
    reference.stream.creates.push(spec(&create));
    tx.try_send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create)),
    })?;
    let mut responses = WatchClient::new(channel)
        .watch(ReceiverStream::new(requests))
        .await?
        .into_inner();
    let deadline = Instant::now() + CATCH_UP;
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            message = responses.message() => {
                let r = message?.ok_or_else(|| anyhow::anyhow!("the reference stream ended"))?;
                let progress = !r.created && !r.canceled && r.events.is_empty() && !r.fragment;
                let recorded = response(&r);
                let at = recorded.header_revision;
                reference.stream.responses.push(recorded);
                anyhow::ensure!(!r.canceled, "the reference watch was canceled: {}", r.cancel_reason);
                if progress && at >= head {
                    return Ok(reference);
                }
            }
            _ = tick.tick() => {
                let _ = tx.try_send(WatchRequest {
                    request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
                });
            }
            _ = tokio::time::sleep_until(deadline) => {
                anyhow::bail!("no progress at or above {head} on the reference watch within {CATCH_UP:?}");
            }
        }
    }
}
