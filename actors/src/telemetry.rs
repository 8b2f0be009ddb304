//! Telemetry of every shop binary, set up in one place:
//!
//! - structured logs through `tracing` to stderr (stdout stays free for a
//!   command's own output): `LOG_FORMAT=json|pretty`, filter from `RUST_LOG`;
//! - the same records, at or above `LOG_PUBLISH_LEVEL`, published to
//!   `logs.<service>.<instance>` and kept in the `LOGS` stream
//!   ([`crate::log_publisher`]); each carries the id of the trace it belongs to;
//! - OpenTelemetry spans exported over OTLP/HTTP when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set ([`crate::otlp`], [`shop_nats::otel`]);
//!   nothing is created or exported when it is not.
//!
//! Every binary calls [`init`] first thing in `main`. [`crate::run`] then calls
//! [`start`] once it is connected and knows its name and instance id, and shuts
//! the returned guard down when it stops. A binary that does not run on
//! [`crate::run`] (the gateway) does the same:
//!
//! ```ignore
//! shop_actors::telemetry::init(&config.log_format); // in main
//! // ... connect to NATS, choose the instance id ...
//! let telemetry = shop_actors::telemetry::start("gateway", &instance_id, env!("CARGO_PKG_VERSION"), &nats)?;
//! // ... serve until SIGTERM ...
//! telemetry.shutdown().await; // exports pending spans, publishes buffered records
//! ```

use std::time::Duration;

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

pub use crate::log_publisher::{LogPublishSettings, LOGS_STREAM, LOGS_SUBJECTS};

/// Time allowed at shutdown to export pending spans and publish buffered records.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Publishing settings from the environment; an invalid value is reported on
/// stderr and the default used, so a typo never stops a service from starting.
fn publish_settings() -> LogPublishSettings {
    LogPublishSettings::from_vars(|name| std::env::var(name).ok()).unwrap_or_else(|e| {
        eprintln!("telemetry: {e}; using the defaults");
        LogPublishSettings::default()
    })
}

/// Installs the global subscriber (stderr logs and, unless `LOG_PUBLISH_LEVEL=off`,
/// the capture of records for publishing); call once at the start of `main`.
pub fn init(log_format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let capture = crate::log_publisher::capture_layer(&publish_settings());
    let registry = tracing_subscriber::registry().with(filter).with(capture);
    let result = if log_format.eq_ignore_ascii_case("json") {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}

/// Starts what needs the binary's identity and connection: span export (when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set) and log publishing on `nats`. Must run
/// inside a Tokio runtime; fails only on an invalid OpenTelemetry configuration.
/// Keep the guard and `shutdown().await` it before exiting (dropping it flushes
/// spans but may lose the last buffered log records).
pub fn start(
    service: &str,
    instance: &str,
    version: &str,
    nats: &async_nats::Client,
) -> anyhow::Result<TelemetryGuard> {
    if let Some(endpoint) = crate::otlp::install(service, instance, version)? {
        tracing::info!(endpoint, "exporting spans over OTLP");
    }
    crate::log_publisher::start(service, instance, nats);
    Ok(TelemetryGuard { flushed: false })
}

/// Registers the log publisher's counters (`log_records_dropped_total`,
/// `log_records_published_total`) in `registry`, for binaries with their own metrics.
pub fn register_metrics(registry: &prometheus::Registry) -> prometheus::Result<()> {
    let counters = crate::log_publisher::counters();
    registry.register(Box::new(counters.dropped.clone()))?;
    registry.register(Box::new(counters.published.clone()))?;
    Ok(())
}

/// What `/health` says about telemetry: log publishing and span export.
pub fn health() -> serde_json::Value {
    serde_json::json!({
        "log_publisher": crate::log_publisher::health(),
        "tracing": {
            "status": if crate::otlp::active() { "exporting" } else { "off" },
            "endpoint": crate::otlp::endpoint_from_env(|name| std::env::var(name).ok())
                .map(|e| crate::otlp::redacted(&e)),
        },
    })
}

/// Flushes telemetry when the binary stops; see [`start`].
#[must_use = "telemetry is flushed when the guard is shut down or dropped"]
pub struct TelemetryGuard {
    flushed: bool,
}

impl TelemetryGuard {
    /// Exports pending spans and publishes buffered log records (bounded in time).
    pub async fn shutdown(mut self) {
        if crate::otlp::active() {
            let exported = tokio::task::spawn_blocking(|| crate::otlp::shutdown(FLUSH_TIMEOUT));
            let _ = tokio::time::timeout(FLUSH_TIMEOUT + Duration::from_secs(1), exported).await;
        }
        crate::log_publisher::flush(FLUSH_TIMEOUT).await;
        self.flushed = true;
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if self.flushed {
            return;
        }
        crate::log_publisher::stop();
        if crate::otlp::active() {
            // The exporter runs on its own thread; waiting here is bounded.
            let _ = std::thread::spawn(|| crate::otlp::shutdown(FLUSH_TIMEOUT)).join();
        }
    }
}

/// The parent of an incoming HTTP request's span: its `traceparent` and
/// `tracestate` header values, when well formed.
pub fn http_parent(
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> Option<shop_nats::TraceContext> {
    shop_nats::TraceContext::parse(traceparent?).map(|t| t.with_state(tracestate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_parent_needs_a_valid_traceparent() {
        let parent = http_parent(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("v=1"),
        )
        .unwrap();
        assert_eq!(parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.tracestate(), Some("v=1"));
        assert!(http_parent(Some("garbage"), None).is_none());
        assert!(http_parent(None, Some("v=1")).is_none());
    }
}
