//! The state actor: tails the service's stream into its sled store.
//!
//! Each batch of events and the stream sequence it reaches (the checkpoint) are
//! written in one sled batch, so a restart resumes exactly after the last
//! applied event and a new instance rebuilds its state from the stream.
//!
//! An event the projection can never apply (undecodable, naming another
//! aggregate than its subject, making the projection panic) does not stop the
//! state: it is parked in the `PARKED` stream with the reason
//! ([`crate::parking`]), counted in `shop_state_events_parked_total{reason}`,
//! logged, and skipped; the checkpoint moves past it, so writes waiting for their
//! own later event are not held up. A failure that may pass (writing to sled) is
//! retried a few times; then the actor fails and its supervisor restarts it.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use async_nats::{
    jetstream::{
        self,
        consumer::{pull, AckPolicy, DeliverPolicy},
        stream::RawMessageErrorKind,
    },
    HeaderMap,
};
use futures::{FutureExt, StreamExt};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::de::DeserializeOwned;
use shop_nats::ServiceError;
use tokio::sync::{watch, OnceCell};
use tokio_util::sync::CancellationToken;

use crate::{
    metrics::Metrics,
    parking::{self, SetAside},
    store::{encode_u64, Store, CHECKPOINT_KEY},
};

/// Events applied in one sled batch at most.
const MAX_BATCH: usize = 512;
/// Tries of a batch that fails in a way that may pass, before the actor fails.
const TRANSIENT_TRIES: u32 = 3;
/// Reserved keys of the events this store parked: the prefix, then the stream
/// sequence (8 bytes, big-endian); the value is the reason's metric label.
const PARKED_KEY_PREFIX: &[u8] = b"\0parked/";

fn parked_key(sequence: u64) -> Vec<u8> {
    [PARKED_KEY_PREFIX, &encode_u64(sequence)].concat()
}

/// One event read from the stream.
pub struct StoredEvent<'a> {
    /// Stream sequence: the revision this event produces.
    pub sequence: u64,
    pub subject: &'a str,
    pub headers: Option<&'a HeaderMap>,
    pub payload: &'a [u8],
}

impl StoredEvent<'_> {
    /// The JSON payload as `T`. A payload that is not one is undecodable; the
    /// reason says where decoding stopped, never what the payload holds.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ApplyError> {
        serde_json::from_slice(self.payload).map_err(|e| {
            let kind = match e.classify() {
                serde_json::error::Category::Io => "i/o",
                serde_json::error::Category::Syntax => "syntax",
                serde_json::error::Category::Data => "data",
                serde_json::error::Category::Eof => "truncated",
            };
            let what = std::any::type_name::<T>();
            let what = what.rsplit("::").next().unwrap_or(what);
            ApplyError::Undecodable(format!(
                "not a {what}: {kind} error at line {} column {}",
                e.line(),
                e.column()
            ))
        })
    }

    /// Refuses an event whose body names aggregate `id` while its subject's last
    /// token (the aggregate the stream keeps it under) names another.
    pub fn check_aggregate(&self, id: &str) -> Result<(), ApplyError> {
        let subject_id = self.subject.rsplit('.').next().unwrap_or(self.subject);
        if subject_id == id {
            Ok(())
        } else {
            Err(ApplyError::WrongAggregate(format!(
                "the event names {id} but its subject {} names {subject_id}",
                self.subject
            )))
        }
    }
}

/// Why an event could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// The payload is not an event of this stream: parked at once.
    Undecodable(String),
    /// The body names another aggregate than the subject: parked at once.
    WrongAggregate(String),
    /// Can never be applied for another reason: parked at once.
    Invalid(String),
    /// May pass later (e.g. a store error): retried, then the state actor fails.
    Transient(String),
}

impl ApplyError {
    /// The `reason` label of `shop_state_events_parked_total`.
    fn label(&self) -> &'static str {
        match self {
            ApplyError::Undecodable(_) => "undecodable",
            ApplyError::WrongAggregate(_) => "wrong_aggregate",
            ApplyError::Invalid(_) => "invalid",
            ApplyError::Transient(_) => "transient",
        }
    }
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyError::Undecodable(reason) => write!(f, "undecodable: {reason}"),
            ApplyError::WrongAggregate(reason) => write!(f, "wrong aggregate: {reason}"),
            ApplyError::Invalid(reason) | ApplyError::Transient(reason) => f.write_str(reason),
        }
    }
}

