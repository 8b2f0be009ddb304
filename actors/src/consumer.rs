//! Consumer actors: durable JetStream consumers for events other services (or
//! this one) publish, shared by every instance of the service.
//!
//! An event is acknowledged only after its handler returned `Ok`, that is after
//! the handler stored its effect; while the handler runs, the server is told
//! every third of the ack wait that the event is still in hand. A transient
//! failure is redelivered after a backoff; a permanent failure (an event that
//! cannot be decoded is one), or a transient one on the last attempt, moves the
//! event to the `DEADLETTER` stream with the reason, and is counted.
//!
//! Each event is handled inside its trace (from the event's `traceparent`): log
//! records carry its id, and with spans on (`shop_nats::otel`) a consumer span
//! covers handling and acknowledgement.

use std::{sync::Arc, time::Duration};

use async_nats::{
    jetstream::{self, consumer::pull, AckKind},
    HeaderMap,
};
use bytes::Bytes;
use futures::{future::BoxFuture, FutureExt, StreamExt};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::de::DeserializeOwned;
use shop_nats::{
    jetstream::ensure_consumer,
    otel::{self, KeyValue, SpanKind},
    TraceContext,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{metrics::Metrics, parking::SetAside};

/// Stream that keeps every dead-lettered event, on `deadletter.<durable>`.
pub const DEADLETTER_STREAM: &str = "DEADLETTER";
pub const DEADLETTER_REASON_HEADER: &str = "Shop-Dead-Letter-Reason";
/// How many times the dead-lettered event was delivered.
pub const DELIVERIES_HEADER: &str = "Shop-Deliveries";

/// A durable consumer a service runs.
#[derive(Clone)]
pub struct ConsumerSpec {
    /// Durable name, shared by every instance of the service (they split the work).
    pub durable: String,
    /// Stream to read; the consumer waits (and logs) until it exists.
    pub stream: String,
    pub filter_subjects: Vec<String>,
    /// Attempts before an event is dead-lettered.
    pub max_deliver: i64,
    /// Wait before redelivery after attempt n (1-based); the last value repeats.
    pub backoff: Vec<Duration>,
    /// Events handled at once by one instance.
    pub concurrency: usize,
    /// How long an event may go without word from its instance before the
    /// server redelivers it (to another instance if this one died). A running
    /// handler sends progress every third of it, however long it takes.
    pub ack_wait: Duration,
    pub handler: Arc<dyn EventHandler>,
}

impl ConsumerSpec {
    /// A consumer with the default retry policy: 5 attempts, backoff 1, 2, 5, 10 s,
    /// 16 at once, redelivered 30 s after an instance stopped answering for it.
    pub fn new(
        durable: impl Into<String>,
        stream: impl Into<String>,
        filter_subjects: &[&str],
        handler: Arc<dyn EventHandler>,
    ) -> Self {
        Self {
            durable: durable.into(),
            stream: stream.into(),
            filter_subjects: filter_subjects.iter().map(|s| s.to_string()).collect(),
            max_deliver: 5,
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(5),
                Duration::from_secs(10),
            ],
            concurrency: 16,
            ack_wait: Duration::from_secs(30),
            handler,
        }
    }

    fn backoff_after(&self, attempt: i64) -> Duration {
        let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(0);
        self.backoff
            .get(index)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }
}

/// One delivery of an event.
#[derive(Debug, Clone)]
pub struct ConsumedEvent {
    pub stream: String,
    pub stream_sequence: u64,
    pub subject: String,
    pub headers: Option<HeaderMap>,
    pub payload: Bytes,
    /// 1 on the first delivery.
    pub delivered: i64,
    pub trace: TraceContext,
}

impl ConsumedEvent {
    /// Identifies the event across redeliveries and instances: `<stream>:<sequence>`.
    pub fn event_id(&self) -> String {
        format!("{}:{}", self.stream, self.stream_sequence)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.as_ref()?.get(name).map(|v| v.as_str())
    }

    /// Decodes the JSON payload; an undecodable event is a permanent failure.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, HandleError> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            HandleError::Permanent(format!(
                "undecodable event {} on {}: {e}",
                self.event_id(),
                self.subject
            ))
        })
    }
}

/// Why handling failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandleError {
    /// May succeed later (a dependency is down): redeliver after a backoff.
    Transient(String),
    /// Will never succeed: dead-letter now.
    Permanent(String),
}

impl std::fmt::Display for HandleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandleError::Transient(reason) => write!(f, "transient: {reason}"),
            HandleError::Permanent(reason) => write!(f, "permanent: {reason}"),
        }
    }
}

/// Handles events; must be idempotent (an event can be delivered more than once).
pub trait EventHandler: Send + Sync + 'static {
    fn handle(self: Arc<Self>, event: ConsumedEvent)
        -> BoxFuture<'static, Result<(), HandleError>>;
}

