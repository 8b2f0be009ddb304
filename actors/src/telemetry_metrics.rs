//! Prometheus series about consumer lag and log publishing, in a registry of
//! their own next to the runtime's ([`crate::metrics`]), with the same
//! `service` and `instance` labels; `/metrics` serves both.

use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

#[derive(Clone)]
pub struct TelemetryMetrics {
    registry: Registry,
    /// Events of a durable consumer not yet delivered (refreshed at each scrape).
    pub consumer_pending: IntGaugeVec,
    /// Events of a durable consumer delivered and not yet acknowledged.
    pub consumer_ack_pending: IntGaugeVec,
}

impl TelemetryMetrics {
    pub fn new(service: &str, instance: &str) -> anyhow::Result<Self> {
        let labels = [
            ("service".to_string(), service.to_string()),
            ("instance".to_string(), instance.to_string()),
        ]
        .into_iter()
        .collect();
        let registry = Registry::new_custom(Some("shop".to_string()), Some(labels))?;
        let consumer_pending = IntGaugeVec::new(
            Opts::new(
                "consumer_pending_messages",
                "Events of a durable consumer not yet delivered, per consumer",
            ),
            &["consumer"],
        )?;
        let consumer_ack_pending = IntGaugeVec::new(
            Opts::new(
                "consumer_ack_pending_messages",
                "Events of a durable consumer delivered and not yet acknowledged, per consumer",
            ),
            &["consumer"],
        )?;
        registry.register(Box::new(consumer_pending.clone()))?;
        registry.register(Box::new(consumer_ack_pending.clone()))?;
        crate::telemetry::register_metrics(&registry)?;
        Ok(Self {
            registry,
            consumer_pending,
            consumer_ack_pending,
        })
    }

    /// The Prometheus text exposition of these series.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
