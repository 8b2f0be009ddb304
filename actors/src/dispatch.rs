//! Dispatch: one message from a service's subscription to its endpoint's
//! handler. Checks, in order: a reply subject under the inbox prefix
//! ([`crate::reply`]; otherwise no answer at all), a declared subject, the
//! payload limit, the access rule ([`crate::access`]: the user's token
//! verified); then the endpoint's route decodes the payload once and answers
//! inline or hands its work to the pool. A token naming a key this instance
//! has not fetched yet is verified in the pool, so the endpoint actor keeps
//! serving while the keys are fetched.
//!
//! The request's trace is in scope while its handler runs (log records carry its
//! id), and when spans are on (`shop_nats::otel`) each request gets a server span
//! from receipt to reply, parented by the caller's `traceparent`.

use std::{
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Instant, SystemTime},
};

use async_nats::{Message, Subject};
use futures::FutureExt;
use shop_nats::{
    otel::{self, KeyValue, SpanKind},
    Encoding, ServiceError, TraceContext,
};

use shop_nats::verifier::TokenVerifier;

use crate::{
    access::{authorize, authorize_fetching, Check},
    metrics::Metrics,
    pool::{PoolJob, WorkerPool},
    reply::{ReplyGuard, DEFAULT_REPLY_PREFIX},
    request::Request,
    responder::{panic_message, Responder},
    route::Dispatch,
};

/// An endpoint's route bound to the service's state: request in, dispatch out.
pub type BoundRoute = Arc<dyn Fn(Request) -> Dispatch + Send + Sync>;

/// Routes each request to its endpoint, inline or through the pool.
pub struct Dispatcher {
    pub responder: Arc<Responder>,
    /// One per endpoint, in the order of `responder.endpoints`.
    routes: Vec<BoundRoute>,
    pool: WorkerPool,
    max_payload: usize,
    replies: Arc<ReplyGuard>,
    /// Verifies users' tokens; `None` for a service without user or admin endpoints.
    verifier: Option<Arc<TokenVerifier>>,
    auth_refused: prometheus::IntCounterVec,
}

impl Dispatcher {
    /// Replies only under `_INBOX.` and no token verification until
    /// [`Self::with_replies`] and [`Self::with_verifier`] say otherwise.
    pub fn new(
        responder: Arc<Responder>,
        routes: Vec<BoundRoute>,
        pool: WorkerPool,
        max_payload: usize,
    ) -> Self {
        let metrics = responder.endpoints.metrics();
        Self {
            replies: Arc::new(ReplyGuard::new(
                DEFAULT_REPLY_PREFIX,
                metrics.replies_refused.clone(),
            )),
            auth_refused: metrics.auth_refused.clone(),
            responder,
            routes,
            pool,
            max_payload,
            verifier: None,
        }
    }

    /// Answers only reply subjects `replies` allows.
    pub fn with_replies(mut self, replies: Arc<ReplyGuard>) -> Self {
        self.replies = replies;
        self
    }

