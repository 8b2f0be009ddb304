//! Endpoint actors: where a request enters a service.
//!
//! Each endpoint actor owns one queue subscription to `<service>.>` in the queue
//! group `<service>`, so the NATS server spreads requests over every actor of
//! every instance with no extra hop. A request is answered inline when the
//! handler can ([`Handler::inline`]), or handed to the bounded worker pool; a
//! saturated pool answers 503 at once.
//!
//! The request's trace is in scope while its handler runs (log records carry its
//! id), and when spans are on (`shop_nats::otel`) each request gets a server span
//! from receipt to reply, parented by the caller's `traceparent`.

use std::{
    collections::HashMap,
    panic::AssertUnwindSafe,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use async_nats::{Client, HeaderMap, Message, Subject};
use futures::{FutureExt, StreamExt};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use shop_nats::{
    codec::CONTENT_TYPE_HEADER,
    otel::{self, KeyValue, SpanKind},
    Encoding, ServiceError, TraceContext,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    metrics::{EndpointMetrics, Metrics},
    pool::{PoolJob, WorkerPool},
    request::{EndpointSpec, Handler, HandlerResult, Request},
};

/// Counters behind `$SRV.STATS`.
#[derive(Debug, Default)]
pub struct EndpointStats {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub processing_ns: AtomicU64,
    pub last_error: Mutex<String>,
}

/// One endpoint with its counters.
pub struct Endpoint {
    pub spec: EndpointSpec,
    pub stats: EndpointStats,
    metrics: EndpointMetrics,
}

/// Every endpoint of a service, looked up by subject.
pub struct Endpoints {
    pub service: &'static str,
    pub list: Vec<Endpoint>,
    by_subject: HashMap<&'static str, usize>,
    metrics: Metrics,
}

impl Endpoints {
    pub fn new(service: &'static str, specs: &[EndpointSpec], metrics: &Metrics) -> Self {
        let list: Vec<Endpoint> = specs
            .iter()
            .map(|spec| Endpoint {
                spec: *spec,
                stats: EndpointStats::default(),
                metrics: metrics.endpoint(spec.name),
            })
            .collect();
        let by_subject = specs
            .iter()
            .enumerate()
            .map(|(i, s)| (s.subject, i))
            .collect();
        Self {
            service,
            list,
            by_subject,
            metrics: metrics.clone(),
        }
    }

    pub fn subjects(&self) -> Vec<String> {
        self.list
            .iter()
            .map(|e| e.spec.subject.to_string())
            .collect()
    }

    fn lookup(&self, subject: &str) -> Option<usize> {
        self.by_subject.get(subject).copied()
    }
}

/// Sends replies and records what each one cost.
pub struct Responder {
    nats: Client,
    pub endpoints: Endpoints,
    /// Server spans of requests handed to the worker pool, by reply subject;
    /// ended when their reply is sent. Used only while spans are on.
    pool_spans: Mutex<HashMap<String, otel::Span>>,
}

impl Responder {
    pub fn new(nats: Client, endpoints: Endpoints) -> Self {
        Self {
            nats,
            endpoints,
            pool_spans: Mutex::default(),
        }
    }

    fn hold_span(&self, reply_to: &Subject, span: otel::Span) {
        if let Ok(mut spans) = self.pool_spans.lock() {
            spans.insert(reply_to.to_string(), span);
        }
    }

    fn take_span(&self, reply_to: &Subject) -> Option<otel::Span> {
        self.pool_spans.lock().ok()?.remove(reply_to.as_str())
    }

    /// Replies to a request of endpoint `index` and records its outcome.
    pub async fn respond(
        &self,
        index: usize,
        reply_to: Subject,
        encoding: Encoding,
        started: Instant,
        result: HandlerResult,
    ) {
        let endpoint = &self.endpoints.list[index];
        let mut span = if otel::enabled() {
            self.take_span(&reply_to)
        } else {
            None
        };
        if let (Some(span), Err(err)) = (span.as_mut(), &result) {
            span.set_error(err.code, &err.message);
        }
        let elapsed = started.elapsed();
        endpoint
            .stats
            .processing_ns
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        endpoint.stats.requests.fetch_add(1, Ordering::Relaxed);
        endpoint.metrics.latency.observe(elapsed.as_secs_f64());
        endpoint.metrics.in_flight.dec();
        if let Err(err) = &result {
            endpoint.stats.errors.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = endpoint.stats.last_error.lock() {
                *last = err.to_string();
            }
            self.endpoints
                .metrics
                .errors
                .with_label_values(&[endpoint.spec.name, &err.code.to_string()])
                .inc();
            if err.code >= 500 {
                tracing::warn!(endpoint = endpoint.spec.name, code = err.code, error = %err.message, "request failed");
            }
        }
        self.send(reply_to, encoding, result).await;
        drop(span);
    }

    async fn send(&self, reply_to: Subject, encoding: Encoding, result: HandlerResult) {
        let sent = match result {
            Ok(body) if encoding == Encoding::Json => self.nats.publish(reply_to, body).await,
            Ok(body) => {
                let mut headers = HeaderMap::new();
                headers.insert(CONTENT_TYPE_HEADER, encoding.content_type());
                self.nats
                    .publish_with_headers(reply_to, headers, body)
                    .await
            }
            Err(err) => {
                self.nats
                    .publish_with_headers(reply_to, err.headers(), err.body())
                    .await
            }
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "sending reply failed");
        }
    }

    /// Answers a request that matched no endpoint.
    async fn reject(&self, reply_to: Subject, err: ServiceError) {
        self.endpoints
            .metrics
            .errors
            .with_label_values(&["unknown", &err.code.to_string()])
            .inc();
        self.send(reply_to, Encoding::Json, Err(err)).await;
    }
}

