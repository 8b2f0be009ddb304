//! `/api/openapi.json`: every route of [`ROUTES`], with its parameters, body,
//! answers and errors, as OpenAPI 3.1. Built once at start.

use serde_json::{json, Map, Value};

use crate::route_table::{Access, RouteSpec, ROUTES};

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn body(name: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema(name)}}})
}

fn answer(description: &str, name: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema(name)}}})
}

fn error(description: &str) -> Value {
    answer(description, "Error")
}

fn id_param(what: &str) -> Value {
    json!({"name": "id", "in": "path", "required": true, "description": format!("{what} id: 1-64 of A-Z a-z 0-9 - _"), "schema": {"type": "string"}})
}

fn query_param(name: &str, description: &str, kind: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": kind}})
}

/// Parameters, request body and answers of one route.
fn operation(route: &RouteSpec) -> Value {
    let page = || {
        vec![
            query_param("cursor", "next_cursor of the previous page", "string"),
            query_param("limit", "1-100, default 20", "integer"),
        ]
    };
    let (params, request, ok): (Vec<Value>, Option<Value>, (&str, Value)) = match (
        route.method,
        route.path,
    ) {
        ("GET", "/api/products") => (
            page(),
            None,
            (
                "200",
                answer(
                    "A page of products (ETag; If-None-Match gives 304)",
                    "ProductPage",
                ),
            ),
        ),
        ("POST", "/api/products") => (
            vec![],
            Some(body("NewProduct")),
            ("201", answer("The product", "Product")),
        ),
        ("GET", "/api/products/{id}") => (
            vec![id_param("product")],
            None,
            (
                "200",
                answer("The product (ETag; If-None-Match gives 304)", "Product"),
            ),
        ),
        ("PATCH", "/api/products/{id}") => (
            vec![id_param("product")],
            Some(body("ProductChange")),
            ("200", answer("The product after the change", "Product")),
        ),
        ("POST", "/api/users") => (
            vec![],
            Some(body("Registration")),
            ("201", answer("The new profile", "Profile")),
        ),
        ("POST", "/api/auth/login") => (
            vec![],
            Some(body("Login")),
            ("200", answer("A bearer token", "Token")),
        ),
        ("GET", "/api/users/me") => (
            vec![],
            None,
            ("200", answer("The caller's profile", "Profile")),
        ),
        ("PATCH", "/api/users/me") => (
            vec![],
            Some(body("ProfileChange")),
            ("200", answer("The profile after the change", "Profile")),
        ),
        ("POST", "/api/orders") => (
            vec![
                json!({"name": "Idempotency-Key", "in": "header", "required": false, "description": "used when the body has no idempotency_key", "schema": {"type": "string"}}),
            ],
            Some(body("NewOrder")),
            (
                "201",
                answer(
                    "The order, pending; the saga confirms or cancels it",
                    "Order",
                ),
            ),
        ),
        ("GET", "/api/orders") => {
            let mut params = page();
            params.push(query_param(
                "user_id",
                "whose orders (admins only; default the caller)",
                "string",
            ));
            (
                params,
                None,
                ("200", answer("A page of orders, newest first", "OrderPage")),
            )
        }
        ("GET", "/api/orders/{id}") => (
            vec![id_param("order")],
            None,
            ("200", answer("The order", "Order")),
        ),
        ("POST", "/api/orders/{id}/cancel") => (
            vec![id_param("order")],
            None,
            (
                "200",
                answer(
                    "The order, cancelling (or as it was when already cancelled)",
                    "Order",
                ),
            ),
        ),
        ("GET", "/api/orders/{id}/details") => (
            vec![id_param("order")],
            None,
            (
                "200",
                answer(
                    "The order with its parts; a part whose service is down is marked unavailable",
                    "OrderDetails",
                ),
            ),
        ),
        ("GET", "/api/openapi.json") => (
            vec![],
            None,
            ("200", json!({"description": "This document"})),
        ),
        ("GET", "/health") => (
            vec![],
            None,
            (
                "200",
                json!({"description": "{\"status\":\"ok\"}; 503 {\"status\":\"down\"} when NATS is down or the gateway is stopping. The detailed health, /ready and /metrics are served on the admin address (ADMIN_ADDR), not here"}),
            ),
        ),
        _ => (vec![], None, ("200", json!({"description": "OK"}))),
    };
    let mut responses = Map::new();
    responses.insert(ok.0.to_string(), ok.1);
    if route.path.starts_with("/api/") && route.path != "/api/openapi.json" {
        responses.insert(
            "400".into(),
            error(
                "Bad input: invalid JSON, wrong type, unknown field, body over the limit, bad id",
            ),
        );
        responses.insert(
            "429".into(),
            error("Rate limit exceeded; Retry-After says when to retry"),
        );
        responses.insert(
            "503".into(),
            error("The service behind the route has no live instance or is failing; Retry-After"),
        );
        responses.insert("504".into(), error("The service did not answer in time"));
    }
    if route.path.starts_with("/api/products") && route.method == "GET" {
        responses.insert(
            "304".into(),
            json!({"description": "Not modified (If-None-Match)"}),
        );
    }
    if route.access != Access::Public || route.path == "/api/auth/login" {
        responses.insert(
            "401".into(),
            error("Missing, malformed, expired or forged token (or, for login, wrong credentials)"),
        );
    }
    if route.access == Access::Admin || route.path.starts_with("/api/orders") {
        responses.insert(
            "403".into(),
            error("Not allowed: admins only, or another user's data"),
        );
    }
    if route.path.contains("{id}") || route.path == "/api/users/me" {
        responses.insert(
            "404".into(),
            error("No such entity (also another user's order)"),
        );
    }
    if matches!(route.method, "POST" | "PATCH") && route.path != "/api/auth/login" {
        responses.insert(
            "409".into(),
            error("Conflict: taken, stock short, revision mismatch"),
        );
    }
    let mut op = json!({
        "summary": route.summary,
        "operationId": format!("{} {}", route.method.to_lowercase(), route.path),
        "parameters": params,
        "responses": responses,
    });
    if let Some(request) = request {
        op["requestBody"] = request;
    }
    if route.access != Access::Public {
        op["security"] = json!([{"bearer": []}]);
    }
    op
}