    /// Verifies users' tokens with `verifier`.
    pub fn with_verifier(mut self, verifier: Arc<TokenVerifier>) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// The metrics of this dispatcher's service.
    pub fn metrics(&self) -> &Metrics {
        self.responder.endpoints.metrics()
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
        if !self
            .replies
            .allows(&reply_to, message.subject.as_str(), "endpoint")
        {
            return;
        }
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
        self.responder.received(index);
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
        let endpoint = &endpoints.list[index].manifest;
        let check = authorize(
            &endpoint.access,
            message.headers.as_ref(),
            self.verifier.as_deref(),
        );
        let caller = match check {
            Check::Done(Ok(caller)) => Some(caller),
            Check::Done(Err(refused)) => {
                self.auth_refused.with_label_values(&[refused.reason]).inc();
                self.responder
                    .respond(index, reply_to, encoding, started, Err(refused.error))
                    .await;
                return;
            }
            Check::NeedsKeys => None,
        };
        let incoming = TraceContext::from_headers(message.headers.as_ref());
        let mut span = if otel::enabled() {
            server_span(&message.subject, &endpoint.name, incoming.as_ref(), started)
        } else {
            None
        };
        let trace = match &span {
            Some(span) => span.context().clone(),
            None => incoming.unwrap_or_else(TraceContext::new_root),
        };
        let Some(caller) = caller else {
            // The token names a key not fetched yet: verify and run in the pool.
            let (route, access, verifier, refused) = (
                self.routes[index].clone(),
                endpoint.access.clone(),
                self.verifier.clone(),
                self.auth_refused.clone(),
            );
            let request_trace = trace.clone();
            let work = async move {
                let Some(verifier) = verifier else {
                    return Err(ServiceError::internal("no token verifier"));
                };
                let caller = authorize_fetching(&access, message.headers.as_ref(), &verifier)
                    .await
                    .map_err(|r| {
                        refused.with_label_values(&[r.reason]).inc();
                        r.error
                    })?;
                let request = Request {
                    trace: request_trace,
                    subject: message.subject,
                    headers: message.headers,
                    payload: message.payload,
                    encoding,
                    caller,
                };
                match route(request) {
                    Dispatch::Now(result) => result,
                    Dispatch::Later(work) => work.await,
                }
            };
            let job = self.job(index, &trace, work.boxed(), encoding, &reply_to, started);
            self.submit(job, span.take()).await;
            return;
        };
        let request = Request {
            trace: trace.clone(),
            subject: message.subject,
            headers: message.headers,
            payload: message.payload,
            encoding,
            caller,
        };
        let route = &self.routes[index];
        let dispatched = std::panic::catch_unwind(AssertUnwindSafe(|| {
            shop_nats::trace::sync_scope(&trace, || route(request))
        }));
        let result = match dispatched {
            Ok(Dispatch::Now(result)) => result,
            Ok(Dispatch::Later(work)) => {
                let job = self.job(index, &trace, work, encoding, &reply_to, started);
                self.submit(job, span.take()).await;
                return;
            }
            Err(panic) => {
                shop_nats::trace::sync_scope(
                    &trace,
                    || tracing::error!(endpoint = %endpoint.name, panic = %panic_message(&*panic), "handler panicked"),
                );
                Err(ServiceError::internal(
                    "internal error while handling the request",
                ))
            }
        };
        if let (Some(span), Err(err)) = (span.as_mut(), &result) {
            span.set_error(err.code, &err.message);
        }
        shop_nats::trace::scope(
            &trace,
            self.responder
                .respond(index, reply_to, encoding, started, result),
        )
        .await;
        drop(span);
    }
}

impl Dispatcher {
    /// The pool job running `work` for endpoint `index` in `trace`'s scope.
    fn job(
        &self,
        index: usize,
        trace: &TraceContext,
        work: futures::future::BoxFuture<'static, crate::request::HandlerResult>,
        encoding: Encoding,
        reply_to: &Subject,
        started: Instant,
    ) -> PoolJob {
        PoolJob {
            endpoint: index,
            work: shop_nats::trace::scope(trace, work).boxed(),
            encoding,
            reply_to: reply_to.clone(),
            started,
            permit: None,
        }
    }

    /// Hands `job` to the pool (its server span, if any, ends with the reply),
    /// or answers 503 when the pool is saturated.
    async fn submit(&self, job: PoolJob, span: Option<otel::Span>) {
        if let Some(span) = span {
            self.responder.hold_span(&job.reply_to, span);
        }
        let (index, encoding, started) = (job.endpoint, job.encoding, job.started);
        if let Err(reply_to) = self.pool.submit(job) {
            let err = ServiceError::unavailable(format!(
                "{} is busy: {} requests in progress; retry shortly",
                self.responder.endpoints.service,
                self.pool.capacity()
            ));
            self.responder
                .respond(index, reply_to, encoding, started, Err(err))
                .await;
        }
    }
}

/// The server span of one request, started when it was received.
fn server_span(
    subject: &Subject,
    endpoint: &str,
    parent: Option<&TraceContext>,
    started: Instant,
) -> Option<otel::Span> {
    let mut attributes = otel::messaging(subject.as_str(), "process");
    attributes.push(KeyValue::new("shop.endpoint", endpoint.to_string()));
    otel::start_at(
        SpanKind::Server,
        subject.to_string(),
        parent,
        attributes,
        SystemTime::now().checked_sub(started.elapsed()),
    )
}
