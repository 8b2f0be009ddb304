//! Admin HTTP: `GET /health` (JSON with every dependency: NATS, JetStream, the
//! store, the state's lag, each durable consumer's lag, log publishing and span
//! export), `GET /ready` (200 only when serving), `GET /metrics` (Prometheus
//! text format).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use async_nats::{connection::State as ConnState, Client};
use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{
    consumer::consumer_lag, metrics::Metrics, state::StateShared,
    telemetry_metrics::TelemetryMetrics,
};

/// Longest a health check waits for the server's answer about one consumer.
const CONSUMER_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Same, when refreshing the consumer gauges for a scrape.
const CONSUMER_SCRAPE_TIMEOUT: Duration = Duration::from_millis(500);

/// A durable consumer the instance runs, for its lag.
#[derive(Debug, Clone)]
pub struct ConsumerRef {
    pub durable: String,
    pub stream: String,
}

/// What the admin endpoints report on.
pub struct AdminState {
    pub service: &'static str,
    pub instance_id: String,
    pub version: &'static str,
    pub started: Instant,
    pub nats: Client,
    pub state: Arc<StateShared>,
    pub metrics: Metrics,
    /// True once the state has caught up and endpoints are serving; false while draining.
    pub ready: Arc<AtomicBool>,
    /// Durable consumers whose lag `/health` and `/metrics` report.
    pub consumers: Vec<ConsumerRef>,
    pub telemetry: TelemetryMetrics,
}

/// Binds the admin listener and serves until `stop` is cancelled. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    admin: Arc<AdminState>,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding admin HTTP on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(admin);
    tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = server.await {
            tracing::error!(error = %e, "admin HTTP server failed");
        }
    });
    Ok(bound)
}

async fn ready(State(admin): State<Arc<AdminState>>) -> impl IntoResponse {
    let connected = admin.nats.connection_state() == ConnState::Connected;
    if admin.ready.load(Ordering::Relaxed) && connected {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(admin): State<Arc<AdminState>>) -> impl IntoResponse {
    consumer_checks(&admin, CONSUMER_SCRAPE_TIMEOUT).await;
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        admin.metrics.render() + &admin.telemetry.render(),
    )
}

/// Each consumer's lag from the server (concurrently, each bounded by
/// `timeout`), also written to the consumer gauges.
async fn consumer_checks(admin: &AdminState, timeout: Duration) -> Vec<serde_json::Value> {
    let checks = admin.consumers.iter().map(|consumer| async move {
        let lag = tokio::time::timeout(
            timeout,
            consumer_lag(&admin.state.js, &consumer.stream, &consumer.durable),
        )
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} ms", timeout.as_millis())));
        match lag {
            Ok(lag) => {
                let pending = i64::try_from(lag.pending).unwrap_or(i64::MAX);
                let ack_pending = i64::try_from(lag.ack_pending).unwrap_or(i64::MAX);
                admin
                    .telemetry
                    .consumer_pending
                    .with_label_values(&[&consumer.durable])
                    .set(pending);
                admin
                    .telemetry
                    .consumer_ack_pending
                    .with_label_values(&[&consumer.durable])
                    .set(ack_pending);
                json!({
                    "durable": consumer.durable, "stream": consumer.stream, "status": "ok",
                    "pending": lag.pending, "ack_pending": lag.ack_pending, "redelivered": lag.redelivered,
                })
            }
            Err(error) => json!({
                "durable": consumer.durable, "stream": consumer.stream, "status": "unavailable", "error": error,
            }),
        }
    });
    futures::future::join_all(checks).await
}

async fn health(State(admin): State<Arc<AdminState>>) -> impl IntoResponse {
    let nats_state = admin.nats.connection_state();
    let nats_ok = nats_state == ConnState::Connected;
    let (stream_last, consumers) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(1), admin.state.stream_last_sequence()),
        consumer_checks(&admin, CONSUMER_CHECK_TIMEOUT),
    );
    let (js_ok, js_detail, stream_last) = match stream_last {
        Ok(Ok(last)) => (
            true,
            json!({"status": "ok", "stream": admin.state.stream, "last_sequence": last}),
            Some(last),
        ),
        Ok(Err(e)) => (
            false,
            json!({"status": "down", "stream": admin.state.stream, "error": e.message}),
            None,
        ),
        Err(_) => (
            false,
            json!({"status": "down", "stream": admin.state.stream, "error": "no answer within 1 s"}),
            None,
        ),
    };
    let handle = admin.state.handle();
    let applied = handle.applied();
    let lag = stream_last
        .map(|last| last.saturating_sub(applied))
        .unwrap_or(handle.lag());
    let store_ok = admin.state.store.checkpoint().is_ok();
    let ready = admin.ready.load(Ordering::Relaxed);
    let status = if nats_ok && js_ok && store_ok && ready {
        "ok"
    } else if store_ok {
        "degraded"
    } else {
        "down"
    };
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": status,
        "service": admin.service,
        "instance_id": admin.instance_id,
        "version": admin.version,
        "uptime_secs": admin.started.elapsed().as_secs(),
        "ready": ready,
        "checks": {
            "nats": {"status": if nats_ok { "ok" } else { "down" }, "connection": format!("{nats_state:?}").to_lowercase()},
            "jetstream": js_detail,
            "store": {"status": if store_ok { "ok" } else { "down" }, "size_bytes": admin.state.store.size_on_disk()},
            "state": {"status": if lag == 0 { "ok" } else { "behind" }, "applied_revision": applied, "flushed_revision": admin.state.flushed_revision(), "lag": lag},
            "consumers": consumers,
            "telemetry": crate::telemetry::health(),
        },
    });
    (code, Json(body))
}