/// How a service's events become local state. Events are self-contained (they
/// carry the resulting state), so `apply` only writes: it never reads the store,
/// which lets many events share one batch.
///
/// `apply` decodes with [`StoredEvent::decode`] and checks the aggregate with
/// [`StoredEvent::check_aggregate`] before writing anything.
pub trait Projection: Send + Sync + 'static {
    fn apply(&self, event: &StoredEvent<'_>, batch: &mut sled::Batch) -> Result<(), ApplyError>;
}

/// Read access to the local state and how far it has caught up.
#[derive(Clone)]
pub struct StateHandle {
    store: Store,
    applied: watch::Receiver<u64>,
    lag: Arc<AtomicU64>,
    /// The stream it tails, to tell a revision not applied yet from one that
    /// does not exist.
    js: jetstream::Context,
    stream: Arc<str>,
}

impl StateHandle {
    pub fn tree(&self) -> &sled::Tree {
        self.store.tree()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Last stream sequence applied locally.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Stream messages known to be waiting to be applied.
    pub fn lag(&self) -> u64 {
        self.lag.load(Ordering::Relaxed)
    }

    /// For a read that asks for `min_revision`: waits (at most `timeout`) until
    /// the local state has applied it, unless the stream has no such revision
    /// yet, which is the caller's mistake (400) rather than a reason to wait.
    pub async fn wait_for_read(
        &self,
        min_revision: u64,
        timeout: Duration,
    ) -> Result<(), ServiceError> {
        if self.applied() >= min_revision {
            return Ok(());
        }
        let last = stream_last_sequence(&self.js, &self.stream).await?;
        if min_revision > last {
            return Err(ServiceError::bad_request(format!(
                "min_revision {min_revision} is beyond the stream's last revision {last}"
            )));
        }
        self.wait_for(min_revision, timeout).await
    }

    /// Waits until the local state has applied `revision`, for at most `timeout`.
    pub async fn wait_for(&self, revision: u64, timeout: Duration) -> Result<(), ServiceError> {
        if self.applied() >= revision {
            return Ok(());
        }
        let mut rx = self.applied.clone();
        let outcome = tokio::time::timeout(timeout, async {
            rx.wait_for(|applied| *applied >= revision)
                .await
                .map(|_| ())
        })
        .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ServiceError::unavailable("local state is stopping")),
            Err(_) => Err(ServiceError::unavailable(format!(
                "this instance's state is at revision {}, behind the requested {revision}; retry shortly",
                self.applied()
            ))),
        }
    }
}

/// Shared between the state actor (every incarnation of it) and its readers.
pub struct StateShared {
    pub js: jetstream::Context,
    pub stream: String,
    pub store: Store,
    pub projection: Arc<dyn Projection>,
    pub metrics: Metrics,
    connection: shop_nats::Connection,
    applied_tx: watch::Sender<u64>,
    flushed: AtomicU64,
    flush_needed: tokio::sync::Notify,
    lag: Arc<AtomicU64>,
    /// Set once the `PARKED` stream is known to exist.
    parked_stream: OnceCell<()>,
    pub stop: CancellationToken,
}

impl StateShared {
    pub fn new(
        js: jetstream::Context,
        stream: String,
        store: Store,
        projection: Arc<dyn Projection>,
        metrics: Metrics,
        connection: shop_nats::Connection,
    ) -> anyhow::Result<Arc<Self>> {
        let checkpoint = store.checkpoint()?;
        let (applied_tx, _) = watch::channel(checkpoint);
        metrics.state_applied_revision.set(checkpoint as i64);
        Ok(Arc::new(Self {
            js,
            stream,
            store,
            projection,
            metrics,
            connection,
            applied_tx,
            flushed: AtomicU64::new(checkpoint),
            flush_needed: tokio::sync::Notify::new(),
            lag: Arc::default(),
            parked_stream: OnceCell::new(),
            stop: CancellationToken::new(),
        }))
    }