/// Routes each request to inline handling or the pool.
pub struct Dispatcher {
    pub responder: Arc<Responder>,
    handler: Arc<dyn Handler>,
    pool: WorkerPool,
    max_payload: usize,
}

impl Dispatcher {
    pub fn new(
        responder: Arc<Responder>,
        handler: Arc<dyn Handler>,
        pool: WorkerPool,
        max_payload: usize,
    ) -> Self {
        Self {
            responder,
            handler,
            pool,
            max_payload,
        }
    }

    pub fn pool(&self) -> &WorkerPool {
        &self.pool
    }

    /// Handles one message from the service's subscription.
    pub async fn dispatch(&self, message: Message) {
        let started = Instant::now();
        let Some(reply_to) = message.reply else {
            tracing::debug!(subject = %message.subject, "ignoring message without reply subject");
            return;
        };
        let endpoints = &self.responder.endpoints;
        let Some(index) = endpoints.lookup(message.subject.as_str()) else {
            let known = endpoints.subjects().join(", ");
            let err = ServiceError::not_found(format!(
                "unknown subject {}; {} answers: {known}",
                message.subject, endpoints.service
            ));
            self.responder.reject(reply_to, err).await;
            return;
        };
        let endpoint = &endpoints.list[index];
        endpoint.metrics.requests.inc();
        endpoint.metrics.in_flight.inc();
        let encoding = Encoding::from_headers(message.headers.as_ref());
        if message.payload.len() > self.max_payload {
            let err = ServiceError::bad_request(format!(
                "payload of {} bytes exceeds the limit of {} bytes",
                message.payload.len(),
                self.max_payload
            ));
            self.responder
                .respond(index, reply_to, encoding, started, Err(err))
                .await;
            return;
        }
        let name = endpoint.spec.name;
        let incoming = TraceContext::from_headers(message.headers.as_ref());
        let mut span = if otel::enabled() {
            server_span(&message.subject, name, incoming.as_ref(), started)
        } else {
            None
        };
        let trace = match &span {
            Some(span) => span.context().clone(),
            None => incoming.unwrap_or_else(TraceContext::new_root),
        };
        let request = Request {
            trace,
            subject: message.subject,
            headers: message.headers,
            payload: message.payload,
            encoding,
        };
        let inline = std::panic::catch_unwind(AssertUnwindSafe(|| {
            shop_nats::trace::sync_scope(&request.trace, || self.handler.inline(name, &request))
        }));
        match inline {
            Ok(Some(result)) => {
                if let (Some(span), Err(err)) = (span.as_mut(), &result) {
                    span.set_error(err.code, &err.message);
                }
                shop_nats::trace::scope(
                    &request.trace,
                    self.responder
                        .respond(index, reply_to, encoding, started, result),
                )
                .await;
                drop(span);
            }
            Ok(None) => {
                if let Some(span) = span.take() {
                    self.responder.hold_span(&reply_to, span);
                }
                let job = PoolJob {
                    endpoint: index,
                    name,
                    request,
                    reply_to,
                    started,
                    permit: None,
                };
                if let Err(reply_to) = self.pool.submit(job) {
                    let err = ServiceError::unavailable(format!(
                        "{} is busy: {} requests in progress; retry shortly",
                        endpoints.service,
                        self.pool.capacity()
                    ));
                    self.responder
                        .respond(index, reply_to, encoding, started, Err(err))
                        .await;
                }
            }
            Err(panic) => {
                shop_nats::trace::sync_scope(
                    &request.trace,
                    || tracing::error!(endpoint = name, panic = %panic_message(&*panic), "handler panicked"),
                );
                let err = ServiceError::internal("internal error while handling the request");
                if let Some(span) = span.as_mut() {
                    span.set_error(err.code, &err.message);
                }
                self.responder
                    .respond(index, reply_to, encoding, started, Err(err))
                    .await;
                drop(span);
            }
        }
    }
}

