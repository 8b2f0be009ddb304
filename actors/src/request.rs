//! What a service implements: its endpoints and a [`Handler`] for them.

use std::sync::Arc;

use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use futures::future::BoxFuture;
use serde::{de::DeserializeOwned, Serialize};
use shop_nats::{auth::Caller, Encoding, ServiceError, TraceContext};

/// One request subject a service answers.
#[derive(Debug, Clone, Copy)]
pub struct EndpointSpec {
    /// Endpoint name as `nats micro` shows it, e.g. `stock_reserve`.
    pub name: &'static str,
    /// Full request subject, e.g. `product.stock.reserve`.
    pub subject: &'static str,
}

/// A handler's answer: the encoded reply body, or an error for the caller.
pub type HandlerResult = Result<Bytes, ServiceError>;

/// An incoming request, already checked against the payload limit.
#[derive(Debug, Clone)]
pub struct Request {
    pub subject: Subject,
    pub headers: Option<HeaderMap>,
    pub payload: Bytes,
    /// JSON unless the request asked for bincode; the reply must use the same.
    pub encoding: Encoding,
    pub trace: TraceContext,
}

impl Request {
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ServiceError> {
        self.encoding.decode(&self.payload)
    }

    pub fn encode<T: Serialize + ?Sized>(&self, value: &T) -> HandlerResult {
        self.encoding.encode(value)
    }

    /// A header value, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.as_ref()?.get(name).map(|v| v.as_str())
    }

    /// Whom the request is made for (set by the gateway from a verified token);
    /// `None` for a trusted internal call.
    pub fn caller(&self) -> Option<Caller> {
        Caller::from_headers(self.headers.as_ref())
    }
}

/// A service's request logic. Panics are caught and answered with 500.
pub trait Handler: Send + Sync + 'static {
    /// Fast path, run on the endpoint actor that received the request: answer
    /// now (a local read), or return `None` to hand the request to the worker pool.
    fn inline(&self, _endpoint: &'static str, _request: &Request) -> Option<HandlerResult> {
        None
    }

    /// Slow path, run in the bounded worker pool (writes, waits, calls to other services).
    fn call(
        self: Arc<Self>,
        endpoint: &'static str,
        request: Request,
    ) -> BoxFuture<'static, HandlerResult>;
}
