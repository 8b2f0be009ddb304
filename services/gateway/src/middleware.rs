//! The front door every request passes: request id, trace context, bearer
//! token, rate limit, then the route; afterwards the response headers, the
//! metrics and one structured access-log line. Trace handling lives only here
//! (the gateway's span is a child of the incoming `traceparent`, or a new
//! trace), so spans can be hooked in at one place.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderMap, HeaderName},
    middleware::Next,
    response::{IntoResponse, Response},
};
use shop_nats::{otel, TraceContext};

use crate::{
    auth::{bearer, Bearer},
    config::TrustedProxies,
    context::{Identity, RequestContext},
    error::{retry_after_secs, ApiError},
    rate_limit::ClientKey,
    request_id::REQUEST_ID_HEADER,
    route_table::{route_index, ROUTES},
    Gateway,
};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub async fn front_door(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let request_id = gw.ids.for_request(request.headers().get(REQUEST_ID_HEADER));
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| route_index(request.method(), p.as_str()));
    let parent = {
        let header = |name: &HeaderName| request.headers().get(name).and_then(|v| v.to_str().ok());
        shop_actors::telemetry::http_parent(header(&TRACEPARENT), header(&TRACESTATE))
    };
    let mut span = if otel::enabled() {
        let template = route.map_or("unmatched", |i| ROUTES[i].path);
        otel::start(
            otel::SpanKind::Server,
            format!("{} {template}", request.method()),
            parent.as_ref(),
            vec![
                otel::KeyValue::new("http.request.method", request.method().to_string()),
                otel::KeyValue::new("http.route", template),
            ],
        )
    } else {
        None
    };
    let trace = match &span {
        Some(span) => span.context().clone(),
        None => parent.map_or_else(TraceContext::new_root, |p| p.child()),
    };
    let method = request.method().clone();
    let uri = request.uri().clone();
    let client = client_addr(request.headers(), peer.ip(), &gw.config.trusted_proxies);
    let api = uri.path().starts_with("/api/");

    let identity: Result<Option<Arc<Identity>>, ApiError> = if api {
        match bearer(request.headers()) {
            Bearer::None => Ok(None),
            Bearer::Invalid(why) => {
                gw.auth.count_refusal("malformed");
                Err(ApiError::unauthorized(why))
            }
            Bearer::Token(token) => gw.auth.authenticate(token).await.map(|i| Some(Arc::new(i))),
        }
    } else {
        Ok(None)
    };
    let ctx = Arc::new(RequestContext {
        request_id: request_id.clone(),
        trace,
        identity: identity.as_ref().ok().cloned().flatten(),
    });
    let addr_key = ClientKey::Addr(client);
    let limit_key = ctx
        .identity
        .as_ref()
        .map_or(&addr_key, |identity| &identity.client_key);
    let limited = if api {
        gw.limiter.check(limit_key)
    } else {
        Ok(())
    };

    let mut response = match (limited, identity) {
        (Err(wait), _) => {
            gw.metrics.rate_limited.inc();
            ApiError::too_many_requests(
                format!(
                    "rate limit exceeded; retry after {} s",
                    retry_after_secs(wait)
                ),
                wait,
            )
            .into_response()
        }
        (Ok(()), Err(refused)) => refused.into_response(),
        (Ok(()), Ok(_)) => {
            request.extensions_mut().insert(ctx.clone());
            shop_nats::trace::scope(&ctx.trace, next.run(request)).await
        }
    };
    response.headers_mut().insert(REQUEST_ID_HEADER, request_id);
    let status = response.status().as_u16();
    if let Some(span) = span.as_mut() {
        span.set_attribute(otel::KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            span.set_error(status, "server error");
        }
    }
    drop(span);
    let elapsed = started.elapsed();
    gw.metrics.observe(route, status, elapsed.as_secs_f64());
    // In the request's trace scope, so the published record carries its trace id.
    shop_nats::trace::sync_scope(&ctx.trace, || {
        tracing::info!(
            target: "gateway::access",
            request_id = ctx.request_id.to_str().unwrap_or_default(),
            method = method.as_str(),
            path = uri.path(),
            route = route.map_or("-", |i| ROUTES[i].path),
            status,
            duration_us = elapsed.as_micros() as u64,
            client = %client,
            user_id = ctx.identity.as_ref().map_or("", |i| i.user_id()),
            trace_id = ctx.trace.trace_id(),
            "request"
        )
    });
    response
}

/// The client's address. A request from a trusted proxy is traced back through
/// `X-Forwarded-For` from the right (the end the proxies append to), past every
/// trusted proxy, to the first address that is not one: that is the client. The
/// entries to its left are whatever the client wrote and mean nothing. A
/// request from anyone else is its peer, whatever its headers say.
fn client_addr(headers: &HeaderMap, peer: IpAddr, trusted: &TrustedProxies) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all(FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        let Ok(addr) = hop.trim().parse::<IpAddr>() else {
            // Unreadable: the hop before it (a trusted proxy) is as far as we can see.
            return client;
        };
        client = addr;
        if !trusted.contains(&addr) {
            return addr;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use axum::http::HeaderValue;

    use super::*;

    fn trusted(list: &str) -> TrustedProxies {
        <crate::config::GatewayConfig as clap::Parser>::parse_from([
            "gateway",
            "--trusted-proxies",
            list,
        ])
        .trusted_proxies
    }

    fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn forwarded(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(FORWARDED_FOR, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy() {
        let proxy = ip(10, 0, 0, 1);
        let headers = forwarded("203.0.113.7");
        assert_eq!(
            client_addr(&headers, proxy, &TrustedProxies::default()),
            proxy
        );
        assert_eq!(
            client_addr(&headers, ip(198, 51, 100, 9), &trusted("10.0.0.0/8")),
            ip(198, 51, 100, 9)
        );
        assert_eq!(
            client_addr(&headers, proxy, &trusted("10.0.0.0/8")),
            ip(203, 0, 113, 7)
        );
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop_not_what_it_wrote() {
        let proxies = trusted("10.0.0.0/8, 192.0.2.10");
        // The client wrote 1.2.3.4 itself; the edge proxy appended its real address.
        let headers = forwarded("1.2.3.4, 203.0.113.7, 192.0.2.10");
        assert_eq!(
            client_addr(&headers, ip(10, 0, 0, 1), &proxies),
            ip(203, 0, 113, 7)
        );
        let mut two = HeaderMap::new();
        two.append(FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        two.append(FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        assert_eq!(
            client_addr(&two, ip(10, 0, 0, 1), &proxies),
            ip(203, 0, 113, 7)
        );
        // Garbage stops the walk at the last proxy that wrote a readable hop.
        let garbage = forwarded("203.0.113.7, garbage, 10.1.1.1");
        assert_eq!(
            client_addr(&garbage, ip(10, 0, 0, 1), &proxies),
            ip(10, 1, 1, 1)
        );
        // Nothing but proxies: the leftmost of them.
        let proxies_only = forwarded("10.9.9.9");
        assert_eq!(
            client_addr(&proxies_only, ip(10, 0, 0, 1), &proxies),
            ip(10, 9, 9, 9)
        );
        assert!(
            <crate::config::GatewayConfig as clap::Parser>::try_parse_from([
                "gateway",
                "--trusted-proxies",
                "nope"
            ])
            .is_err()
        );
    }
}
