//! Prometheus metrics of one service instance, labelled with service and instance.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
/// The counter types a service's own series use (see [`Metrics::counter_vec`]).
pub use prometheus::{IntCounter, IntCounterVec};

/// Every metric the runtime exports. Per-endpoint series are resolved once per
/// endpoint (see [`EndpointMetrics`]) so the hot path does no label lookups.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub errors: IntCounterVec,
    pub latency: HistogramVec,
    pub in_flight: IntGaugeVec,
    pub pool_busy: IntGauge,
    pub pool_capacity: IntGauge,
    pub pool_rejected: IntCounter,
    pub actor_restarts: IntCounterVec,
    pub state_applied_revision: IntGauge,
    pub state_lag: IntGauge,
    pub state_events_applied: IntCounter,
    pub state_events_parked: IntCounterVec,
    pub events_consumed: IntCounterVec,
    /// Per consumer and phase (`wait`: stored → handled, `handle`).
    pub event_duration: HistogramVec,
    pub dead_letters: IntCounterVec,
    pub consumer_reopened: IntCounterVec,
    pub replies_refused: IntCounterVec,
    pub auth_refused: IntCounterVec,
}

/// The series of one endpoint.
#[derive(Clone)]
pub struct EndpointMetrics {
    pub requests: IntCounter,
    pub latency: prometheus::Histogram,
    pub in_flight: IntGauge,
}

impl Metrics {
    pub fn new(service: &str, instance: &str) -> anyhow::Result<Self> {
        let mut labels = std::collections::HashMap::new();
        labels.insert("service".to_string(), service.to_string());
        labels.insert("instance".to_string(), instance.to_string());
        let registry = Registry::new_custom(Some("shop".to_string()), Some(labels))?;
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Requests received, per endpoint"),
            &["endpoint"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "request_errors_total",
                "Requests answered with an error, per endpoint and code",
            ),
            &["endpoint", "code"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from receiving a request to sending its reply",
            )
            .buckets(vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 0.5, 1.0, 2.5,
            ]),
            &["endpoint"],
        )?;
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "requests_in_flight",
                "Requests received and not yet answered",
            ),
            &["endpoint"],
        )?;
        let pool_busy = IntGauge::new("pool_busy", "Worker-pool jobs running or queued")?;
        let pool_capacity = IntGauge::new(
            "pool_capacity",
            "Worker-pool jobs allowed at once (workers + queue); busy/capacity is saturation",
        )?;
        let pool_rejected = IntCounter::new(
            "pool_rejected_total",
            "Requests answered 503 because the worker pool was saturated",
        )?;
        let actor_restarts = IntCounterVec::new(
            Opts::new(
                "actor_restarts_total",
                "Supervised actor restarts, per actor",
            ),
            &["actor"],
        )?;
        let state_applied_revision = IntGauge::new(
            "state_applied_revision",
            "Last stream sequence applied to the local store",
        )?;
        let state_lag = IntGauge::new(
            "state_lag_messages",
            "Stream messages not yet applied to the local store",
        )?;
        let state_events_applied = IntCounter::new(
            "state_events_applied_total",
            "Stream events applied to the local store since start",
        )?;
        let state_events_parked = IntCounterVec::new(
            Opts::new(
                "state_events_parked_total",
                "Stream events the local store could not apply, parked and skipped, per reason (undecodable, wrong_aggregate, invalid)",
            ),
            &["reason"],
        )?;
        let events_consumed = IntCounterVec::new(
            Opts::new("events_consumed_total", "Events handled by durable consumers, per consumer and outcome (ok, retry, dead_letter)"),
            &["consumer", "outcome"],
        )?;
        let event_duration = HistogramVec::new(
            HistogramOpts::new(
                "event_duration_seconds",
                "Durable consumers: per consumer, how long an event waited from being stored to being handled (phase wait, first delivery only) and how long handling it took (phase handle)",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["consumer", "phase"],
        )?;
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "dead_letters_total",
                "Events moved to the DEADLETTER stream after their last attempt, per consumer",
            ),
            &["consumer"],
        )?;
        let consumer_reopened = IntCounterVec::new(
            Opts::new(
                "consumer_reopened_total",
                "Consumers opened again after losing their server (missed heartbeats, a leader change, a lost connection), per consumer (a durable name, or state for the state actor's)",
            ),
            &["consumer"],
        )?;
        let replies_refused = IntCounterVec::new(
            Opts::new(
                "replies_refused_total",
                "Requests left unanswered because their reply subject is outside the inbox prefix (REPLY_PREFIX), per source (endpoint, srv)",
            ),
            &["source"],
        )?;
        let auth_refused = IntCounterVec::new(
            Opts::new(
                "auth_refused_total",
                "Requests refused by the access check, per reason (no_token, bad_header, expired, bad_signature, unknown_key, claims, malformed, algorithm, not_yet_valid, forbidden, keys_unavailable)",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(replies_refused.clone()))?;
        registry.register(Box::new(auth_refused.clone()))?;
        registry.register(Box::new(events_consumed.clone()))?;
        registry.register(Box::new(event_duration.clone()))?;
        registry.register(Box::new(dead_letters.clone()))?;
        registry.register(Box::new(consumer_reopened.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(pool_busy.clone()))?;
        registry.register(Box::new(pool_capacity.clone()))?;
        registry.register(Box::new(pool_rejected.clone()))?;
        registry.register(Box::new(actor_restarts.clone()))?;
        registry.register(Box::new(state_applied_revision.clone()))?;
        registry.register(Box::new(state_lag.clone()))?;
        registry.register(Box::new(state_events_applied.clone()))?;
        registry.register(Box::new(state_events_parked.clone()))?;
        Ok(Self {
            registry,
            requests,
            errors,
            latency,
            in_flight,
            pool_busy,
            pool_capacity,
            pool_rejected,
            actor_restarts,
            state_applied_revision,
            state_lag,
            state_events_applied,
            state_events_parked,
            events_consumed,
            event_duration,
            dead_letters,
            consumer_reopened,
            replies_refused,
            auth_refused,
        })
    }

    /// Registers a counter of the service's own (exported as `shop_<name>`,
    /// labelled with service and instance like every other series).
    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> anyhow::Result<IntCounterVec> {
        let counter = IntCounterVec::new(Opts::new(name, help), labels)?;
        self.registry.register(Box::new(counter.clone()))?;
        Ok(counter)
    }

    pub fn endpoint(&self, name: &str) -> EndpointMetrics {
        EndpointMetrics {
            requests: self.requests.with_label_values(&[name]),
            latency: self.latency.with_label_values(&[name]),
            in_flight: self.in_flight.with_label_values(&[name]),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
