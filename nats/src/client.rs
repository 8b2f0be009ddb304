//! A typed client for calling another service over NATS request-reply.
//!
//! Every call has a timeout; only calls marked idempotent are retried (on
//! transient failures, with backoff); each target service has its own circuit
//! breaker (a half-open probe's outcome is recorded even when its caller stops
//! waiting, and a failure caused by this process's own reconnecting connection
//! is not held against the target); the caller's trace context travels in
//! `traceparent` (from a client span of its own when spans are on, see
//! [`crate::otel`]); and a request nobody listens to fails at once with a clear
//! 503 (NATS "no responders").

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use async_nats::{
    client::{RequestErrorKind, Statistics},
    connection::State,
    Client, HeaderMap, Message,
};
use bytes::Bytes;
use rand::Rng;
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    breaker::{BreakerConfig, CircuitBreaker, Permit},
    codec::{Encoding, CONTENT_TYPE_HEADER},
    connect::MAX_RECONNECT_DELAY,
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
    link: Arc<Link>,
    /// The subjects this client may call (a service's declared calls); `None`: any.
    calls: Option<Arc<[String]>>,
    /// The calling service, sent in [`CALLER_SERVICE_HEADER`] on every call.
    caller: Option<Arc<str>>,
}

/// Header naming the service a call comes from, so the callee can keep what
/// different callers name alike apart (payment scopes idempotency keys by it).
/// Only services the bus lets publish on the subject can set it.
pub const CALLER_SERVICE_HEADER: &str = "Shop-Caller-Service";

/// How long after this process's connection comes back "no responders" is not
/// held against a target: the target's instances reconnect on their own backoff
/// (at most [`MAX_RECONNECT_DELAY`] plus a quarter), so for a while after a
/// server restart nobody may be subscribed yet although every instance is alive.
pub const RECONNECT_GRACE: Duration = MAX_RECONNECT_DELAY.saturating_mul(2);

/// This process's own NATS connection as the breakers see it: a call that failed
/// while it was down or reconnecting says nothing about the target.
struct Link {
    stats: Arc<Statistics>,
    /// The connect count last seen (1 after the first connect).
    seen: AtomicU64,
    /// When the connect count was first seen to change: the last reconnect.
    reconnected_at: Mutex<Option<Instant>>,
}

impl Link {
    fn new(nats: &Client) -> Self {
        let stats = nats.statistics();
        let seen = AtomicU64::new(stats.connects.load(Ordering::Relaxed));
        Self {
            stats,
            seen,
            reconnected_at: Mutex::default(),
        }
    }

    /// The connect count now, noting a reconnect the first time it is seen.
    fn observe(&self) -> u64 {
        let connects = self.stats.connects.load(Ordering::Relaxed);
        // Loads only on every call; a write only when the count changed.
        if self.seen.load(Ordering::Relaxed) != connects
            && self.seen.swap(connects, Ordering::Relaxed) != connects
        {
            *self
                .reconnected_at
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
        }
        connects
    }

    /// Whether a failed call that started at connect count `started` may be the
    /// connection's doing rather than the target's.
    fn excuses(&self, nats: &Client, started: u64, no_responders: bool) -> bool {
        if self.observe() != started || nats.connection_state() != State::Connected {
            return true;
        }
        no_responders
            && self
                .reconnected_at
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .is_some_and(|at| at.elapsed() < RECONNECT_GRACE)
    }
}

/// One attempt's result, and whether NATS found nobody subscribed.
struct Attempt {
    outcome: Result<Message, ServiceError>,
    no_responders: bool,
    /// The service itself answered (the outcome is its reply).
    replied: bool,
}

impl ServiceClient {
    pub fn new(nats: Client) -> Self {
        Self::with_breaker_config(nats, BreakerConfig::default())
    }

    pub fn with_breaker_config(nats: Client, breaker_config: BreakerConfig) -> Self {
        Self {
            link: Arc::new(Link::new(&nats)),
            nats,
            breaker_config,
            breakers: Arc::default(),
            calls: None,
            caller: None,
        }
    }

    /// This client, naming `service` as the caller of every call
    /// ([`CALLER_SERVICE_HEADER`]).
    pub fn as_service(mut self, service: &str) -> Self {
        self.caller = Some(service.into());
        self
    }

