//! Idempotent JetStream set-up: any number of instances may start at the same
//! moment and all of them come up with the stream, consumer or bucket the code
//! describes (created if absent, updated to this configuration if present).

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{FromConsumer, IntoConsumerConfig},
    kv, stream, Context,
};

/// Why set-up failed, with the name of what was being set up.
#[derive(Debug, thiserror::Error)]
#[error("setting up {what} `{name}`: {message}")]
pub struct SetupError {
    pub what: &'static str,
    pub name: String,
    pub message: String,
}

const ATTEMPTS: u32 = 5;

async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt + 1))).await;
}

/// The replicas to ask for: `wanted`, or more when the stream `name` already
/// has more. A process started without `JS_REPLICAS` (a tool, a forgotten
/// setting) must not scale a cluster's streams down; scaling up still works.
async fn replicas_at_least_existing(js: &Context, name: &str, wanted: usize) -> usize {
    match js.get_stream(name).await {
        Ok(mut stream) => match stream.info().await {
            Ok(info) if info.config.num_replicas > wanted.max(1) => {
                tracing::info!(
                    stream = name,
                    replicas = info.config.num_replicas,
                    asked = wanted,
                    "keeping the stream's replicas (never scaled down here)"
                );
                info.config.num_replicas
            }
            _ => wanted,
        },
        Err(_) => wanted,
    }
}

/// Creates the stream, or updates it to `config` when it exists (never to
/// fewer replicas than it has).
pub async fn ensure_stream(
    js: &Context,
    mut config: stream::Config,
) -> Result<stream::Stream, SetupError> {
    let name = config.name.clone();
    config.num_replicas = replicas_at_least_existing(js, &name, config.num_replicas).await;
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        match js.create_or_update_stream(config.clone()).await {
            Ok(_) => match js.get_stream(&name).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = e.to_string(),
            },
            // Two instances racing to create: one wins, the other sees "already in use";
            // the next attempt updates instead.
            Err(e) => last = e.to_string(),
        }
        backoff(attempt).await;
    }
    Err(SetupError {
        what: "stream",
        name,
        message: last,
    })
}

/// Creates or updates a durable consumer on `stream`.
pub async fn ensure_consumer<C>(
    stream: &stream::Stream,
    config: C,
) -> Result<jetstream::consumer::Consumer<C>, SetupError>
where
    C: IntoConsumerConfig + FromConsumer + Clone,
{
    let consumer_config = config.clone().into_consumer_config();
    let name = consumer_config
        .durable_name
        .clone()
        .or(consumer_config.name.clone())
        .unwrap_or_default();
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        match stream.create_consumer(config.clone()).await {
            Ok(consumer) => return Ok(consumer),
            Err(e) => last = e.to_string(),
        }
        backoff(attempt).await;
    }
    Err(SetupError {
        what: "consumer",
        name,
        message: last,
    })
}

/// The storage the stream `name` has, when it exists.
async fn existing_storage(js: &Context, name: &str) -> Option<stream::StorageType> {
    let mut stream = js.get_stream(name).await.ok()?;
    stream.info().await.ok().map(|info| info.config.storage)
}

/// Creates the key-value bucket, or updates it to `config` when it exists
/// (never to fewer replicas than it has). A bucket keeps the storage it was
/// created with: JetStream cannot move a stream between file and memory, so
/// a different `storage` is logged and the bucket's own is kept.
pub async fn ensure_kv(js: &Context, mut config: kv::Config) -> Result<kv::Store, SetupError> {
    let name = config.bucket.clone();
    let stream = format!("KV_{name}");
    config.num_replicas = replicas_at_least_existing(js, &stream, config.num_replicas).await;
    if let Some(storage) = existing_storage(js, &stream).await {
        if storage != config.storage {
            tracing::warn!(
                bucket = %name,
                existing = ?storage,
                asked = ?config.storage,
                "keeping the bucket's storage: JetStream cannot change it in place (delete the bucket to switch)"
            );
            config.storage = storage;
        }
    }
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        match js.create_or_update_key_value(config.clone()).await {
            Ok(store) => return Ok(store),
            Err(e) => last = e.to_string(),
        }
        backoff(attempt).await;
    }
    Err(SetupError {
        what: "key-value bucket",
        name,
        message: last,
    })
}
