//! Admin HTTP: `GET /health` (JSON with every dependency), `GET /ready`
//! (200 only when serving), `GET /metrics` (Prometheus text format).

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

use crate::{metrics::Metrics, state::StateShared};

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
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        admin.metrics.render(),
    )
}

async fn health(State(admin): State<Arc<AdminState>>) -> impl IntoResponse {
    let nats_state = admin.nats.connection_state();
    let nats_ok = nats_state == ConnState::Connected;
    let stream_last =
        tokio::time::timeout(Duration::from_secs(1), admin.state.stream_last_sequence()).await;
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
            "state": {"applied_revision": applied, "flushed_revision": admin.state.flushed_revision(), "lag": lag},
        },
    });
    (code, Json(body))
}