    /// This client, refusing (500) any subject outside `calls`: a service's
    /// client may only call what its declaration says it calls.
    pub fn calling_only(mut self, calls: &[&str]) -> Self {
        self.calls = Some(calls.iter().map(|s| s.to_string()).collect());
        self
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
        if let Some(calls) = &self.calls {
            if !calls.iter().any(|c| c == subject) {
                return Err(ServiceError::internal(format!(
                    "{subject} is not among the subjects this service declares it calls"
                )));
            }
        }
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
            let permit = breaker.try_acquire().map_err(|retry_after| {
                ServiceError::unavailable(format!(
                    "{service} is failing: circuit open, retry after {} ms",
                    retry_after.as_millis()
                ))
            })?;
            let mut headers = extra.clone();
            if let Some(caller) = &self.caller {
                headers.insert(CALLER_SERVICE_HEADER, caller.as_ref());
            }
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
            let outcome = if permit.is_probe() {
                // The probe's outcome decides for every caller of this service, so
                // it is awaited and recorded even if this caller stops waiting
                // (e.g. a sibling in a `try_join_all` was refused).
                let (client, target) = (self.clone(), subject.to_string());
                let probe = tokio::spawn(async move {
                    client
                        .attempt(&target, request, options.timeout, permit)
                        .await
                });
                probe.await.unwrap_or_else(|e| {
                    Err(ServiceError::internal(format!(
                        "probe call to {subject} failed: {e}"
                    )))
                })
            } else {
                self.attempt(subject, request, options.timeout, permit)
                    .await
            };
            if let (Some(span), Err(err)) = (span.as_mut(), &outcome) {
                span.set_error(err.code, &err.message);
            }
            drop(span);
            match outcome {
                Ok(reply) => return Ok(reply),
                Err(err) => {
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

    /// Sends one request and records what it showed about the target in `permit`.
    async fn attempt(
        &self,
        subject: &str,
        request: async_nats::Request,
        timeout: Duration,
        permit: Permit,
    ) -> Result<Message, ServiceError> {
        let connects = self.link.observe();
        let Attempt {
            outcome,
            no_responders,
            replied,
        } = self.send(subject, request, timeout).await;
        match &outcome {
            // A 4xx is the caller's problem, not a sign the service is failing.
            Ok(_) => permit.success(),
            Err(err) if err.code < 500 => permit.success(),
            Err(_) if self.link.excuses(&self.nats, connects, no_responders) => {
                permit.inconclusive()
            }
            // A 503 the service answered itself is load shedding ("at capacity,
            // retry after 1 s") or a dependency of its own being unavailable:
            // it is alive and answering fast, so there is no timeout to spare
            // anyone, and opening the circuit would turn a partial refusal
            // into refusing every call.
            Err(err) if replied && err.code == 503 => permit.inconclusive(),
            Err(_) => permit.failure(),
        }
        outcome
    }

    async fn send(
        &self,
        subject: &str,
        request: async_nats::Request,
        timeout: Duration,
    ) -> Attempt {
        let service = subject.split('.').next().unwrap_or(subject);
        match self.nats.send_request(subject.to_string(), request).await {
            Ok(reply) => Attempt {
                outcome: match ServiceError::from_reply(reply.headers.as_ref(), &reply.payload) {
                    None => Ok(reply),
                    Some(err) => Err(err),
                },
                no_responders: false,
                replied: true,
            },
            Err(err) => Attempt {
                replied: false,
                no_responders: err.kind() == RequestErrorKind::NoResponders,
                outcome: Err(match err.kind() {
                    RequestErrorKind::NoResponders => ServiceError::unavailable(format!(
                        "no instance of {service} is listening on {subject}"
                    )),
                    RequestErrorKind::TimedOut => ServiceError::timeout(format!(
                        "{subject} did not answer within {} ms",
                        timeout.as_millis()
                    )),
                    _ => ServiceError::unavailable(format!("request to {subject} failed: {err}")),
                }),
            },
        }
    }
}

fn retry_delay(attempt: u32) -> Duration {
    let base = 50u64 << attempt.min(5);
    Duration::from_millis(base + rand::rng().random_range(0..=base / 2))
}