fn schemas() -> Value {
    let error = json!({"type": "object", "properties": {"error": {"type": "object", "properties": {"code": {"type": "integer"}, "message": {"type": "string"}}}}});
    let product = json!({"type": "object", "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
        "price_cents": {"type": "integer"}, "currency": {"type": "string"}, "stock": {"type": "integer"},
        "revision": {"type": "integer"}}});
    let profile = json!({"type": "object", "properties": {
        "id": {"type": "string"}, "email": {"type": "string"}, "name": {"type": "string"},
        "roles": {"type": "array", "items": {"type": "string"}}, "created_at": {"type": "string"},
        "revision": {"type": "integer"}}});
    let order = json!({"type": "object", "properties": {
        "id": {"type": "string"}, "user_id": {"type": "string"},
        "items": {"type": "array", "items": {"type": "object", "properties": {"product_id": {"type": "string"}, "quantity": {"type": "integer"}, "price_cents": {"type": "integer"}}}},
        "total_cents": {"type": "integer"}, "currency": {"type": "string"},
        "status": {"enum": ["pending", "stock_reserved", "paid", "confirmed", "cancelling", "cancelled"]},
        "reason": {"type": ["string", "null"]}, "payment_id": {"type": ["string", "null"]},
        "created_at_ms": {"type": "integer"}, "updated_at_ms": {"type": "integer"}, "revision": {"type": "integer"}}});
    let part = |key: &str| {
        json!({"type": "object", "properties": {
        "status": {"enum": ["ok", "none", "not_found", "unavailable"]},
        key: {"type": "object"},
        "error": schema("Error")}})
    };
    json!({
        "Error": error,
        "Product": product,
        "ProductPage": {"type": "object", "properties": {"items": {"type": "array", "items": schema("Product")}, "next_cursor": {"type": ["string", "null"]}}},
        "NewProduct": {"type": "object", "required": ["name", "price_cents", "currency", "stock"], "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
            "price_cents": {"type": "integer"}, "currency": {"type": "string"}, "stock": {"type": "integer"},
            "idempotency_key": {"type": "string"}}},
        "ProductChange": {"type": "object", "properties": {
            "name": {"type": "string"}, "description": {"type": "string"}, "price_cents": {"type": "integer"},
            "currency": {"type": "string"}, "stock": {"type": "integer"}, "expected_revision": {"type": "integer"}}},
        "Registration": {"type": "object", "required": ["email", "password", "name"], "properties": {
            "email": {"type": "string"}, "password": {"type": "string", "minLength": 10}, "name": {"type": "string"}}},
        "Login": {"type": "object", "required": ["email", "password"], "properties": {"email": {"type": "string"}, "password": {"type": "string"}}},
        "Token": {"type": "object", "properties": {"token": {"type": "string"}, "token_type": {"const": "Bearer"}, "expires_at": {"type": "integer"}, "user": schema("Profile")}},
        "Profile": profile,
        "ProfileChange": {"type": "object", "properties": {"name": {"type": "string"}, "expected_revision": {"type": "integer"}}},
        "NewOrder": {"type": "object", "required": ["items", "payment_token"], "properties": {
            "items": {"type": "array", "items": {"type": "object", "required": ["product_id", "quantity"], "properties": {"product_id": {"type": "string"}, "quantity": {"type": "integer"}}}},
            "payment_token": {"type": "string"},
            "idempotency_key": {"type": "string", "description": "required here or in the Idempotency-Key header"}}},
        "Order": order,
        "OrderPage": {"type": "object", "properties": {"items": {"type": "array", "items": schema("Order")}, "next_cursor": {"type": ["string", "null"]}}},
        "OrderDetails": {"type": "object", "properties": {
            "order": schema("Order"),
            "products": {"type": "array", "items": part("product")},
            "payment": part("payment"),
            "customer": part("profile"),
            "complete": {"type": "boolean", "description": "false when any part is unavailable"}}},
    })
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let path = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        path[route.method.to_lowercase()] = operation(route);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Shop API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The shop's HTTP API. Every error is {\"error\":{\"code\",\"message\"}}. Every response carries X-Request-Id; a traceparent header is continued into the services.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (EdDSA)"}},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described_once() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let mut operations = 0;
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                operations += 1;
                assert!(
                    ROUTES
                        .iter()
                        .any(|r| r.path == path && r.method.to_lowercase() == *method),
                    "{method} {path} is not a route"
                );
                assert!(!op["responses"].as_object().unwrap().is_empty());
            }
        }
        assert_eq!(operations, ROUTES.len());
        assert_eq!(
            doc["paths"]["/api/orders"]["post"]["security"],
            json!([{"bearer": []}])
        );
        assert!(doc["paths"]["/api/products/{id}"]["get"]["security"].is_null());
        assert!(doc["paths"]["/api/products/{id}"]["patch"]["responses"]["403"].is_object());
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        for piece in text.split("#/components/schemas/").skip(1) {
            let name: String = piece.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(
                doc["components"]["schemas"][&name].is_object(),
                "missing schema {name}"
            );
        }
    }
}
