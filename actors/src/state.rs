//! The state actor: tails the service's stream into its sled store.
//!
//! Each batch of events and the stream sequence it reaches (the checkpoint) are
//! written in one sled batch, so a restart resumes exactly after the last
//! applied event and a new instance rebuilds its state from the stream.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use async_nats::{
    jetstream::{self, consumer::DeliverPolicy},
    HeaderMap,
};
use futures::{FutureExt, StreamExt};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use shop_nats::ServiceError;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    metrics::Metrics,
    store::{encode_u64, Store, CHECKPOINT_KEY},
};

/// Events applied in one sled batch at most.
const MAX_BATCH: usize = 512;

/// One event read from the stream.
pub struct StoredEvent<'a> {
    /// Stream sequence: the revision this event produces.
    pub sequence: u64,
    pub subject: &'a str,
    pub headers: Option<&'a HeaderMap>,
    pub payload: &'a [u8],
}

/// How a service's events become local state. Events are self-contained (they
/// carry the resulting state), so `apply` only writes: it never reads the store,
/// which lets many events share one batch.
pub trait Projection: Send + Sync + 'static {
    fn apply(&self, event: &StoredEvent<'_>, batch: &mut sled::Batch) -> Result<(), String>;
}

/// Read access to the local state and how far it has caught up.
#[derive(Clone)]
pub struct StateHandle {
    store: Store,
    applied: watch::Receiver<u64>,
    lag: Arc<AtomicU64>,
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
            stop: CancellationToken::new(),
        }))
    }

    pub fn handle(&self) -> StateHandle {
        StateHandle {
            store: self.store.clone(),
            applied: self.applied_tx.subscribe(),
            lag: self.lag.clone(),
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

    /// The stream's last sequence, from the server.
    pub async fn stream_last_sequence(&self) -> Result<u64, ServiceError> {
        let mut stream = self.js.get_stream(&self.stream).await.map_err(|e| {
            ServiceError::unavailable(format!("reading stream {}: {e}", self.stream))
        })?;
        let info = stream.info().await.map_err(|e| {
            ServiceError::unavailable(format!("reading stream {}: {e}", self.stream))
        })?;
        Ok(info.state.last_sequence)
    }
}

/// Opens an ordered consumer on the stream from just after the local checkpoint.
async fn open_consumer(
    shared: &StateShared,
) -> Result<jetstream::consumer::pull::Ordered, ActorProcessingErr> {
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
        .get_stream(&shared.stream)
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
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("creating ordered consumer on {}: {e}", shared.stream))?;
    let messages = consumer
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
    Ok(messages)
}

#[derive(Clone, Copy)]
pub struct StateActor;

pub enum StateMsg {
    Run,
}

pub struct StateActorState {
    shared: Arc<StateShared>,
    messages: Option<jetstream::consumer::pull::Ordered>,
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
        let messages = open_consumer(&shared).await?;
        myself.cast(StateMsg::Run)?;
        Ok(StateActorState {
            shared,
            messages: Some(messages),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        StateMsg::Run: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(mut messages) = state.messages.take() else {
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
                    // we were away: start a new one from the checkpoint now rather
                    // than after two missed heartbeats.
                    if matches!(event, Ok(shop_nats::ConnectionEvent::Connected)) {
                        messages = open_consumer(&shared).await?;
                    }
                    continue;
                }
                next = messages.next() => next,
            };
            let mut batch_messages = Vec::with_capacity(16);
            match first {
                Some(Ok(message)) => batch_messages.push(message),
                Some(Err(e)) => {
                    tracing::warn!(stream = %shared.stream, error = %e, "state consumer error; it resumes by itself");
                    continue;
                }
                None => return Err("state consumer ended unexpectedly".into()),
            }
            while batch_messages.len() < MAX_BATCH {
                match messages.next().now_or_never() {
                    Some(Some(Ok(message))) => batch_messages.push(message),
                    _ => break,
                }
            }
            apply_batch(&shared, &batch_messages)?;
        }
        myself.stop(Some("stopped".to_string()));
        Ok(())
    }
}

fn apply_batch(
    shared: &StateShared,
    messages: &[jetstream::Message],
) -> Result<(), ActorProcessingErr> {
    let mut batch = sled::Batch::default();
    let mut last_sequence = 0;
    let mut pending = 0;
    for message in messages {
        let info = message
            .info()
            .map_err(|e| format!("reading stream message metadata: {e}"))?;
        let event = StoredEvent {
            sequence: info.stream_sequence,
            subject: message.subject.as_str(),
            headers: message.headers.as_ref(),
            payload: &message.payload,
        };
        shared.projection.apply(&event, &mut batch).map_err(|e| {
            format!(
                "applying event {} ({}) from {}: {e}",
                info.stream_sequence, message.subject, shared.stream
            )
        })?;
        last_sequence = info.stream_sequence;
        pending = info.pending;
    }
    batch.insert(CHECKPOINT_KEY, &encode_u64(last_sequence));
    shared
        .store
        .tree()
        .apply_batch(batch)
        .map_err(|e| format!("writing events up to {last_sequence} to sled: {e}"))?;
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
        .inc_by(messages.len() as u64);
    shared.flush_needed.notify_one();
    Ok(())
}
