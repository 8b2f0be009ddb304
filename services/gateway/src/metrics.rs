//! Prometheus metrics of the gateway. Per-route series are resolved once at
//! start, so a request does no label lookups.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::{cache::CacheStats, route_table::ROUTES};

/// The series of one route (or of unmatched requests).
struct RouteSeries {
    /// Responses by status class: 1xx .. 5xx.
    responses: [IntCounter; 5],
    latency: Histogram,
}

/// Every metric the gateway exports.
pub struct GatewayMetrics {
    registry: Registry,
    /// Index `i` is `ROUTES[i]`; the last one is for requests no route matched.
    routes: Vec<RouteSeries>,
    pub rate_limited: IntCounter,
    pub auth_failures: IntCounterVec,
    pub downstream_errors: IntCounterVec,
    pub cache: CacheStats,
    pub cache_entries: IntGauge,
    pub live_instances: IntGaugeVec,
    pub breaker_open: IntGaugeVec,
}

impl GatewayMetrics {
    pub fn new(instance: &str) -> anyhow::Result<Self> {
        let labels = [
            ("service".to_string(), "gateway".to_string()),
            ("instance".to_string(), instance.to_string()),
        ]
        .into_iter()
        .collect();
        let registry = Registry::new_custom(Some("shop".to_string()), Some(labels))?;
        let responses = IntCounterVec::new(
            Opts::new(
                "gateway_http_responses_total",
                "HTTP responses, per route (method and path template) and status class",
            ),
            &["route", "status"],
        )?;
        let latency = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "gateway_http_request_duration_seconds",
                "Time from receiving an HTTP request to sending its response head, per route",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0,
            ]),
            &["route"],
        )?;
        registry.register(Box::new(responses.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        let mut routes: Vec<RouteSeries> = Vec::with_capacity(ROUTES.len() + 1);
        let names = ROUTES
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .chain(["unmatched".to_string()]);
        for name in names {
            let class = |c: &str| responses.with_label_values(&[name.as_str(), c]);
            routes.push(RouteSeries {
                responses: [
                    class("1xx"),
                    class("2xx"),
                    class("3xx"),
                    class("4xx"),
                    class("5xx"),
                ],
                latency: latency.with_label_values(&[name.as_str()]),
            });
        }
        let counter = |name: &str, help: &str| -> anyhow::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let rate_limited = counter(
            "gateway_rate_limited_total",
            "Requests refused with 429 by the gateway's rate limit",
        )?;
        let cache_hits = counter(
            "gateway_cache_hits_total",
            "Product reads answered from the cache",
        )?;
        let cache_misses = counter(
            "gateway_cache_misses_total",
            "Product reads that asked the product service",
        )?;
        let cache_invalidations = counter(
            "gateway_cache_invalidations_total",
            "Products marked stale by an event or a write",
        )?;
        let cache_clears = counter(
            "gateway_cache_clears_total",
            "Whole-cache clears (reconnects, unreadable events, overflow)",
        )?;
        let cache_entries = IntGauge::new("gateway_cache_entries", "Entries in the product cache")?;
        registry.register(Box::new(cache_entries.clone()))?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "gateway_auth_failures_total",
                "Requests refused with 401, per reason",
            ),
            &["reason"],
        )?;
        let downstream_errors = IntCounterVec::new(
            Opts::new(
                "gateway_downstream_errors_total",
                "Calls to services that failed, per service and code (503 includes no live instance and open breaker)",
            ),
            &["service", "code"],
        )?;
        let live_instances = IntGaugeVec::new(
            Opts::new(
                "gateway_live_instances",
                "Live instances per service, as the registry says",
            ),
            &["target"],
        )?;
        let breaker_open = IntGaugeVec::new(
            Opts::new(
                "gateway_breaker_open",
                "1 while the circuit breaker of a service is open",
            ),
            &["target"],
        )?;
        registry.register(Box::new(auth_failures.clone()))?;
        registry.register(Box::new(downstream_errors.clone()))?;
        registry.register(Box::new(live_instances.clone()))?;
        shop_actors::telemetry::register_metrics(&registry)?;
        registry.register(Box::new(breaker_open.clone()))?;
        Ok(Self {
            registry,
            routes,
            rate_limited,
            auth_failures,
            downstream_errors,
            cache: CacheStats {
                hits: cache_hits,
                misses: cache_misses,
                invalidations: cache_invalidations,
                clears: cache_clears,
            },
            cache_entries,
            live_instances,
            breaker_open,
        })
    }

    /// Records one response of route `route` (an index into `ROUTES`, or `None`).
    pub fn observe(&self, route: Option<usize>, status: u16, seconds: f64) {
        let series = &self.routes[route.unwrap_or(self.routes.len() - 1)];
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        series.responses[class].inc();
        series.latency.observe(seconds);
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
