//! Every HTTP route as data: method, path, who may call it, what it does and
//! which service subjects it calls. The OpenAPI document, the metrics' route
//! labels and the gateway's declaration ([`declaration`]) are made from it.

use axum::http::Method;
use shop_nats::manifest::{Owns, ServiceManifest};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// A valid bearer token.
    User,
    /// A valid bearer token with the `admin` role.
    Admin,
}

/// One route: what `/api/openapi.json` and the metrics name it by.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    pub method: &'static str,
    /// The path template, as the router matches it.
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
    /// The service subjects the route calls.
    pub calls: &'static [&'static str],
}

/// Every route the gateway serves.
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec { method: "GET", path: "/api/products", access: Access::Public, summary: "List products, in id order, a page at a time", calls: &["product.list"] },
    RouteSpec { method: "POST", path: "/api/products", access: Access::Admin, summary: "Create a product", calls: &["product.create"] },
    RouteSpec { method: "GET", path: "/api/products/{id}", access: Access::Public, summary: "One product (cached; ETag / If-None-Match)", calls: &["product.get"] },
    RouteSpec { method: "PATCH", path: "/api/products/{id}", access: Access::Admin, summary: "Change a product's fields", calls: &["product.update"] },
    RouteSpec { method: "POST", path: "/api/users", access: Access::Public, summary: "Register an account", calls: &["user.register"] },
    RouteSpec { method: "POST", path: "/api/auth/login", access: Access::Public, summary: "Log in: a bearer token", calls: &["user.login"] },
    RouteSpec { method: "GET", path: "/api/users/me", access: Access::User, summary: "The caller's profile", calls: &["user.get"] },
    RouteSpec { method: "PATCH", path: "/api/users/me", access: Access::User, summary: "Change the caller's profile", calls: &["user.update"] },
    RouteSpec { method: "POST", path: "/api/orders", access: Access::User, summary: "Place an order for the caller", calls: &["order.create"] },
    RouteSpec { method: "GET", path: "/api/orders", access: Access::User, summary: "The caller's orders, newest first (admins: any user's)", calls: &["order.list"] },
    RouteSpec { method: "GET", path: "/api/orders/{id}", access: Access::User, summary: "One of the caller's orders (admins: any)", calls: &["order.get"] },
    RouteSpec { method: "POST", path: "/api/orders/{id}/cancel", access: Access::User, summary: "Cancel one of the caller's orders", calls: &["order.cancel"] },
    RouteSpec { method: "GET", path: "/api/orders/{id}/details", access: Access::User, summary: "An order with its products' current details, its payment and its customer, fetched in parallel", calls: &["order.get", "product.get", "payment.get", "user.get"] },
    RouteSpec { method: "GET", path: "/api/openapi.json", access: Access::Public, summary: "This API, as OpenAPI 3.1", calls: &[] },
    RouteSpec { method: "GET", path: "/health", access: Access::Public, summary: "Liveness for load balancers: {\"status\":\"ok\"}, or 503 when NATS is down or the gateway is stopping (details, readiness and metrics are on the admin address)", calls: &[] },
];

/// The admin listener's routes (`ADMIN_ADDR`), outside the public API and its
/// OpenAPI document: detailed health, readiness, Prometheus metrics.
pub const ADMIN_ROUTES: &[&str] = &["/health", "/ready", "/metrics"];

/// The index in [`ROUTES`] of a matched route.
pub fn route_index(method: &Method, path: &str) -> Option<usize> {
    ROUTES
        .iter()
        .position(|r| r.path == path && r.method == method.as_str())
}

/// Subjects the gateway calls outside any route: the token keys it refreshes.
pub const BACKGROUND_CALLS: &[&str] = &["user.keys"];
/// Subjects it subscribes to: product events, which invalidate its cache.
pub const SUBSCRIBES: &[&str] = &["events.product.>"];

/// The gateway as a declaration, like a service's: it serves no NATS endpoint,
/// and calls what its routes call.
pub fn declaration() -> ServiceManifest {
    let mut calls: Vec<String> = Vec::new();
    for subject in ROUTES
        .iter()
        .flat_map(|r| r.calls.iter())
        .chain(BACKGROUND_CALLS)
    {
        if !calls.iter().any(|c| c == subject) {
            calls.push(subject.to_string());
        }
    }
    ServiceManifest {
        name: "gateway".to_string(),
        description: "HTTP API in front of every service".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        endpoints: Vec::new(),
        publishes: Vec::new(),
        calls,
        subscribes: SUBSCRIBES.iter().map(|s| s.to_string()).collect(),
        consumes: Vec::new(),
        owns: Owns::default(),
    }
}

/// Whether some route (or the key refresh) declares a call to `subject`.
pub fn declares_call(subject: &str) -> bool {
    BACKGROUND_CALLS.contains(&subject) || ROUTES.iter().any(|r| r.calls.contains(&subject))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declaration_lists_each_call_once() {
        let manifest = declaration();
        assert!(manifest.calls.contains(&"payment.get".to_string()));
        let mut sorted = manifest.calls.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), manifest.calls.len());
        assert!(declares_call("user.keys") && !declares_call("payment.refund"));
    }
}
