//! Calls to the services: one shared NATS client, a timeout and a circuit
//! breaker per service, and the registry's view of live instances. A service
//! with no live instance, or with an open breaker, is answered 503 with
//! `Retry-After` at once, without sending anything.

use std::{sync::Arc, time::Duration};

use async_nats::HeaderMap;
use bytes::Bytes;
use shop_nats::{
    breaker::{BreakerConfig, BreakerState, CircuitBreaker},
    CallOptions, ServiceClient, TraceContext,
};

use crate::{
    config::GatewayConfig, context::Identity, error::ApiError, liveness::Liveness,
    metrics::GatewayMetrics, route_table, service::Service,
};

/// The gateway's way to every service.
pub struct Downstream {
    client: ServiceClient,
    liveness: Arc<Liveness>,
    breakers: [Arc<CircuitBreaker>; Service::ALL.len()],
    timeouts: [Duration; Service::ALL.len()],
    open_for: Duration,
    metrics: Arc<GatewayMetrics>,
    no_headers: HeaderMap,
}

impl Downstream {
    pub fn new(
        nats: async_nats::Client,
        config: &GatewayConfig,
        liveness: Arc<Liveness>,
        metrics: Arc<GatewayMetrics>,
    ) -> Self {
        let client = ServiceClient::with_breaker_config(
            nats,
            BreakerConfig {
                failure_threshold: config.breaker_failures,
                open_for: config.breaker_open_for(),
            },
        );
        Self {
            breakers: Service::ALL.map(|s| client.breaker(s.name())),
            timeouts: Service::ALL.map(|s| config.timeout(s)),
            open_for: config.breaker_open_for(),
            client,
            liveness,
            metrics,
            no_headers: HeaderMap::new(),
        }
    }

    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    pub fn breaker_state(&self, service: Service) -> BreakerState {
        self.breakers[service.index()].state()
    }

    pub fn timeout(&self, service: Service) -> Duration {
        self.timeouts[service.index()]
    }

    /// Whether `service` would be refused right now (no live instance or open breaker).
    pub fn refusal(&self, service: Service) -> Option<ApiError> {
        if self.liveness.live(service) == 0 {
            return Some(ApiError::unavailable(
                format!("{service} service unavailable: no live instance"),
                Duration::from_secs(1),
            ));
        }
        if self.breaker_state(service) == BreakerState::Open {
            return Some(ApiError::unavailable(
                format!("{service} service unavailable: failing, circuit open"),
                self.open_for,
            ));
        }
        None
    }

    /// Sends `payload` to `subject` on behalf of `identity` (its headers go
    /// along; `None` for public data), with the request's trace. The subject
    /// must be one the gateway declares ([`crate::route_table`]); its first
    /// token names the service. Returns the reply's bytes, or the error as the
    /// HTTP caller should see it.
    pub async fn call(
        &self,
        subject: &str,
        payload: Bytes,
        trace: &TraceContext,
        identity: Option<&Identity>,
    ) -> Result<Bytes, ApiError> {
        let service = subject
            .split('.')
            .next()
            .and_then(Service::from_name)
            .filter(|_| route_table::declares_call(subject))
            .ok_or_else(|| {
                ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the gateway does not declare a call to {subject}"),
                )
            })?;
        if let Some(refused) = self.refusal(service) {
            self.count_error(service, 503);
            return Err(refused);
        }
        let options = CallOptions::default()
            .timeout(self.timeout(service))
            .retries(0);
        let headers = identity.map_or(&self.no_headers, |i| &i.headers);
        match self
            .client
            .call_raw_with_headers(subject, payload, options, Some(trace), headers)
            .await
        {
            Ok(reply) => Ok(reply.payload),
            Err(err) => {
                self.count_error(service, err.code);
                Err(ApiError::from_service(service, err))
            }
        }
    }

    fn count_error(&self, service: Service, code: u16) {
        let code = match code {
            400 => "400",
            401 => "401",
            403 => "403",
            404 => "404",
            409 => "409",
            429 => "429",
            503 => "503",
            504 => "504",
            _ => "other",
        };
        self.metrics
            .downstream_errors
            .with_label_values(&[service.name(), code])
            .inc();
    }
}