/// What a consumer actor needs; shared by its incarnations.
pub struct ConsumerShared {
    pub spec: ConsumerSpec,
    pub js: jetstream::Context,
    pub metrics: Metrics,
    /// Cancelled at shutdown: stop fetching, finish what is in hand.
    pub stop: CancellationToken,
    pub tracker: TaskTracker,
}

#[derive(Clone, Copy)]
pub struct ConsumerActor;

pub enum ConsumerMsg {
    Run,
}

impl Actor for ConsumerActor {
    type Msg = ConsumerMsg;
    type State = Arc<ConsumerShared>;
    type Arguments = Arc<ConsumerShared>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Arc<ConsumerShared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.cast(ConsumerMsg::Run)?;
        Ok(shared)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        ConsumerMsg::Run: Self::Msg,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let shared = shared.clone();
        let run = consume(shared.clone());
        shared.tracker.track_future(run).await?;
        myself.stop(None);
        Ok(())
    }
}

/// How long one pull request waits at the server, and how often the server
/// says it is still there while nothing arrives (idle heartbeat). Two missed
/// heartbeats (2 s of silence) mean the consumer's leader is gone (a node died,
/// leadership moved, our connection moved to another node): the pull request
/// died with it, and the new leader knows nothing of it. The library would only
/// ask again when the request expires (here 10 s, by default 30 s, plus 5 s);
/// re-opening at once makes the pause the election's, not the expiry's.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
const PULL_HEARTBEAT: Duration = Duration::from_secs(1);
/// Longest wait between two attempts to re-open a consumer.
const REOPEN_MAX_DELAY: Duration = Duration::from_secs(2);
/// How long one attempt to open may take: while the cluster elects a leader
/// its API does not answer, and waiting out the client's request timeout
/// would start consuming seconds after the leader is back.
const OPEN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

fn reopen_delay(failures: u32) -> Duration {
    Duration::from_millis(100u64 << failures.min(5)).min(REOPEN_MAX_DELAY)
}

/// Whether a pull stream error means its pull requests are lost (no leader,
/// consumer gone, pull refused), so it must be opened again; other errors
/// (one odd status message) leave it running.
fn needs_reopen(kind: pull::MessagesErrorKind) -> bool {
    !matches!(kind, pull::MessagesErrorKind::Other)
}

/// Runs the durable consumer until `stop`: opens it (creating it if needed)
/// and handles up to `concurrency` events at once; whenever its pull requests
/// are lost (missed heartbeats, a leader change, the consumer deleted, a failed
/// pull after a reconnect) it is opened again, with backoff, without touching
/// the events in hand. It never fails for a cause that may pass: a node loss
/// must not make the supervisor give up on the service.
async fn consume(shared: Arc<ConsumerShared>) -> Result<(), ActorProcessingErr> {
    let spec = &shared.spec;
    let Some(stream) = wait_for_stream(&shared).await else {
        return Ok(());
    };
    // One filter goes in `filter_subject`: async-nats then names durable and
    // filter in the API subject (`$JS.API.CONSUMER.CREATE.<stream>.<durable>.<filter>`),
    // where the bus permissions pin them for a consumer on another service's stream.
    let (filter_subject, filter_subjects) = match spec.filter_subjects.as_slice() {
        [one] => (one.clone(), Vec::new()),
        many => (String::new(), many.to_vec()),
    };
    let config = pull::Config {
        durable_name: Some(spec.durable.clone()),
        filter_subject,
        filter_subjects,
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: spec.ack_wait,
        // Redelivery and dead-lettering are decided here, not by the server.
        max_deliver: -1,
        max_ack_pending: i64::try_from(spec.concurrency * 4).unwrap_or(1024),
        ..Default::default()
    };
    let concurrency = spec.concurrency.max(1);
    let mut in_hand = futures::stream::FuturesUnordered::new();
    let mut failures = 0u32;
    let mut opened_before = false;
    'open: loop {
        if failures > 0 {
            tokio::select! {
                _ = shared.stop.cancelled() => break 'open,
                _ = tokio::time::sleep(reopen_delay(failures)) => {}
            }
        }
        let open = async {
            match ensure_consumer(&stream, config.clone()).await {
                Ok(consumer) => consumer
                    .stream()
                    .expires(PULL_EXPIRES)
                    .heartbeat(PULL_HEARTBEAT)
                    .messages()
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        let opened = match tokio::time::timeout(OPEN_ATTEMPT_TIMEOUT, open).await {
            Ok(opened) => opened,
            Err(_) => Err(format!(
                "no answer within {} ms (electing a leader?)",
                OPEN_ATTEMPT_TIMEOUT.as_millis()
            )),
        };
        let mut messages = match opened {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(consumer = %spec.durable, stream = %spec.stream, attempt = failures + 1, error = %e, "cannot open consumer; retrying");
                failures += 1;
                continue 'open;
            }
        };
        if opened_before {
            tracing::info!(consumer = %spec.durable, stream = %spec.stream, "consumer re-opened");
        } else {
            tracing::info!(consumer = %spec.durable, stream = %spec.stream, "consumer started");
            opened_before = true;
        }
        failures = 0;
        loop {
            tokio::select! {
                biased;
                _ = shared.stop.cancelled() => break 'open,
                Some(()) = in_hand.next(), if !in_hand.is_empty() => {}
                next = messages.next(), if in_hand.len() < concurrency => match next {
                    Some(Ok(message)) => {
                        let shared = shared.clone();
                        in_hand.push(async move { process(&shared, message).await }.boxed());
                    }
                    Some(Err(e)) if needs_reopen(e.kind()) => {
                        tracing::warn!(consumer = %spec.durable, stream = %spec.stream, error = %e, in_hand = in_hand.len(), "consumer lost its pull requests; re-opening it");
                        shared.metrics.consumer_reopened.with_label_values(&[&spec.durable]).inc();
                        continue 'open;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(consumer = %spec.durable, error = %e, "consumer error; it goes on");
                    }
                    None => {
                        tracing::warn!(consumer = %spec.durable, stream = %spec.stream, "consumer stream ended; re-opening it");
                        failures += 1;
                        continue 'open;
                    }
                },
            }
        }
    }
    // Stopping: finish the events in hand, fetch no more.
    while in_hand.next().await.is_some() {}
    Ok(())
}