    pub fn handle(&self) -> StateHandle {
        StateHandle {
            store: self.store.clone(),
            applied: self.applied_tx.subscribe(),
            lag: self.lag.clone(),
            js: self.js.clone(),
            stream: self.stream.as_str().into(),
        }
    }

    /// Last applied revision known to be on disk.
    pub fn flushed_revision(&self) -> u64 {
        self.flushed.load(Ordering::Relaxed)
    }

    /// Flushes sled soon after each applied batch (at most every 100 ms), so a
    /// crash replays at most a short tail of the stream. Runs until `stop`.
    pub async fn flush_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.flush_needed.notified() => {}
                _ = self.stop.cancelled() => return,
            }
            let revision = *self.applied_tx.borrow();
            match self.store.flush().await {
                Ok(()) => {
                    self.flushed.store(revision, Ordering::Relaxed);
                    tracing::debug!(revision, "state flushed");
                }
                Err(e) => tracing::warn!(error = %e, "flushing local state"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether this store parked (skipped) the event at `sequence`.
    pub fn parked(&self, sequence: u64) -> Result<bool, ServiceError> {
        self.store
            .tree()
            .contains_key(parked_key(sequence))
            .map_err(|e| ServiceError::internal(format!("reading local store: {e}")))
    }

    /// After an append to `subject` expecting revision `expected` conflicted:
    /// when every event stored on that subject after it is one this instance
    /// parked (they changed nothing), the revision to expect instead (the last
    /// of them); else `expected`. Without this, poison on an aggregate's
    /// subject would make every later write to that aggregate conflict. The
    /// local state must have caught up first.
    pub async fn expect_past_parked(
        &self,
        subject: &str,
        expected: Option<u64>,
    ) -> Result<Option<u64>, ServiceError> {
        let Some(expected) = expected else {
            return Ok(None);
        };
        let parked_any = self
            .store
            .tree()
            .scan_prefix(PARKED_KEY_PREFIX)
            .next()
            .is_some();
        if !parked_any {
            return Ok(Some(expected));
        }
        let unavailable = |e: &dyn std::fmt::Display| {
            ServiceError::unavailable(format!("reading stream {}: {e}", self.stream))
        };
        let stream = self
            .js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| unavailable(&e))?;
        let mut past = expected;
        loop {
            match stream
                .get_first_raw_message_by_subject(subject, past + 1)
                .await
            {
                Ok(message) if self.parked(message.sequence)? => past = message.sequence,
                Ok(_) => return Ok(Some(expected)),
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(unavailable(&e)),
            }
        }
        if past != expected {
            tracing::info!(
                subject,
                expected,
                past,
                "expecting past events parked on the subject"
            );
        }
        Ok(Some(past))
    }

    /// The stream's last sequence, from the server.
    pub async fn stream_last_sequence(&self) -> Result<u64, ServiceError> {
        stream_last_sequence(&self.js, &self.stream).await
    }
}

/// The last sequence `stream` holds, from the server.
async fn stream_last_sequence(js: &jetstream::Context, stream: &str) -> Result<u64, ServiceError> {
    let unavailable = |e: &dyn std::fmt::Display| {
        ServiceError::unavailable(format!("reading stream {stream}: {e}"))
    };
    let mut handle = js.get_stream(stream).await.map_err(|e| unavailable(&e))?;
    let info = handle.info().await.map_err(|e| unavailable(&e))?;
    Ok(info.state.last_sequence)
}

