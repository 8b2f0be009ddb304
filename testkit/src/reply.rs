//! Raw JSON requests, as the `nats` CLI sends them, and their replies.

use std::time::Duration;

use anyhow::Context;
use async_nats::HeaderMap;

/// A reply: the error headers when present, and the body as JSON.
#[derive(Debug, Clone)]
pub struct Reply {
    pub headers: Option<HeaderMap>,
    pub error_code: Option<u16>,
    pub error: Option<String>,
    pub body: serde_json::Value,
    pub raw: bytes::Bytes,
}

impl Reply {
    pub fn is_ok(&self) -> bool {
        self.error_code.is_none()
    }
}

/// Sends `payload` (raw bytes, no headers) to `subject` and reads the reply.
pub async fn request_json(
    client: &async_nats::Client,
    subject: &str,
    payload: impl Into<bytes::Bytes>,
) -> anyhow::Result<Reply> {
    request_json_with_headers(client, subject, HeaderMap::new(), payload).await
}

/// [`request_json`] with `headers` (e.g. `Authorization: Bearer <token>`).
pub async fn request_json_with_headers(
    client: &async_nats::Client,
    subject: &str,
    headers: HeaderMap,
    payload: impl Into<bytes::Bytes>,
) -> anyhow::Result<Reply> {
    let message = tokio::time::timeout(
        Duration::from_secs(10),
        client.request_with_headers(subject.to_string(), headers, payload.into()),
    )
    .await
    .with_context(|| format!("{subject} timed out"))?
    .with_context(|| format!("request to {subject}"))?;
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
    };
    Ok(Reply {
        error_code: header("Nats-Service-Error-Code").and_then(|c| c.parse().ok()),
        error: header("Nats-Service-Error"),
        body: serde_json::from_slice(&message.payload).unwrap_or(serde_json::Value::Null),
        raw: message.payload.clone(),
        headers: message.headers,
    })
}