/// The server span of one request, started when it was received.
fn server_span(
    subject: &Subject,
    endpoint: &'static str,
    parent: Option<&TraceContext>,
    started: Instant,
) -> Option<otel::Span> {
    let mut attributes = otel::messaging(subject.as_str(), "process");
    attributes.push(KeyValue::new("shop.endpoint", endpoint));
    otel::start_at(
        SpanKind::Server,
        subject.to_string(),
        parent,
        attributes,
        SystemTime::now().checked_sub(started.elapsed()),
    )
}

/// Messages the server may still route here after the drain starts.
const DRAIN_SLACK: u64 = 256;
/// A quiet gap this long means no request is in flight to this subscription.
const DRAIN_IDLE: Duration = Duration::from_millis(100);
/// Longest a drain waits for the server to reach the slack.
const DRAIN_CAP: Duration = Duration::from_secs(2);

/// Leaves the queue group without losing a request the server already routed here.
///
/// async-nats 0.51's `Subscriber::drain` forgets the subscription as soon as the
/// UNSUB is written, so requests the server routed here before it processed the
/// UNSUB are dropped (nats.rs issue #1325). Instead: `UNSUB <sid> <n>` with n =
/// received + slack makes the server stop after exactly n deliveries and the client
/// keep the subscription until it has received those n, so the stream ends with
/// nothing in flight. When traffic stops before n, a quiet gap followed by a round
/// trip to the server (see [`server_round_trip`]) with nothing new behind it means
/// nothing routed here is still on its way, and a plain unsubscribe is safe: a
/// busy machine that left requests unread in the socket for the whole gap no
/// longer loses them. What remains is a request the server routes here in the
/// microseconds between that round trip's answer and the unsubscribe, or when
/// the slack is not reached within the cap while traffic never pauses.
async fn drain_subscription(
    nats: &Client,
    subscriber: &mut async_nats::Subscriber,
    received: u64,
    dispatcher: &Dispatcher,
) {
    if let Err(e) = subscriber.unsubscribe_after(received + DRAIN_SLACK).await {
        tracing::warn!(error = %e, "unsubscribing");
    }
    let cap = tokio::time::sleep(DRAIN_CAP);
    tokio::pin!(cap);
    loop {
        tokio::select! {
            message = tokio::time::timeout(DRAIN_IDLE, subscriber.next()) => match message {
                Ok(Some(message)) => dispatcher.dispatch(message).await,
                // The server delivered its last message to this subscription.
                Ok(None) => return,
                Err(_) => {
                    server_round_trip(nats).await;
                    match subscriber.next().now_or_never() {
                        Some(Some(message)) => dispatcher.dispatch(message).await,
                        Some(None) => return,
                        None => break,
                    }
                }
            },
            _ = &mut cap => break,
        }
    }
    if let Err(e) = subscriber.unsubscribe().await {
        tracing::warn!(error = %e, "unsubscribing");
    }
    // The receiver is closed; what was already delivered is still readable.
    while let Some(message) = subscriber.next().await {
        dispatcher.dispatch(message).await;
    }
}

