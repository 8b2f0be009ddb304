//! Small NATS helpers: connecting, and a reply as the outcome of a request.

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::{Client, ConnectOptions, Message, RequestError, RequestErrorKind};
use shop_nats::ServiceError;

use crate::stats::OpError;

/// The credentials the harness's own clients use (the stack's operator's).
static CREDENTIALS: RwLock<Option<PathBuf>> = RwLock::new(None);

/// From now on the harness's clients connect with `creds` (`None`: `NATS_CREDS`, if set).
pub fn use_credentials(creds: Option<PathBuf>) {
    if let Ok(mut current) = CREDENTIALS.write() {
        *current = creds;
    }
}

/// Connects as `name`, with the stack's credentials (or `NATS_CREDS`) if there are any.
pub async fn connect(url: &str, name: &str, request_timeout: Duration) -> Result<Client> {
    let env = std::env::var_os("NATS_CREDS").filter(|c| !c.is_empty());
    let creds = CREDENTIALS.read().ok().and_then(|c| c.clone());
    let creds = creds.or(env.map(PathBuf::from));
    let options = match creds {
        Some(path) => ConnectOptions::with_credentials_file(&path)
            .await
            .with_context(|| format!("reading {}", path.display()))?,
        None => ConnectOptions::new(),
    };
    let options = options.name(name).request_timeout(Some(request_timeout));
    let connected = options.connect(url).await;
    connected.with_context(|| format!("connecting to NATS at {url}"))
}

/// A reply as the outcome of a request: the message, or its error (`service_<code>` ...).
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
