//! A typed client for calling another service over NATS request-reply.
//!
//! Every call has a timeout; only calls marked idempotent are retried (on
//! transient failures, with backoff); each target service has its own circuit
//! breaker; the caller's trace context travels in `traceparent` (from a client
//! span of its own when spans are on, see [`crate::otel`]); and a request
//! nobody listens to fails at once with a clear 503 (NATS "no responders").

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::{client::RequestErrorKind, Client, HeaderMap, Message};
use bytes::Bytes;
use rand::Rng;
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    breaker::{BreakerConfig, CircuitBreaker},
    codec::{Encoding, CONTENT_TYPE_HEADER},
    error::ServiceError,
    otel::{self, SpanKind},
    trace::TraceContext,
};

/// How one call behaves.
#[derive(Debug, Clone, Copy)]
pub struct CallOptions {
    /// Time allowed for each attempt.
    pub timeout: Duration,
    /// Whether the call may be sent again after a transient failure. Only mark
    /// calls whose repetition has no further effect (reads, or writes carrying an
    /// idempotency key).
    pub idempotent: bool,
    /// Extra attempts for idempotent calls.
    pub retries: u32,
    pub encoding: Encoding,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            idempotent: false,
            retries: 2,
            encoding: Encoding::Json,
        }
    }
}

impl CallOptions {
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }
}

/// Calls other services; cheap to clone, share one per process.
#[derive(Clone)]
pub struct ServiceClient {
    nats: Client,
    breaker_config: BreakerConfig,
    breakers: Arc<Mutex<HashMap<String, Arc<CircuitBreaker>>>>,
}

impl ServiceClient {
    pub fn new(nats: Client) -> Self {
        Self::with_breaker_config(nats, BreakerConfig::default())
    }

    pub fn with_breaker_config(nats: Client, breaker_config: BreakerConfig) -> Self {
        Self {
            nats,
            breaker_config,
            breakers: Arc::default(),
        }
    }

    pub fn nats(&self) -> &Client {
        &self.nats
    }

    /// The breaker guarding calls to `service` (the first token of a subject).
    pub fn breaker(&self, service: &str) -> Arc<CircuitBreaker> {
        let mut map = self
            .breakers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(service.to_string())
            .or_insert_with(|| Arc::new(CircuitBreaker::new(self.breaker_config)))
            .clone()
    }

    /// Sends `request` to `subject` and decodes the reply.
    pub async fn call<Req, Resp>(
        &self,
        subject: &str,
        request: &Req,
        options: CallOptions,
        trace: Option<&TraceContext>,
    ) -> Result<Resp, ServiceError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let payload = options.encoding.encode(request)?;
        let reply = self.call_raw(subject, payload, options, trace).await?;
        options.encoding.decode(&reply.payload).map_err(|e| {
            ServiceError::internal(format!("undecodable reply from {subject}: {}", e.message))
        })
    }

    /// Sends raw payload bytes; returns the reply message when it is not an error.
    pub async fn call_raw(
        &self,
        subject: &str,
        payload: Bytes,
        options: CallOptions,
        trace: Option<&TraceContext>,
    ) -> Result<Message, ServiceError> {
        self.call_raw_with_headers(subject, payload, options, trace, &HeaderMap::new())
            .await
    }

    /// [`Self::call_raw`] with `extra` headers on every attempt, e.g. the
    /// caller's identity ([`crate::auth::Caller::headers`]).
    pub async fn call_raw_with_headers(
        &self,
        subject: &str,
        payload: Bytes,
        options: CallOptions,
        trace: Option<&TraceContext>,
        extra: &HeaderMap,
    ) -> Result<Message, ServiceError> {
        let service = subject.split('.').next().unwrap_or(subject);
        let breaker = self.breaker(service);
        let attempts = if options.idempotent {
            options.retries + 1
        } else {
            1
        };
        let mut last_error = ServiceError::internal("no attempt made");
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(retry_delay(attempt)).await;
            }
            if let Err(retry_after) = breaker.try_acquire() {
                return Err(ServiceError::unavailable(format!(
                    "{service} is failing: circuit open, retry after {} ms",
                    retry_after.as_millis()
                )));
            }
            let mut headers = extra.clone();
            if options.encoding != Encoding::Json {
                headers.insert(CONTENT_TYPE_HEADER, options.encoding.content_type());
            }
            // With spans on, the call's client span is what the callee's work hangs off.
            let mut span = otel::enabled()
                .then(|| {
                    otel::start(
                        SpanKind::Client,
                        subject.to_string(),
                        trace,
                        otel::messaging(subject, "send"),
                    )
                })
                .flatten();
            match &span {
                Some(span) => span.context().inject(&mut headers),
                None => trace
                    .map(TraceContext::child)
                    .unwrap_or_else(TraceContext::new_root)
                    .inject(&mut headers),
            }
            let request = async_nats::Request::new()
                .payload(payload.clone())
                .headers(headers)
                .timeout(Some(options.timeout));
            let outcome = match self.nats.send_request(subject.to_string(), request).await {
                Ok(reply) => match ServiceError::from_reply(reply.headers.as_ref(), &reply.payload)
                {
                    None => Ok(reply),
                    Some(err) => Err(err),
                },
                Err(err) => Err(match err.kind() {
                    RequestErrorKind::NoResponders => ServiceError::unavailable(format!(
                        "no instance of {service} is listening on {subject}"
                    )),
                    RequestErrorKind::TimedOut => ServiceError::timeout(format!(
                        "{subject} did not answer within {} ms",
                        options.timeout.as_millis()
                    )),
                    _ => ServiceError::unavailable(format!("request to {subject} failed: {err}")),
                }),
            };
            if let (Some(span), Err(err)) = (span.as_mut(), &outcome) {
                span.set_error(err.code, &err.message);
            }
            drop(span);
            match outcome {
                Ok(reply) => {
                    breaker.record_success();
                    return Ok(reply);
                }
                Err(err) => {
                    // A 4xx is the caller's problem, not a sign the service is failing.
                    if err.code >= 500 {
                        breaker.record_failure();
                    } else {
                        breaker.record_success();
                    }
                    if !err.is_transient() {
                        return Err(err);
                    }
                    tracing::debug!(subject, attempt, error = %err, "call failed");
                    last_error = err;
                }
            }
        }
        Err(last_error)
    }
}

fn retry_delay(attempt: u32) -> Duration {
    let base = 50u64 << attempt.min(5);
    Duration::from_millis(base + rand::rng().random_range(0..=base / 2))
}