/// Subject nobody serves: a request to it comes back from the server itself.
const ROUND_TRIP_SUBJECT: &str = "_SHOP.DRAIN.ROUND_TRIP";

/// Waits for an answer from the server on this connection (its "no responders"
/// reply to a request nobody serves). The server writes to a connection in
/// order, so once the answer is read, every message it routed to this
/// connection before answering has been read too and sits in its
/// subscription's channel. async-nats' `flush` only writes and `drain` does
/// not wait for the server, hence this.
async fn server_round_trip(nats: &Client) {
    let request = nats.request(ROUND_TRIP_SUBJECT, bytes::Bytes::new());
    match tokio::time::timeout(DRAIN_IDLE * 10, request).await {
        Err(_) => tracing::warn!("no round trip to the server while draining"),
        Ok(Err(e)) if e.kind() != async_nats::RequestErrorKind::NoResponders => {
            tracing::warn!(error = %e, "round trip to the server while draining")
        }
        Ok(_) => {}
    }
}

/// The text of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string())
}

/// Owns one queue subscription and answers what arrives on it.
#[derive(Clone, Copy)]
pub struct EndpointActor;

pub struct EndpointArgs {
    pub nats: Client,
    pub dispatcher: Arc<Dispatcher>,
    /// Cancelled at shutdown: the actor drains its subscription and stops.
    pub drain: CancellationToken,
    /// Tracks running loops so shutdown can wait for them to finish.
    pub tracker: TaskTracker,
}

pub enum EndpointMsg {
    Run,
}

pub struct EndpointState {
    args: EndpointArgs,
    subscriber: Option<async_nats::Subscriber>,
}

impl Actor for EndpointActor {
    type Msg = EndpointMsg;
    type State = EndpointState;
    type Arguments = EndpointArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: EndpointArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let service = args.dispatcher.responder.endpoints.service;
        let subscriber = args
            .nats
            .queue_subscribe(format!("{service}.>"), service.to_string())
            .await
            .map_err(|e| format!("subscribing to {service}.>: {e}"))?;
        myself.cast(EndpointMsg::Run)?;
        Ok(EndpointState {
            args,
            subscriber: Some(subscriber),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        EndpointMsg::Run: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(mut subscriber) = state.subscriber.take() else {
            return Ok(());
        };
        let dispatcher = state.args.dispatcher.clone();
        let drain = state.args.drain.clone();
        let nats = state.args.nats.clone();
        let serve = async move {
            let mut received: u64 = 0;
            loop {
                tokio::select! {
                    biased;
                    _ = drain.cancelled() => break,
                    message = subscriber.next() => match message {
                        Some(message) => {
                            received += 1;
                            dispatcher.dispatch(message).await;
                        }
                        None => return Err("subscription closed unexpectedly".to_string()),
                    },
                }
            }
            drain_subscription(&nats, &mut subscriber, received, &dispatcher).await;
            Ok(())
        };
        state.args.tracker.track_future(serve).await?;
        myself.stop(Some("drained".to_string()));
        Ok(())
    }
}