/// How long one pull request of the state consumer waits at the server, and
/// the idle heartbeat the server sends meanwhile. See [`Tail`].
const PULL_EXPIRES: Duration = Duration::from_secs(10);
const PULL_HEARTBEAT: Duration = Duration::from_secs(1);
/// Events asked for in one pull request.
const PULL_BATCH: usize = 500;
/// An abandoned consumer (its instance died, or re-opened a new one) is
/// removed by the server after this long without pull requests.
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(60);
/// Longest wait between two attempts to re-open the consumer.
const REOPEN_MAX_DELAY: Duration = Duration::from_secs(2);
/// How long one attempt to re-open may take. While the cluster elects a new
/// leader its API does not answer; an attempt that waited for the client's
/// 5 s request timeout (twice: two requests) would start the tail seconds
/// after the leader is back.
const REOPEN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The state's view of its stream: an ephemeral pull consumer (one replica,
/// in memory, no acks) from just after the local checkpoint, read in order.
///
/// This is an ordered consumer run by the runtime rather than async-nats's
/// own: that one notices a lost consumer only after two missed 15 s heartbeats,
/// and in practice after its pull request expires (30 s + 5 s), which in a
/// cluster is how long a service's writes would wait after the node holding
/// the consumer died. Here any sign that the consumer is gone (two missed 1 s
/// heartbeats, a gap in the delivery sequence, a failed pull, the connection
/// coming back) re-opens it from the checkpoint at once, with backoff while
/// the cluster elects new leaders; the actor itself does not fail for it.
struct Tail {
    messages: pull::Stream,
    /// The consumer sequence of the last message read (1, 2, 3 ... when none is lost).
    delivered: u64,
}

impl Tail {
    /// Whether `message` is the next one; a gap means one was lost.
    fn in_order(&mut self, message: &jetstream::Message) -> bool {
        match message.info() {
            Ok(info) if info.consumer_sequence == self.delivered + 1 => {
                self.delivered = info.consumer_sequence;
                true
            }
            Ok(info) => {
                tracing::warn!(
                    expected = self.delivered + 1,
                    got = info.consumer_sequence,
                    "state consumer skipped a delivery"
                );
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "state consumer message without metadata");
                false
            }
        }
    }
}

/// Opens the state's consumer on the stream from just after the local checkpoint.
async fn open_consumer(shared: &StateShared) -> Result<Tail, ActorProcessingErr> {
    let mut checkpoint = shared.store.checkpoint()?;
    let last = shared.stream_last_sequence().await?;
    if checkpoint > last {
        tracing::warn!(
            checkpoint,
            stream_last_sequence = last,
            "stream is behind the local checkpoint (stream was reset); rebuilding local state"
        );
        shared.store.clear()?;
        checkpoint = 0;
        shared.applied_tx.send_replace(0);
    }
    let stream = shared
        .js
        .get_stream_no_info(&shared.stream)
        .await
        .map_err(|e| format!("opening stream {}: {e}", shared.stream))?;
    let deliver_policy = if checkpoint == 0 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: checkpoint + 1,
        }
    };
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy,
            ack_policy: AckPolicy::None,
            memory_storage: true,
            num_replicas: 1,
            inactive_threshold: INACTIVE_THRESHOLD,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("creating the state consumer on {}: {e}", shared.stream))?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .expires(PULL_EXPIRES)
        .heartbeat(PULL_HEARTBEAT)
        .messages()
        .await
        .map_err(|e| format!("consuming {}: {e}", shared.stream))?;
    tracing::info!(
        stream = %shared.stream,
        checkpoint,
        stream_last_sequence = last,
        to_replay = last.saturating_sub(checkpoint),
        "state resuming from checkpoint"
    );
    Ok(Tail {
        messages,
        delivered: 0,
    })
}

