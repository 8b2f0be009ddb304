//! The HTTP API gateway. It holds no data of its own: every route becomes
//! NATS requests to the services.
//!
//! ```text
//! HTTP ─▶ front door (middleware.rs): request id, traceparent, bearer token
//!         (auth.rs), rate limit (rate_limit.rs), access log, metrics
//!      ─▶ route (routes/): products (cache.rs), users, orders, details, health
//!      ─▶ downstream.rs: live instance? breaker closed? then ServiceClient
//!         with the route's timeout, the trace and the caller headers
//! background: registry watch (liveness.rs), product events (cache.rs),
//!             key refresh (auth.rs), own registry entry (registration.rs)
//! ```

pub mod auth;
pub mod cache;
pub mod config;
pub mod context;
pub mod downstream;
pub mod error;
pub mod liveness;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod rate_limit;
pub mod registration;
pub mod request_id;
pub mod route_table;
pub mod routes;
pub mod service;

use std::{
    net::SocketAddr,
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, Instant},
};

use anyhow::Context;
use async_nats::jetstream;
use axum::serve::ListenerExt;
use bytes::Bytes;
use futures::StreamExt;
use shop_nats::{
    discovery::{InstanceInfo, Registry},
    ConnectionEvent,
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::Authenticator, cache::ProductCache, config::GatewayConfig, downstream::Downstream,
    liveness::Liveness, metrics::GatewayMetrics, rate_limit::RateLimiter,
    registration::Registration, request_id::RequestIds,
};

/// The subjects of the product stream's events.
pub const PRODUCT_EVENTS: &str = "events.product.>";
/// How often idle rate-limit buckets and expired tokens are forgotten.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Everything a request handler can reach.
pub struct Gateway {
    pub config: GatewayConfig,
    pub instance_id: String,
    pub started: Instant,
    pub nats: async_nats::Client,
    pub downstream: Arc<Downstream>,
    pub cache: Arc<ProductCache>,
    pub auth: Arc<Authenticator>,
    pub limiter: RateLimiter,
    pub metrics: Arc<GatewayMetrics>,
    pub ids: RequestIds,
    /// `/api/openapi.json`, encoded once.
    pub openapi: Bytes,
    /// Set once the gateway is stopping: `/health` and `/ready` answer 503.
    pub draining: AtomicBool,
}

