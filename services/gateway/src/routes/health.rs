//! The public `/health` (liveness only) and `/api/openapi.json`; on the admin
//! listener the detailed `/health`, `/ready` and `/metrics`.

use std::{collections::BTreeMap, sync::Arc};

use async_nats::connection::State as ConnState;
use axum::{
    extract::State,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{json, Value};
use shop_nats::breaker::BreakerState;

use super::json_reply;
use crate::{service::Service, Gateway};

fn breaker_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
    }
}

/// Whether the gateway takes requests: connected to NATS and not stopping.
fn serving(gw: &Gateway) -> bool {
    gw.nats.connection_state() == ConnState::Connected
        && !gw.draining.load(std::sync::atomic::Ordering::SeqCst)
}

/// The public liveness check for load balancers: `{"status":"ok"}`, or 503
/// `{"status":"down"}` without NATS or while stopping. Says nothing more.
pub async fn liveness(State(gw): State<Arc<Gateway>>) -> Response {
    if serving(&gw) {
        json_reply(
            StatusCode::OK,
            bytes::Bytes::from_static(b"{\"status\":\"ok\"}"),
        )
    } else {
        json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            bytes::Bytes::from_static(b"{\"status\":\"down\"}"),
        )
    }
}

/// Admin `/ready`: 200 while serving, 503 without NATS or while stopping.
pub async fn ready(State(gw): State<Arc<Gateway>>) -> Response {
    liveness(State(gw)).await
}

/// Admin `/health`: the gateway's own state and what the registry says of every service.
pub async fn health(State(gw): State<Arc<Gateway>>) -> Response {
    let connection = gw.nats.connection_state();
    let nats_ok = connection == ConnState::Connected;
    let mut services: BTreeMap<String, Value> = BTreeMap::new();
    for service in Service::ALL {
        services.insert(
            service.name().to_string(),
            json!({
                "live": gw.downstream.liveness().live(service),
                "breaker": breaker_name(gw.downstream.breaker_state(service)),
                "timeout_ms": gw.downstream.timeout(service).as_millis() as u64,
                "instances": [],
            }),
        );
    }
    for info in gw.downstream.liveness().instances().into_values() {
        let entry = services
            .entry(info.service.clone())
            .or_insert_with(|| json!({"live": 0, "instances": []}));
        if Service::from_name(&info.service).is_none() {
            entry["live"] = json!(entry["live"].as_u64().unwrap_or(0) + 1);
        }
        if let Some(list) = entry["instances"].as_array_mut() {
            list.push(json!({
                "instance_id": info.instance_id,
                "version": info.version,
                "started_at": info.started_at,
                "admin_addr": info.admin_addr,
                "host": info.host,
            }));
        }
    }
    let degraded = Service::ALL.iter().any(|s| {
        gw.downstream.liveness().live(*s) == 0
            || gw.downstream.breaker_state(*s) == BreakerState::Open
    });
    let kids = gw.auth.key_ids();
    let status = match (nats_ok, degraded) {
        (false, _) => "down",
        (true, true) => "degraded",
        (true, false) => "ok",
    };
    let body = json!({
        "status": status,
        "service": "gateway",
        "instance_id": gw.instance_id,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": gw.started.elapsed().as_secs(),
        "checks": {
            "nats": {"status": if nats_ok { "ok" } else { "down" }, "connection": format!("{connection:?}").to_lowercase()},
            "token_keys": {"status": if kids.is_empty() { "missing" } else { "ok" }, "kids": kids},
            "cache": {"enabled": gw.cache.enabled(), "entries": gw.cache.len()},
            "rate_limit": {"enabled": gw.limiter.enabled(), "clients": gw.limiter.tracked()},
        },
        "services": services,
    });
    let code = if nats_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_reply(code, bytes::Bytes::from(body.to_string()))
}

/// Prometheus text format.
pub async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    let m = &gw.metrics;
    for service in Service::ALL {
        m.live_instances
            .with_label_values(&[service.name()])
            .set(gw.downstream.liveness().live(service) as i64);
        m.breaker_open
            .with_label_values(&[service.name()])
            .set(i64::from(
                gw.downstream.breaker_state(service) == BreakerState::Open,
            ));
    }
    m.cache_entries.set(gw.cache.len() as i64);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        m.render(),
    )
        .into_response()
}

/// The OpenAPI description, built once at start.
pub async fn openapi(State(gw): State<Arc<Gateway>>) -> Response {
    json_reply(StatusCode::OK, gw.openapi.clone())
}