/// Opens the consumer again, retrying with backoff until it works (the
/// cluster may still be electing leaders); `None` when stopping.
async fn reopen(shared: &StateShared, why: &str) -> Option<Tail> {
    shared
        .metrics
        .consumer_reopened
        .with_label_values(&["state"])
        .inc();
    tracing::info!(stream = %shared.stream, why, "re-opening the state consumer");
    let mut attempt = 0u32;
    loop {
        let attempt_result =
            match tokio::time::timeout(REOPEN_ATTEMPT_TIMEOUT, open_consumer(shared)).await {
                Ok(result) => result,
                Err(_) => Err(format!(
                    "no answer within {} ms (electing a leader?)",
                    REOPEN_ATTEMPT_TIMEOUT.as_millis()
                )
                .into()),
            };
        match attempt_result {
            Ok(tail) => return Some(tail),
            Err(e) => {
                attempt += 1;
                let delay = Duration::from_millis(100u64 << attempt.min(5)).min(REOPEN_MAX_DELAY);
                tracing::warn!(stream = %shared.stream, attempt, retry_in_ms = delay.as_millis() as u64, error = %e, "cannot re-open the state consumer; retrying");
                tokio::select! {
                    _ = shared.stop.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Whether a pull error means the consumer's pull requests are lost.
fn lost(kind: pull::MessagesErrorKind) -> bool {
    !matches!(kind, pull::MessagesErrorKind::Other)
}

#[derive(Clone, Copy)]
pub struct StateActor;

pub enum StateMsg {
    Run,
}

pub struct StateActorState {
    shared: Arc<StateShared>,
    tail: Option<Tail>,
}

impl Actor for StateActor {
    type Msg = StateMsg;
    type State = StateActorState;
    type Arguments = Arc<StateShared>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Arc<StateShared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let tail = open_consumer(&shared).await?;
        myself.cast(StateMsg::Run)?;
        Ok(StateActorState {
            shared,
            tail: Some(tail),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        StateMsg::Run: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(mut tail) = state.tail.take() else {
            return Ok(());
        };
        let shared = state.shared.clone();
        let mut connection_events = shared.connection.events();
        loop {
            let first = tokio::select! {
                biased;
                _ = shared.stop.cancelled() => break,
                event = connection_events.recv() => {
                    // The server may have forgotten the ephemeral consumer while
                    // we were away: start a new one from the checkpoint now.
                    if matches!(event, Ok(shop_nats::ConnectionEvent::Connected)) {
                        match reopen(&shared, "reconnected").await {
                            Some(reopened) => tail = reopened,
                            None => break,
                        }
                    }
                    continue;
                }
                next = tail.messages.next() => next,
            };
            let mut batch_messages = Vec::with_capacity(16);
            let mut why_reopen = None;
            match first {
                Some(Ok(message)) if tail.in_order(&message) => batch_messages.push(message),
                Some(Ok(_)) => why_reopen = Some("a delivery was skipped".to_string()),
                Some(Err(e)) if lost(e.kind()) => why_reopen = Some(e.to_string()),
                Some(Err(e)) => {
                    tracing::warn!(stream = %shared.stream, error = %e, "state consumer error; it goes on");
                    continue;
                }
                None => why_reopen = Some("the consumer's stream ended".to_string()),
            }
            while why_reopen.is_none() && batch_messages.len() < MAX_BATCH {
                match tail.messages.next().now_or_never() {
                    Some(Some(Ok(message))) if tail.in_order(&message) => {
                        batch_messages.push(message)
                    }
                    Some(Some(Ok(_))) => why_reopen = Some("a delivery was skipped".to_string()),
                    Some(Some(Err(e))) if lost(e.kind()) => why_reopen = Some(e.to_string()),
                    Some(None) => why_reopen = Some("the consumer's stream ended".to_string()),
                    _ => break,
                }
            }
            apply_batch(&shared, &batch_messages).await?;
            if let Some(why) = why_reopen {
                match reopen(&shared, &why).await {
                    Some(reopened) => tail = reopened,
                    None => break,
                }
            }
        }
        myself.stop(Some("stopped".to_string()));
        Ok(())
    }
}

async fn apply_batch(
    shared: &StateShared,
    messages: &[jetstream::Message],
) -> Result<(), ActorProcessingErr> {
    let mut events = Vec::with_capacity(messages.len());
    let mut pending = 0;
    for message in messages {
        let info = message
            .info()
            .map_err(|e| format!("reading stream message metadata: {e}"))?;
        pending = info.pending;
        events.push(StoredEvent {
            sequence: info.stream_sequence,
            subject: message.subject.as_str(),
            headers: message.headers.as_ref(),
            payload: &message.payload,
        });
    }
    let Some(last_sequence) = events.last().map(|e| e.sequence) else {
        return Ok(());
    };
    let mut tries = 0;
    let mut parked = false;
    let poison = loop {
        tries += 1;
        let failure = match project(shared.projection.as_ref(), &events) {
            Ok((mut batch, poison)) => {
                for (event, why) in &poison {
                    if !parked {
                        park(shared, event, why).await;
                    }
                    batch.insert(parked_key(event.sequence), why.label());
                }
                parked = true;
                batch.insert(CHECKPOINT_KEY, &encode_u64(last_sequence));
                match shared.store.tree().apply_batch(batch) {
                    Ok(()) => break poison,
                    Err(e) => format!("writing events up to {last_sequence} to sled: {e}"),
                }
            }
            Err(reason) => reason,
        };
        if tries >= TRANSIENT_TRIES {
            return Err(format!("{failure} (tried {tries} times)").into());
        }
        tracing::warn!(stream = %shared.stream, last_sequence, attempt = tries, error = %failure, "applying events failed; retrying");
        tokio::time::sleep(Duration::from_millis(100 << tries)).await;
    };
    shared.applied_tx.send_replace(last_sequence);
    shared.lag.store(pending, Ordering::Relaxed);
    shared
        .metrics
        .state_applied_revision
        .set(last_sequence as i64);
    shared.metrics.state_lag.set(pending as i64);
    shared
        .metrics
        .state_events_applied
        .inc_by((events.len() - poison.len()) as u64);
    shared.flush_needed.notify_one();
    Ok(())
}

/// Events left out of a batch, with why.
type Poison<'e> = Vec<(&'e StoredEvent<'e>, ApplyError)>;

/// Applies `events` to a new batch, leaving out those that can never be
/// applied; returns the batch and the left-out events. `Err` is a failure that
/// may pass on a retry.
fn project<'e>(
    projection: &dyn Projection,
    events: &'e [StoredEvent<'e>],
) -> Result<(sled::Batch, Poison<'e>), String> {
    let mut batch = sled::Batch::default();
    let mut poison = Vec::new();
    for event in events {
        match apply_one(projection, event, &mut batch) {
            Ok(()) => {}
            Err(ApplyError::Transient(reason)) => {
                return Err(format!(
                    "applying event {} ({}): {reason}",
                    event.sequence, event.subject
                ))
            }
            Err(why) => poison.push((event, why)),
        }
    }
    if poison.is_empty() {
        return Ok((batch, poison));
    }
    // A refused event may have written part of itself: build the batch again
    // from the others alone.
    let mut clean = sled::Batch::default();
    for event in events {
        if poison.iter().all(|(p, _)| p.sequence != event.sequence) {
            apply_one(projection, event, &mut clean).map_err(|e| {
                format!(
                    "applying event {} ({}) again: {e}",
                    event.sequence, event.subject
                )
            })?;
        }
    }
    Ok((clean, poison))
}

/// The projection's `apply`, with a panic turned into a refusal of the event.
fn apply_one(
    projection: &dyn Projection,
    event: &StoredEvent<'_>,
    batch: &mut sled::Batch,
) -> Result<(), ApplyError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        projection.apply(event, batch)
    }))
    .unwrap_or_else(|panic| {
        Err(ApplyError::Invalid(format!(
            "the projection panicked: {}",
            crate::responder::panic_message(&*panic)
        )))
    })
}