/// Runs the gateway until SIGTERM/SIGINT, then stops cleanly: leaves the
/// registry, finishes in-flight requests (up to `SHUTDOWN_TIMEOUT_SECS`).
pub async fn run(config: GatewayConfig) -> anyhow::Result<()> {
    config.validate()?;
    let started = Instant::now();
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let instance_id = config.instance_id()?;
    tracing::info!(service = "gateway", instance_id, nats_url = %config.nats.url, addr = %config.addr, "starting");
    let connection = shop_nats::connect(&config.nats, "gateway", &format!("gateway-{instance_id}"))
        .await
        .context("connecting to NATS")?;
    let nats = connection.client.clone();
    let telemetry =
        shop_actors::telemetry::start("gateway", &instance_id, env!("CARGO_PKG_VERSION"), &nats)
            .context("starting telemetry")?;
    let js = jetstream::new(nats.clone());
    let registry = Registry::open_replicated(&js, config.js_replicas)
        .await
        .context("opening the registry bucket")?;
    let liveness = Arc::new(Liveness::default());
    liveness.replace(registry.list(None).await.context("reading the registry")?);
    let metrics = Arc::new(GatewayMetrics::new(&instance_id)?);
    let downstream = Arc::new(Downstream::new(
        nats.clone(),
        &config,
        liveness.clone(),
        metrics.clone(),
    ));
    let cache = Arc::new(ProductCache::new(
        config.cache,
        config.cache_max_entries,
        Duration::from_secs(config.cache_ttl_secs),
        metrics.cache.clone(),
    ));
    let auth = Arc::new(Authenticator::new(downstream.clone(), metrics.clone()));
    if let Err(e) = auth.refresh().await {
        tracing::warn!(error = %e, "token keys not loaded yet; fetched again with the first token");
    }
    let stop = CancellationToken::new();

    // Events first, so nothing stored in the cache can miss its invalidation.
    if config.cache {
        let events = nats
            .subscribe(PRODUCT_EVENTS)
            .await
            .context("subscribing to product events")?;
        nats.flush().await.context("flushing the subscription")?;
        tokio::spawn(follow_product_events(
            cache.clone(),
            events,
            connection.events(),
            stop.clone(),
        ));
    }
    tokio::spawn(liveness::follow_registry(
        liveness.clone(),
        registry.clone(),
        connection.events(),
        stop.clone(),
    ));

    let gateway = Arc::new(Gateway {
        limiter: RateLimiter::new(config.rate_limit_per_sec, config.rate_limit_burst),
        ids: RequestIds::new(&instance_id),
        openapi: Bytes::from(openapi::document().to_string()),
        config: config.clone(),
        instance_id: instance_id.clone(),
        started,
        nats: nats.clone(),
        downstream,
        cache,
        auth,
        metrics,
        draining: AtomicBool::new(false),
    });
    tokio::spawn(housekeeping(gateway.clone(), stop.clone()));

    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding GATEWAY_ADDR {}", config.addr))?;
    let addr = listener.local_addr()?;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let app = routes::router(gateway.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let server_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(server_stop.cancelled_owned())
            .await
    });
    let admin_listener = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("binding ADMIN_ADDR {}", config.admin_addr))?;
    let admin_addr = admin_listener.local_addr()?;
    let admin_app = routes::admin_router(gateway.clone());
    let admin_stop = CancellationToken::new();
    {
        let admin_stop = admin_stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(admin_listener, admin_app)
                .with_graceful_shutdown(admin_stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "admin HTTP server failed");
            }
        });
    }

    let registration = Registration::start(
        registry,
        InstanceInfo {
            service: "gateway".to_string(),
            instance_id: instance_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at,
            endpoints: Vec::new(),
            admin_addr: Some(admin_addr.to_string()),
            host: shop_actors::process::hostname(),
            pid: std::process::id(),
            nats_server: None,
        },
        nats.clone(),
    )
    .await;
    tracing::info!(
        service = "gateway",
        instance_id,
        admin_addr = %admin_addr,
        addr = %addr,
        url = %format!("http://{addr}"),
        cache = config.cache,
        rate_limit_per_sec = config.rate_limit_per_sec,
        "service ready"
    );

    let signal = shop_actors::process::shutdown_signal().await;
    tracing::info!(signal, "shutting down");
    gateway
        .draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    registration.deregister().await;
    stop.cancel();
    match tokio::time::timeout(config.shutdown_timeout(), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "HTTP server failed"),
        Ok(Err(e)) => tracing::error!(error = %e, "HTTP server task failed"),
        Err(_) => tracing::warn!("in-flight requests did not finish before the deadline"),
    }
    admin_stop.cancel();
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "stopped cleanly"
    );
    telemetry.shutdown().await;
    // With the server gone, a flush would wait for a reconnection that may never come.
    match tokio::time::timeout(Duration::from_secs(2), nats.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "flushing nats connection"),
        Err(_) => tracing::warn!("nats connection not flushed: the server is unreachable"),
    }
    Ok(())
}

/// Applies the product stream's events to the cache; clears it whenever the
/// connection drops or comes back, since events may have been missed.
async fn follow_product_events(
    cache: Arc<ProductCache>,
    mut events: async_nats::Subscriber,
    mut connection: broadcast::Receiver<ConnectionEvent>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            message = events.next() => match message {
                Some(message) => cache.on_event(message.subject.as_str(), &message.payload),
                None => {
                    tracing::error!("product event subscription ended; caching stops");
                    cache.clear();
                    return;
                }
            },
            event = connection.recv() => match event {
                Ok(change) => {
                    tracing::info!(?change, "nats connection changed; clearing the product cache");
                    cache.clear();
                }
                Err(broadcast::error::RecvError::Lagged(_)) => cache.clear(),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = stop.cancelled() => return,
        }
    }
}

/// Periodic upkeep: forgets idle rate-limit buckets and expired tokens, and
/// fetches the token keys again.
async fn housekeeping(gw: Arc<Gateway>, stop: CancellationToken) {
    let mut prune = tokio::time::interval(PRUNE_INTERVAL);
    let mut keys = tokio::time::interval(Duration::from_secs(gw.config.jwks_refresh_secs.max(1)));
    prune.tick().await;
    keys.tick().await;
    loop {
        tokio::select! {
            _ = prune.tick() => {
                gw.limiter.prune();
                gw.auth.prune();
            }
            _ = keys.tick() => {
                if let Err(e) = gw.auth.refresh().await {
                    tracing::warn!(error = %e, "refreshing token keys failed");
                }
            }
            _ = stop.cancelled() => return,
        }
    }
}
