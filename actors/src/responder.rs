//! Replies and what they cost: each endpoint's counters (behind `$SRV.STATS`
//! and the Prometheus metrics), and the one place a reply is sent.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Instant,
};

use async_nats::{Client, HeaderMap, Subject};
use shop_nats::{
    codec::CONTENT_TYPE_HEADER, manifest::EndpointManifest, otel, Encoding, ServiceError,
};

use crate::{
    failure_log::FailureLog,
    metrics::{EndpointMetrics, Metrics},
    request::HandlerResult,
};

/// Counters behind `$SRV.STATS`.
#[derive(Debug, Default)]
pub struct EndpointStats {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub processing_ns: AtomicU64,
    pub last_error: Mutex<String>,
}

/// One endpoint as declared, with its counters.
pub struct Endpoint {
    pub manifest: EndpointManifest,
    pub stats: EndpointStats,
    pub(crate) metrics: EndpointMetrics,
    /// Which of its server-side failures get a warning (one per code a second).
    failures: FailureLog,
}

/// Every endpoint of a service, looked up by subject.
pub struct Endpoints {
    pub service: &'static str,
    pub list: Vec<Endpoint>,
    by_subject: HashMap<String, usize>,
    metrics: Metrics,
}

impl Endpoints {
    pub fn new(service: &'static str, manifests: Vec<EndpointManifest>, metrics: &Metrics) -> Self {
        let by_subject = manifests
            .iter()
            .enumerate()
            .map(|(i, m)| (m.subject.clone(), i))
            .collect();
        let list = manifests
            .into_iter()
            .map(|manifest| Endpoint {
                metrics: metrics.endpoint(&manifest.name),
                manifest,
                stats: EndpointStats::default(),
                failures: FailureLog::default(),
            })
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
            .map(|e| e.manifest.subject.clone())
            .collect()
    }

    /// The service's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn lookup(&self, subject: &str) -> Option<usize> {
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

    pub(crate) fn hold_span(&self, reply_to: &Subject, span: otel::Span) {
        if let Ok(mut spans) = self.pool_spans.lock() {
            spans.insert(reply_to.to_string(), span);
        }
    }

    fn take_span(&self, reply_to: &Subject) -> Option<otel::Span> {
        self.pool_spans.lock().ok()?.remove(reply_to.as_str())
    }

    /// Counts a request to endpoint `index` as received and in flight.
    pub(crate) fn received(&self, index: usize) {
        let metrics = &self.endpoints.list[index].metrics;
        metrics.requests.inc();
        metrics.in_flight.inc();
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
                .with_label_values(&[&endpoint.manifest.name, &err.code.to_string()])
                .inc();
            if err.code >= 500 {
                if let Some(left_out) = endpoint.failures.admit(err.code, Instant::now()) {
                    tracing::warn!(endpoint = %endpoint.manifest.name, code = err.code, error = %err.message, left_out, "request failed");
                }
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
    pub(crate) async fn reject(&self, reply_to: Subject, err: ServiceError) {
        self.endpoints
            .metrics
            .errors
            .with_label_values(&["unknown", &err.code.to_string()])
            .inc();
        self.send(reply_to, Encoding::Json, Err(err)).await;
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