/// Parks an event the projection refused, counts and logs it. Storing the
/// parked copy is best effort: the event stays in its own stream at its
/// sequence, and the log line says where, so it is never lost.
async fn park(shared: &StateShared, event: &StoredEvent<'_>, why: &ApplyError) {
    let reason = why.to_string();
    shared
        .metrics
        .state_events_parked
        .with_label_values(&[why.label()])
        .inc();
    let subject = parking::parked_subject(shared.store.service(), &shared.stream, event.sequence);
    let set_aside = SetAside {
        subject: event.subject,
        stream: &shared.stream,
        sequence: event.sequence,
        headers: event.headers,
        reason: &reason,
    };
    let stored = match shared
        .parked_stream
        .get_or_try_init(|| parking::ensure_parked_stream(&shared.js, &shared.stream))
        .await
    {
        Ok(()) => {
            let payload = bytes::Bytes::copy_from_slice(event.payload);
            parking::park(&shared.js, subject.clone(), &set_aside, payload).await
        }
        Err(e) => Err(e),
    };
    match stored {
        Ok(()) => tracing::error!(
            stream = %shared.stream,
            sequence = event.sequence,
            subject = event.subject,
            reason,
            parked_as = subject,
            "event cannot be applied: parked and skipped"
        ),
        Err(e) => tracing::error!(
            stream = %shared.stream,
            sequence = event.sequence,
            subject = event.subject,
            reason,
            error = %e,
            "event cannot be applied: skipped, and parking it failed (it stays in its stream)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stores `{"id": ..., "n": ...}` under its id; panics on the id "boom".
    struct Items;

    #[derive(serde::Deserialize)]
    struct Item {
        id: String,
        n: u64,
    }

    impl Projection for Items {
        fn apply(
            &self,
            event: &StoredEvent<'_>,
            batch: &mut sled::Batch,
        ) -> Result<(), ApplyError> {
            let item: Item = event.decode()?;
            // A write before the checks: a refused event must leave no trace.
            batch.insert(format!("seen/{}", event.sequence).as_bytes(), b"1");
            event.check_aggregate(&item.id)?;
            assert_ne!(item.id, "boom", "the projection cannot handle boom");
            batch.insert(item.id.as_bytes(), &item.n.to_be_bytes());
            Ok(())
        }
    }

    fn event<'a>(sequence: u64, subject: &'a str, payload: &'a [u8]) -> StoredEvent<'a> {
        StoredEvent {
            sequence,
            subject,
            headers: None,
            payload,
        }
    }

    #[test]
    fn poison_is_left_out_of_the_batch_and_the_rest_applied() {
        let events = [
            event(1, "events.item.a", br#"{"id":"a","n":1}"#),
            event(2, "events.item.junk", b"\x00\xffnot json"),
            event(3, "events.item.b", br#"{"id":"a","n":99}"#),
            event(4, "events.item.boom", br#"{"id":"boom","n":4}"#),
            event(5, "events.item.c", br#"{"id":"c","n":5}"#),
        ];
        let (batch, poison) = project(&Items, &events).unwrap();
        let labels: Vec<_> = poison
            .iter()
            .map(|(e, why)| (e.sequence, why.label()))
            .collect();
        assert_eq!(
            labels,
            [(2, "undecodable"), (3, "wrong_aggregate"), (4, "invalid")]
        );
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::open(dir.path()).unwrap().open_tree("items").unwrap();
        tree.apply_batch(batch).unwrap();
        let n = |key: &str| tree.get(key).unwrap().map(|v| v.to_vec());
        assert_eq!(
            n("a"),
            Some(1u64.to_be_bytes().to_vec()),
            "not overwritten by the forged event"
        );
        assert_eq!(n("c"), Some(5u64.to_be_bytes().to_vec()));
        assert_eq!(n("seen/1"), Some(b"1".to_vec()));
        for refused in ["seen/3", "seen/4", "boom"] {
            assert_eq!(n(refused), None, "{refused}: a refused event wrote nothing");
        }
    }

    #[test]
    fn reasons_never_quote_the_payload() {
        let payload = br#"{"id":"a","n":"hunter2-secret"}"#;
        let why = event(1, "events.item.a", payload)
            .decode::<Item>()
            .map(|_| ())
            .unwrap_err();
        let text = why.to_string();
        assert!(
            text.starts_with("undecodable: not a Item: data error at line 1"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        let forged = event(2, "events.item.b", br#"{"id":"a","n":1}"#);
        assert_eq!(
            forged.check_aggregate("a").unwrap_err().to_string(),
            "wrong aggregate: the event names a but its subject events.item.b names b"
        );
    }

    struct Failing;
    impl Projection for Failing {
        fn apply(&self, _: &StoredEvent<'_>, _: &mut sled::Batch) -> Result<(), ApplyError> {
            Err(ApplyError::Transient("disk on fire".into()))
        }
    }

    #[test]
    fn a_transient_failure_is_not_poison() {
        let events = [event(7, "events.item.a", br#"{"id":"a","n":1}"#)];
        let failure = project(&Failing, &events).map(|_| ()).unwrap_err();
        assert_eq!(failure, "applying event 7 (events.item.a): disk on fire");
    }
}
