//! What a handler receives: the request as it arrived, who made it, and its
//! payload decoded once into the endpoint's request type.

use std::sync::Arc;

use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Serialize};
use shop_nats::{auth::Caller, Encoding, ServiceError, TraceContext};

/// A handler's answer: the encoded reply body, or an error for the caller.
pub type HandlerResult = Result<Bytes, ServiceError>;

/// An incoming request, checked against the payload limit and the endpoint's
/// access rule before any handler sees it.
#[derive(Debug, Clone)]
pub struct Request {
    pub subject: Subject,
    pub headers: Option<HeaderMap>,
    pub payload: Bytes,
    /// JSON unless the request asked for bincode; the reply must use the same.
    pub encoding: Encoding,
    pub trace: TraceContext,
    /// The user the request is made for, proven by the token the runtime's
    /// access check verified; `None` without one (public data, or a call from
    /// a service the endpoint lists).
    pub caller: Option<Arc<Caller>>,
}

impl Request {
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ServiceError> {
        self.encoding.decode(&self.payload)
    }

    pub fn encode<T: Serialize + ?Sized>(&self, value: &T) -> HandlerResult {
        self.encoding.encode(value)
    }

    /// The verified user the request is made for, or 401: for handlers of
    /// per-user data that no service calls without a user.
    pub fn user(&self) -> Result<&Caller, ServiceError> {
        self.caller
            .as_deref()
            .ok_or_else(|| ServiceError::unauthorized("this request needs a user's token"))
    }

    /// A header value, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.as_ref()?.get(name).map(|v| v.as_str())
    }
}

/// The payload type of an endpoint. The runtime decodes every request into it
/// once, runs [`RequestBody::validate`], and for reads waits for
/// [`RequestBody::min_revision`] before the handler runs.
///
/// `JsonSchema` puts the type in the service's manifest, where the docs checks
/// and the fuzzer read it.
pub trait RequestBody: DeserializeOwned + JsonSchema + Send + 'static {
    /// Whether an empty JSON payload means `{}` (endpoints without parameters);
    /// otherwise it is a 400.
    const EMPTY_IS_DEFAULT: bool = false;

    /// Checks that need nothing but the request itself (ids, ranges, lengths).
    fn validate(&self) -> Result<(), ServiceError> {
        Ok(())
    }

    /// The stream revision a read must reflect; the runtime answers once the
    /// local state has applied it (or 503 after a short wait).
    fn min_revision(&self) -> Option<u64> {
        None
    }
}

/// The request of an endpoint that takes no parameters: `{}` or an empty payload.
#[derive(Debug, Clone, Default, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

impl RequestBody for Empty {
    const EMPTY_IS_DEFAULT: bool = true;
}

/// Decodes a request's payload into `B` and validates it.
pub fn decode_body<B: RequestBody>(request: &Request) -> Result<B, ServiceError> {
    let empty =
        request.encoding == Encoding::Json && request.payload.iter().all(u8::is_ascii_whitespace);
    let body: B = if empty && B::EMPTY_IS_DEFAULT {
        Encoding::Json.decode(b"{}")?
    } else {
        request.decode()?
    };
    body.validate()?;
    Ok(body)
}
