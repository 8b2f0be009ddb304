//! The write path: append an event to the service's stream with optimistic
//! concurrency (`Nats-Expected-Last-Subject-Sequence`) and deduplication
//! (`Nats-Msg-Id`), then wait until the local state has applied it.
//!
//! Each event carries the writer's trace (`traceparent`, `tracestate`); with
//! spans on (`shop_nats::otel`) a producer span covers the append and is the
//! parent the event's consumers continue from.

use std::{
    hash::{Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use bytes::Bytes;
use rand::Rng;
use shop_nats::{
    otel::{self, KeyValue, SpanKind},
    trace::TRACESTATE_HEADER,
    ServiceError, TraceContext,
};
use tokio::sync::Mutex;

use crate::state::{StateHandle, StateShared};

/// Header naming an event's type, so consumers can filter without decoding.
pub const EVENT_TYPE_HEADER: &str = "Shop-Event-Type";

/// Attempts before a write that keeps conflicting is answered 409.
const MAX_ATTEMPTS: u32 = 25;
/// How long a write waits for its event to reach the local state before replying.
const APPLY_WAIT: Duration = Duration::from_secs(2);
/// How long one attempt of an append waits for the stream's ack before it is
/// sent again (same message id, so the stream stores it once). Shorter than
/// the JetStream client's 5 s so that a stream without a leader (a NATS node
/// lost, its election running) fails a write within about 3 attempts × 2 s,
/// before its caller's own timeout, instead of hanging for 15 s.
const ACK_WAIT: Duration = Duration::from_secs(2);
/// Lock stripes serialising writes to one aggregate within this instance.
const STRIPES: usize = 64;

/// One event to append.
#[derive(Debug, Clone)]
pub struct Append {
    /// Stream subject of the aggregate, e.g. `events.product.<id>`.
    pub subject: String,
    pub event_type: &'static str,
    pub payload: Bytes,
    /// The aggregate's current revision (0 = must not exist yet); `None` = no check.
    /// It must come from the same read the decision was made on: a revision read
    /// separately may be newer than the state decided on, and the stream would
    /// then accept a decision made on stale state.
    pub expected_revision: Option<u64>,
    /// Deduplication id: the same id within the stream's window is stored once.
    pub msg_id: String,
}

/// Where an event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub revision: u64,
    /// The stream already had this `msg_id`; `revision` is the original's.
    pub duplicate: bool,
}

/// An event a service appends to its stream. Its type name travels in the
/// [`EVENT_TYPE_HEADER`] so consumers can filter without decoding.
pub trait Event: serde::Serialize {
    fn type_name(&self) -> &'static str;
}

/// What a decision wants written: `event` on `subject`, whose last revision
/// must still be `expected_revision` (0: nothing on the subject yet).
#[derive(Debug, Clone)]
pub struct Change<E> {
    pub subject: String,
    pub expected_revision: u64,
    pub event: E,
}

impl<E: Event> Change<E> {
    /// The append that makes this change, deduplicated by `msg_id`.
    pub fn to_append(&self, msg_id: String) -> Result<Append, ServiceError> {
        let payload = serde_json::to_vec(&self.event)
            .map_err(|e| ServiceError::internal(format!("encoding event: {e}")))?;
        Ok(Append {
            subject: self.subject.clone(),
            event_type: self.event.type_name(),
            payload: payload.into(),
            expected_revision: Some(self.expected_revision),
            msg_id,
        })
    }
}

/// The outcome of [`EventLog::change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed<E> {
    /// The event is stored at `revision` and applied locally.
    Appended { event: E, revision: u64 },
    /// The stream already had this message id: a retried request, whose first
    /// try is stored at `revision`. The local state holds its effect.
    Duplicate { revision: u64 },
    /// The decision was that nothing needs writing (an idempotent repeat).
    Unchanged,
}

impl<E> Changed<E> {
    /// The event this call appended, with its revision; `None` for a repeat.
    pub fn appended(self) -> Option<(E, u64)> {
        match self {
            Changed::Appended { event, revision } => Some((event, revision)),
            _ => None,
        }
    }
}

/// A request's `expected_revision` against the aggregate's current one: a 409
/// naming both when they differ (`what` and `id` name the aggregate).
pub fn check_expected_revision(
    what: &str,
    id: &str,
    current: u64,
    expected: Option<u64>,
) -> Result<(), ServiceError> {
    match expected {
        Some(expected) if expected != current => Err(ServiceError::conflict(format!(
            "{what} {id} is at revision {current}, not the expected {expected}"
        ))),
        _ => Ok(()),
    }
}