/// Waits until the stream exists (its owner may start later); `None` when stopping.
async fn wait_for_stream(shared: &ConsumerShared) -> Option<jetstream::stream::Stream> {
    let mut logged = false;
    loop {
        match shared.js.get_stream(&shared.spec.stream).await {
            Ok(stream) => return Some(stream),
            Err(e) => {
                if !logged {
                    tracing::warn!(consumer = %shared.spec.durable, stream = %shared.spec.stream, error = %e, "waiting for stream to exist");
                    logged = true;
                }
            }
        }
        tokio::select! {
            _ = shared.stop.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn process(shared: &ConsumerShared, message: jetstream::Message) {
    let spec = &shared.spec;
    let (stream_sequence, delivered) = match message.info() {
        Ok(info) => {
            if info.delivered == 1 {
                let waited = time::OffsetDateTime::now_utc() - info.published;
                shared
                    .metrics
                    .event_duration
                    .with_label_values(&[&spec.durable, "wait"])
                    .observe(waited.as_seconds_f64().max(0.0));
            }
            (info.stream_sequence, info.delivered)
        }
        Err(e) => {
            tracing::error!(consumer = %spec.durable, error = %e, "message without JetStream metadata; terminating it");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let incoming = TraceContext::from_headers(message.headers.as_ref());
    let mut span = if otel::enabled() {
        consumer_span(
            spec,
            &message.subject,
            stream_sequence,
            delivered,
            incoming.as_ref(),
        )
    } else {
        None
    };
    let trace = match &span {
        Some(span) => span.context().clone(),
        None => incoming.unwrap_or_else(TraceContext::new_root),
    };
    let event = ConsumedEvent {
        stream: spec.stream.clone(),
        stream_sequence,
        subject: message.subject.to_string(),
        headers: message.headers.clone(),
        payload: message.payload.clone(),
        delivered,
        trace,
    };
    let trace = event.trace.clone();
    shop_nats::trace::scope(&trace, handle(shared, message, event, span.as_mut())).await;
}

/// The consumer span of one delivery, parented by the event's `traceparent`.
fn consumer_span(
    spec: &ConsumerSpec,
    subject: &str,
    stream_sequence: u64,
    delivered: i64,
    parent: Option<&TraceContext>,
) -> Option<otel::Span> {
    let mut attributes = otel::messaging(subject, "process");
    attributes.extend([
        KeyValue::new("messaging.consumer.group.name", spec.durable.clone()),
        KeyValue::new(
            "messaging.message.id",
            format!("{}:{stream_sequence}", spec.stream),
        ),
        KeyValue::new("shop.delivery", delivered),
    ]);
    otel::start(
        SpanKind::Consumer,
        format!("process {}", spec.durable),
        parent,
        attributes,
    )
}

/// Runs the handler on one delivery and acknowledges, retries or dead-letters it.
async fn handle(
    shared: &ConsumerShared,
    message: jetstream::Message,
    event: ConsumedEvent,
    span: Option<&mut otel::Span>,
) {
    let spec = &shared.spec;
    let delivered = event.delivered;
    let work = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
        spec.handler.clone().handle(event.clone()),
    ));
    let started = std::time::Instant::now();
    let outcome = keep_lease(&message, spec.ack_wait, work)
        .await
        .unwrap_or_else(|panic| {
            Err(HandleError::Transient(format!(
                "handler panicked: {}",
                crate::responder::panic_message(&*panic)
            )))
        });
    shared
        .metrics
        .event_duration
        .with_label_values(&[&spec.durable, "handle"])
        .observe(started.elapsed().as_secs_f64());
    if let (Some(span), Err(failure)) = (span, &outcome) {
        span.set_failed(&failure.to_string());
    }
    let consumed = |outcome: &str| {
        shared
            .metrics
            .events_consumed
            .with_label_values(&[&spec.durable, outcome])
            .inc()
    };
    match outcome {
        Ok(()) => {
            // A plain ack, not a double one: the effect is stored and handlers are
            // idempotent, so a lost ack costs only a redelivery the handler dedupes,
            // while waiting for the server's confirmation would cost a round trip
            // per event.
            if let Err(e) = message.ack().await {
                tracing::warn!(consumer = %spec.durable, event = %event.event_id(), error = %e, "ack failed");
            }
            consumed("ok");
        }
        Err(HandleError::Transient(reason)) if delivered < spec.max_deliver => {
            let delay = spec.backoff_after(delivered);
            tracing::warn!(consumer = %spec.durable, event = %event.event_id(), attempt = delivered, retry_in_ms = delay.as_millis() as u64, reason, "event failed; will retry");
            let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
            consumed("retry");
        }
        Err(failure) => {
            let reason = failure.to_string();
            match dead_letter(shared, &event, &reason).await {
                Ok(()) => {
                    tracing::error!(consumer = %spec.durable, event = %event.event_id(), attempts = delivered, reason, "event dead-lettered");
                    shared
                        .metrics
                        .dead_letters
                        .with_label_values(&[&spec.durable])
                        .inc();
                    let _ = message.double_ack_with(AckKind::Term).await;
                    consumed("dead_letter");
                }
                Err(e) => {
                    // Not stored in the dead-letter stream: keep the event and try again later.
                    tracing::error!(consumer = %spec.durable, event = %event.event_id(), error = %e, "dead-lettering failed; will retry");
                    let _ = message
                        .ack_with(AckKind::Nak(Some(spec.backoff_after(delivered))))
                        .await;
                    consumed("retry");
                }
            }
        }
    }
}

/// Runs `work` while telling the server, every third of `ack_wait`, that the
/// event is still in hand (`AckKind::Progress`), so a handler that takes longer
/// than the ack wait keeps its delivery instead of the server handing the event
/// to another instance while it still runs.
async fn keep_lease<F: std::future::Future>(
    message: &jetstream::Message,
    ack_wait: Duration,
    work: F,
) -> F::Output {
    let every = (ack_wait / 3).max(Duration::from_millis(10));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            biased;
            done = &mut work => return done,
            _ = ticks.tick() => {
                if let Err(e) = message.ack_with(AckKind::Progress).await {
                    tracing::warn!(subject = %message.subject, error = %e, "progress ack failed");
                }
            }
        }
    }
}

/// How far a durable consumer is behind its stream, as the server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerLag {
    /// Events not yet delivered to any instance.
    pub pending: u64,
    /// Events delivered and not yet acknowledged.
    pub ack_pending: usize,
    /// Events delivered more than once and not yet acknowledged.
    pub redelivered: usize,
}

