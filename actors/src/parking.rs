//! Where messages go that cannot be handled, so that nothing is lost and nothing
//! stops: the `PARKED` stream keeps events a projection could not apply (see
//! [`crate::state`]), the `DEADLETTER` stream events a durable consumer gave up
//! on (see [`crate::consumer`]). Both keep the original payload and headers,
//! plus headers saying where it came from and why it was set aside, so an
//! operator can list them and publish them again.

use std::time::Duration;

use async_nats::{
    jetstream::{self, context::PublishErrorKind, message::PublishMessage, stream},
    HeaderMap,
};
use bytes::Bytes;
use shop_nats::jetstream::ensure_stream;

/// Stream of parked events, on `parked.<service>.<stream>.<sequence>`.
pub const PARKED_STREAM: &str = "PARKED";
/// Why the event was parked (one line).
pub const PARKED_REASON_HEADER: &str = "Shop-Parked-Reason";
/// Subject, stream and stream sequence of the original message.
pub const ORIGINAL_SUBJECT_HEADER: &str = "Shop-Original-Subject";
pub const ORIGINAL_STREAM_HEADER: &str = "Shop-Original-Stream";
pub const ORIGINAL_SEQUENCE_HEADER: &str = "Shop-Original-Sequence";

/// Attempts to store a parked event before giving up on storing it.
const PARK_ATTEMPTS: u32 = 3;

/// Where the event at `sequence` of `stream`, owned by `service`, is parked.
/// One subject per event: the stream keeps one copy however many instances (or
/// rebuilds of one) park it.
pub fn parked_subject(service: &str, stream: &str, sequence: u64) -> String {
    format!("parked.{service}.{stream}.{sequence}")
}

/// A message that was set aside: where it came from and why.
pub struct SetAside<'a> {
    pub subject: &'a str,
    pub stream: &'a str,
    pub sequence: u64,
    pub headers: Option<&'a HeaderMap>,
    pub reason: &'a str,
}

impl SetAside<'_> {
    /// The original's headers (but not the server's `Nats-*` ones, which would
    /// deduplicate or constrain the copy), the origin, and the reason under
    /// `reason_header`.
    pub fn headers(&self, reason_header: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, values) in self.headers.into_iter().flat_map(HeaderMap::iter) {
            let text: &str = name.as_ref();
            if !text.to_ascii_lowercase().starts_with("nats-") {
                for value in values {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        headers.insert(reason_header, self.reason.replace(['\r', '\n'], " "));
        headers.insert(ORIGINAL_SUBJECT_HEADER, self.subject);
        headers.insert(ORIGINAL_STREAM_HEADER, self.stream);
        headers.insert(ORIGINAL_SEQUENCE_HEADER, self.sequence.to_string());
        headers
    }
}

/// Creates the `PARKED` stream if needed, with as many replicas as `like`.
pub async fn ensure_parked_stream(js: &jetstream::Context, like: &str) -> Result<(), String> {
    let replicas = match js.get_stream(like).await {
        Ok(mut source) => source
            .info()
            .await
            .map(|info| info.config.num_replicas)
            .unwrap_or(1),
        Err(_) => 1,
    };
    ensure_stream(
        js,
        stream::Config {
            name: PARKED_STREAM.to_string(),
            description: Some(
                "events a projection could not apply, with the reason; for operators to list and replay"
                    .to_string(),
            ),
            subjects: vec!["parked.>".to_string()],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await
    .map(drop)
    .map_err(|e| e.to_string())
}

/// Stores `event` on `subject` in the `PARKED` stream, once: a copy already
/// there (parked by another instance, or before a restart) counts as stored.
pub async fn park(
    js: &jetstream::Context,
    subject: String,
    event: &SetAside<'_>,
    payload: Bytes,
) -> Result<(), String> {
    let message = PublishMessage::build()
        .payload(payload)
        .headers(event.headers(PARKED_REASON_HEADER))
        .expected_last_subject_sequence(0);
    let mut last_error = String::new();
    for attempt in 0..PARK_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        let ack = match js.send_publish(subject.clone(), message.clone()).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match ack {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => return Ok(()),
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(last_error)
}