/// The outcome of a decide-and-append cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Appended(Appended),
    /// The decision was that nothing needs writing (an idempotent repeat).
    Unchanged,
}

/// Appends events to one service's stream.
#[derive(Clone)]
pub struct EventLog {
    js: jetstream::Context,
    shared: Arc<StateShared>,
    state: StateHandle,
    stripes: Arc<Vec<Mutex<()>>>,
    /// The subjects the service declares it publishes; an append elsewhere is a bug.
    publishes: Arc<Vec<String>>,
}

impl EventLog {
    /// An event log appending to `shared`'s stream, on the subjects matching
    /// `publishes` (the service's declared event subjects) only.
    pub fn new(js: jetstream::Context, shared: Arc<StateShared>, publishes: Vec<String>) -> Self {
        Self {
            js,
            state: shared.handle(),
            shared,
            stripes: Arc::new((0..STRIPES).map(|_| Mutex::new(())).collect()),
            publishes: Arc::new(publishes),
        }
    }

    pub fn state(&self) -> &StateHandle {
        &self.state
    }

    /// A fresh deduplication id for a write that has no caller-supplied key.
    pub fn new_msg_id() -> String {
        format!("{:032x}", rand::rng().random::<u128>())
    }

    /// Decides against local state and appends, retrying on conflicts.
    ///
    /// `decide` reads the local state and returns the event to append, `None`
    /// when nothing needs writing, or an error for the caller. On a sequence
    /// conflict (another instance wrote the aggregate first) the local state
    /// catches up and `decide` runs again; writes to one aggregate within this
    /// instance are serialised so they do not conflict with each other.
    pub async fn write<F>(
        &self,
        aggregate: &str,
        trace: &TraceContext,
        mut decide: F,
    ) -> Result<Written, ServiceError>
    where
        F: FnMut(&StateHandle) -> Result<Option<Append>, ServiceError>,
    {
        let _guard = self.stripe(aggregate).lock().await;
        let mut conflicted = false;
        for attempt in 0..MAX_ATTEMPTS {
            let Some(mut append) = decide(&self.state)? else {
                return Ok(Written::Unchanged);
            };
            if conflicted {
                append.expected_revision = self
                    .shared
                    .expect_past_parked(&append.subject, append.expected_revision)
                    .await?;
            }
            match self.append(&append, trace).await {
                Ok(appended) => return Ok(Written::Appended(appended)),
                Err(AppendError::Conflict) => {
                    conflicted = true;
                    tracing::debug!(aggregate, attempt, "write conflict; catching up");
                    self.catch_up().await?;
                    let jitter = rand::rng().random_range(0..=(1u64 << attempt.min(4)));
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                Err(AppendError::Failed(err)) => return Err(err),
            }
        }
        Err(ServiceError::conflict(format!(
            "{aggregate} is being changed concurrently; gave up after {MAX_ATTEMPTS} attempts, retry"
        )))
    }

    /// Read, decide, append, with the expected-revision check: the one way a
    /// service changes an aggregate.
    ///
    /// `decide` reads the aggregate from the local state and returns the
    /// [`Change`] to make (the event, its subject, and the revision it was
    /// decided on), `None` when nothing needs writing, or an error for the
    /// caller. The expected revision must come from the same read as the
    /// decision: a revision read separately may be newer than the state decided
    /// on, and the stream would then accept a decision made on stale state. On a
    /// conflict the state catches up and `decide` runs again. `msg_id`
    /// deduplicates a retried request (`None`: a fresh id for this call).
    pub async fn change<E, F>(
        &self,
        aggregate: &str,
        trace: &TraceContext,
        msg_id: Option<String>,
        mut decide: F,
    ) -> Result<Changed<E>, ServiceError>
    where
        E: Event,
        F: FnMut(&sled::Tree) -> Result<Option<Change<E>>, ServiceError>,
    {
        let msg_id = msg_id.unwrap_or_else(Self::new_msg_id);
        let mut decided = None;
        let written = self
            .write(aggregate, trace, |state| {
                let Some(change) = decide(state.tree())? else {
                    return Ok(None);
                };
                let append = change.to_append(msg_id.clone())?;
                decided = Some(change.event);
                Ok(Some(append))
            })
            .await?;
        Ok(match (written, decided) {
            (Written::Appended(appended), _) if appended.duplicate => Changed::Duplicate {
                revision: appended.revision,
            },
            (Written::Appended(appended), Some(event)) => Changed::Appended {
                event,
                revision: appended.revision,
            },
            _ => Changed::Unchanged,
        })
    }

    fn stripe(&self, aggregate: &str) -> &Mutex<()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        aggregate.hash(&mut hasher);
        &self.stripes[(hasher.finish() as usize) % STRIPES]
    }