/// Asks the server for `durable`'s lag on `stream`.
pub async fn consumer_lag(
    js: &jetstream::Context,
    stream: &str,
    durable: &str,
) -> Result<ConsumerLag, String> {
    let stream = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| e.to_string())?;
    let info = stream
        .consumer_info(durable)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ConsumerLag {
        pending: info.num_pending,
        ack_pending: info.num_ack_pending,
        redelivered: info.num_redelivered,
    })
}

async fn dead_letter(
    shared: &ConsumerShared,
    event: &ConsumedEvent,
    reason: &str,
) -> Result<(), String> {
    let mut headers = SetAside {
        subject: &event.subject,
        stream: &event.stream,
        sequence: event.stream_sequence,
        headers: event.headers.as_ref(),
        reason,
    }
    .headers(DEADLETTER_REASON_HEADER);
    headers.insert(DELIVERIES_HEADER, event.delivered.to_string().as_str());
    headers.insert(
        "Nats-Msg-Id",
        format!("deadletter:{}:{}", shared.spec.durable, event.event_id()).as_str(),
    );
    event.trace.inject(&mut headers);
    let ack = shared
        .js
        .publish_with_headers(
            format!("deadletter.{}", shared.spec.durable),
            headers,
            event.payload.clone(),
        )
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map_err(|e| e.to_string())?;
    Ok(())
}
