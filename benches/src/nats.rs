//! Small NATS helpers shared by the subcommands.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use async_nats::{Client, ConnectOptions, HeaderMap, Message, RequestError, RequestErrorKind};
use bytes::Bytes;

use crate::stats::OpError;

/// Header carrying the numeric error code of a NATS micro-service error reply.
pub const SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";
/// Header carrying the error description of a NATS micro-service error reply.
pub const SERVICE_ERROR: &str = "Nats-Service-Error";

/// Connects with a descriptive connection name and a default request timeout.
pub async fn connect(url: &str, name: &str, request_timeout: Duration) -> Result<Client> {
    ConnectOptions::new()
        .name(name)
        .request_timeout(Some(request_timeout))
        .connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))
}

/// A service error carried in reply headers: (code, description).
pub fn service_error(headers: Option<&HeaderMap>) -> Option<(String, String)> {
    let headers = headers?;
    let code = headers.get(SERVICE_ERROR_CODE)?.as_str().to_owned();
    let description = headers
        .get(SERVICE_ERROR)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    Some((code, description))
}

/// Stable short name for a request error kind (used as a counter key).
pub fn request_error_kind(kind: RequestErrorKind) -> &'static str {
    match kind {
        RequestErrorKind::TimedOut => "timeout",
        RequestErrorKind::NoResponders => "no_responders",
        RequestErrorKind::InvalidSubject => "invalid_subject",
        RequestErrorKind::MaxPayloadExceeded => "max_payload_exceeded",
        RequestErrorKind::Other => "request_failed",
    }
}

/// A reply as the outcome of a request: the message, or the error it carries
/// (`service_<code>` from the error headers, or the request error's kind).
pub fn reply_outcome(result: Result<Message, RequestError>) -> Result<Message, OpError> {
    match result {
        Ok(reply) => match service_error(reply.headers.as_ref()) {
            None => Ok(reply),
            Some((code, description)) => Err(OpError::new(
                format!("service_{code}"),
                format!("service error {code}: {description}"),
            )),
        },
        Err(e) => Err(OpError::new(request_error_kind(e.kind()), e.to_string())),
    }
}

/// The version the connected server reports.
pub fn server_version(client: &Client) -> String {
    client.server_info().version
}

/// Repeatedly connects and sends `payload` to `subject` until any reply arrives
/// (an error reply also proves the responder is up) or `deadline` elapses.
/// With `print`, the reply's payload goes to stdout.
pub async fn wait_for(
    url: &str,
    subject: &str,
    payload: &str,
    deadline: Duration,
    print: bool,
) -> Result<()> {
    const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
    const BACKOFF: Duration = Duration::from_millis(100);
    let start = Instant::now();
    let payload = Bytes::from(payload.to_owned());
    let mut client: Option<Client> = None;
    let mut last_error = String::from("no attempt made");
    while start.elapsed() < deadline {
        let c = match &client {
            Some(c) => c.clone(),
            None => match connect(url, "shop-bench-wait", ATTEMPT_TIMEOUT).await {
                Ok(c) => {
                    client = Some(c.clone());
                    c
                }
                Err(e) => {
                    last_error = format!("{e:#}");
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
            },
        };
        match c.request(subject.to_owned(), payload.clone()).await {
            Ok(reply) => {
                report_probe_reply(subject, &reply, start.elapsed());
                if print {
                    println!("{}", String::from_utf8_lossy(&reply.payload));
                }
                return Ok(());
            }
            Err(e) => {
                last_error = e.to_string();
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
    bail!(
        "no reply on {subject} within {:.1}s (last error: {last_error})",
        deadline.as_secs_f64()
    )
}

fn report_probe_reply(subject: &str, reply: &Message, waited: Duration) {
    let status = match service_error(reply.headers.as_ref()) {
        Some((code, desc)) => format!("service error {code} {desc}"),
        None => "ok".to_owned(),
    };
    eprintln!(
        "{subject} answered after {:.2}s ({status})",
        waited.as_secs_f64()
    );
}