    /// Appends one event, then waits (bounded) for the local state to apply it.
    pub async fn append(
        &self,
        append: &Append,
        trace: &TraceContext,
    ) -> Result<Appended, AppendError> {
        if !self
            .publishes
            .iter()
            .any(|pattern| shop_nats::subject::matches(pattern, &append.subject))
        {
            return Err(AppendError::Failed(ServiceError::internal(format!(
                "{} is not among the subjects this service declares it publishes",
                append.subject
            ))));
        }
        let mut span = if otel::enabled() {
            self.producer_span(append, trace)
        } else {
            None
        };
        let result = self.append_traced(append, trace, span.as_ref()).await;
        if let (Some(span), Err(err)) = (span.as_mut(), &result) {
            match err {
                AppendError::Conflict => span.set_failed("revision conflict"),
                AppendError::Failed(err) => span.set_error(err.code, &err.message),
            }
        }
        result
    }

    fn producer_span(&self, append: &Append, trace: &TraceContext) -> Option<otel::Span> {
        let mut attributes = otel::messaging(&append.subject, "publish");
        attributes.extend([
            KeyValue::new("shop.event.type", append.event_type),
            KeyValue::new("messaging.message.id", append.msg_id.clone()),
        ]);
        otel::start(
            SpanKind::Producer,
            format!("publish {}", self.shared.stream),
            Some(trace),
            attributes,
        )
    }

    async fn append_traced(
        &self,
        append: &Append,
        trace: &TraceContext,
        span: Option<&otel::Span>,
    ) -> Result<Appended, AppendError> {
        let carried = match span {
            Some(span) => span.context().clone(),
            None => trace.child(),
        };
        let mut publish = PublishMessage::build()
            .payload(append.payload.clone())
            .message_id(&append.msg_id)
            .header(EVENT_TYPE_HEADER, append.event_type)
            .header(
                shop_nats::trace::TRACEPARENT_HEADER,
                carried.header_value().as_str(),
            );
        if let Some(state) = carried.tracestate() {
            publish = publish.header(TRACESTATE_HEADER, state);
        }
        if let Some(expected) = append.expected_revision {
            publish = publish.expected_last_subject_sequence(expected);
        }
        let mut last_error = None;
        // A timed-out publish may still have been stored: resending the same
        // message id is safe, the stream deduplicates it.
        for _ in 0..3 {
            let ack = match self
                .js
                .send_publish(append.subject.clone(), publish.clone())
                .await
            {
                Ok(future) => match tokio::time::timeout(ACK_WAIT, future).await {
                    Ok(ack) => ack,
                    Err(_) => {
                        last_error = Some(format!("no ack within {} ms", ACK_WAIT.as_millis()));
                        continue;
                    }
                },
                Err(e) => Err(e),
            };
            match ack {
                Ok(ack) => {
                    let appended = Appended {
                        revision: ack.sequence,
                        duplicate: ack.duplicate,
                    };
                    if let Err(e) = self.state.wait_for(ack.sequence, APPLY_WAIT).await {
                        tracing::warn!(revision = ack.sequence, error = %e, "event stored but not yet applied locally");
                    }
                    return Ok(appended);
                }
                Err(e) => match e.kind() {
                    PublishErrorKind::WrongLastSequence => return Err(AppendError::Conflict),
                    PublishErrorKind::TimedOut => last_error = Some(e.to_string()),
                    PublishErrorKind::MaxPayloadExceeded => {
                        return Err(AppendError::Failed(ServiceError::bad_request(format!(
                            "event too large for the stream: {e}"
                        ))))
                    }
                    _ => {
                        return Err(AppendError::Failed(ServiceError::unavailable(format!(
                            "storing event in {}: {e}",
                            self.shared.stream
                        ))))
                    }
                },
            }
        }
        Err(AppendError::Failed(ServiceError::timeout(format!(
            "storing event in {} timed out: {}",
            self.shared.stream,
            last_error.unwrap_or_default()
        ))))
    }

    /// Waits until the local state has applied everything the stream holds now.
    pub async fn catch_up(&self) -> Result<(), ServiceError> {
        let last = self.shared.stream_last_sequence().await?;
        self.state.wait_for(last, APPLY_WAIT).await
    }
}

#[derive(Debug)]
pub enum AppendError {
    /// The aggregate changed since the revision the decision was based on.
    Conflict,
    Failed(ServiceError),
}
