//! Small NATS helpers: connecting, and a reply as the outcome of a request.

use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::{Client, ConnectOptions, Message, RequestError, RequestErrorKind};
use shop_nats::ServiceError;

use crate::stats::OpError;

/// Connects with a descriptive connection name and a default request timeout.
pub async fn connect(url: &str, name: &str, request_timeout: Duration) -> Result<Client> {
    let options = ConnectOptions::new().name(name);
    let connected = options.request_timeout(Some(request_timeout)).connect(url);
    connected
        .await
        .with_context(|| format!("connecting to NATS at {url}"))
}

/// A reply as the outcome of a request: the message, or the error it carries
/// (`service_<code>` from the error headers, or the request error's kind).
pub fn reply_outcome(result: Result<Message, RequestError>) -> Result<Message, OpError> {
    let reply = result.map_err(|e| {
        let kind = match e.kind() {
            RequestErrorKind::TimedOut => "timeout",
            RequestErrorKind::NoResponders => "no_responders",
            RequestErrorKind::InvalidSubject => "invalid_subject",
            RequestErrorKind::MaxPayloadExceeded => "max_payload_exceeded",
            RequestErrorKind::Other => "request_failed",
        };
        OpError::new(kind, e.to_string())
    })?;
    match ServiceError::from_reply(reply.headers.as_ref(), &reply.payload) {
        None => Ok(reply),
        Some(ServiceError { code, message }) => Err(OpError::new(
            format!("service_{code}"),
            format!("service error {code}: {message}"),
        )),
    }
}
