//! The whole shop through the gateway over real HTTP: register, log in,
//! browse, order, see it confirmed and in detail; ownership; admin routes;
//! the product cache and its invalidation; bad input; request ids, trace
//! context, access log, metrics and the OpenAPI document.

mod common;

use std::time::{Duration, Instant};

use common::{Shop, PASSWORD};
use hyper::Method;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_shops_through_the_gateway() {
    let shop = Shop::full(&[
        ("GATEWAY_RATE_LIMIT_PER_SEC", "0"),
        ("GATEWAY_MAX_BODY_BYTES", "4096"),
    ])
    .await;
    let http = &shop.http;

    let health = shop
        .health_when(|h| {
            h["services"]["order"]["live"] == 1 && h["services"]["gateway"]["live"] == 1
        })
        .await;
    assert_eq!(health["status"], "ok", "{health}");
    for service in ["product", "user", "payment", "notification", "order"] {
        assert_eq!(health["services"][service]["live"], 1, "{health}");
        assert_eq!(health["services"][service]["breaker"], "closed");
    }
    assert_eq!(health["services"]["gateway"]["live"], 1, "registers itself");

    // Admin-only routes.
    let admin = shop.admin_token().await;
    let new_product = json!({"id": "kb", "name": "Keyboard", "price_cents": 4_999, "currency": "USD", "stock": 10});
    let anonymous = http.post("/api/products", None, new_product.clone()).await;
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.header("www-authenticate").is_some());
    let created = http
        .post("/api/products", Some(&admin), new_product.clone())
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.json["price_cents"], 4_999);

    // Register and log in.
    let (ann, ann_token) = shop.customer("ann@example.com").await;
    let forbidden = http
        .post("/api/products", Some(&ann_token), new_product)
        .await;
    assert_eq!(forbidden.status, 403, "{forbidden:?}");
    let patch_forbidden = http
        .patch(
            "/api/products/kb",
            Some(&ann_token),
            json!({"price_cents": 1}),
        )
        .await;
    assert_eq!(patch_forbidden.status, 403);
    let duplicate = http
        .post(
            "/api/users",
            None,
            json!({"email": "ANN@example.com", "password": PASSWORD, "name": "Ann again"}),
        )
        .await;
    assert_eq!(duplicate.status, 409, "{duplicate:?}");
    let wrong = http
        .post(
            "/api/auth/login",
            None,
            json!({"email": "ann@example.com", "password": "not the password"}),
        )
        .await;
    assert_eq!(wrong.status, 401);
    let me = http.get("/api/users/me", Some(&ann_token)).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json["id"], ann.as_str());
    assert_eq!(me.json["email"], "ann@example.com");
    let renamed = http
        .patch(
            "/api/users/me",
            Some(&ann_token),
            json!({"name": "Ann Example"}),
        )
        .await;
    assert_eq!(renamed.status, 200, "{renamed:?}");
    assert_eq!(renamed.json["name"], "Ann Example");
    let escalate = http
        .patch(
            "/api/users/me",
            Some(&ann_token),
            json!({"roles": ["admin"]}),
        )
        .await;
    assert_eq!(escalate.status, 400, "roles are not a profile field");

    // Browse: list and one product, with ETag and 304.
    let page = http.get("/api/products?limit=10", None).await;
    assert_eq!(page.status, 200);
    assert!(page.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["id"] == "kb"));
    let product = http.get("/api/products/kb", None).await;
    assert_eq!(product.status, 200);
    assert_eq!(product.json["name"], "Keyboard");
    let etag = product.header("etag").expect("ETag").to_string();
    let again = http
        .send(
            Method::GET,
            "/api/products/kb",
            &[("if-none-match", &etag)],
            None,
        )
        .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let missing = http.get("/api/products/nope", None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json["error"]["code"], 404);

    // Order, with a trace context of our own and an id of our own.
    let mut events = shop.order_events().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let auth = format!("Bearer {ann_token}");
    let placed = http
        .send(
            Method::POST,
            "/api/orders",
            &[
                ("authorization", &auth),
                ("traceparent", traceparent),
                ("x-request-id", "test-order-1"),
            ],
            Some(
                json!({"items": [{"product_id": "kb", "quantity": 2}], "payment_token": "tok_ok", "idempotency_key": "first"})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(placed.status, 201, "{placed:?}");
    assert_eq!(placed.header("x-request-id"), Some("test-order-1"));
    assert_eq!(
        placed.json["user_id"],
        ann.as_str(),
        "user id from the token"
    );
    assert_eq!(placed.json["status"], "pending");
    let order_id = placed.json["id"].as_str().unwrap().to_string();
    let (settled, headers) = Shop::settled(&mut events, &order_id).await;
    assert_eq!(settled["status"], "confirmed", "{settled}");
    let event_trace = headers
        .as_ref()
        .and_then(|h| h.get("traceparent"))
        .map(|v| v.as_str().to_string())
        .unwrap_or_default();
    assert!(
        event_trace.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
        "the saga's events continue our trace: {event_trace}"
    );
    // Reads are eventually consistent: the event can reach this test before
    // the order service's state has applied it (the gateway's GET sends no
    // min_revision), so the GET may show an earlier status for a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let confirmed = loop {
        let got = http
            .get(&format!("/api/orders/{order_id}"), Some(&ann_token))
            .await;
        if got.json["status"] == "confirmed" || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(confirmed.status, 200);
    assert_eq!(confirmed.json["status"], "confirmed");
    let retried = http
        .post("/api/orders", Some(&ann_token), json!({"items": [{"product_id": "kb", "quantity": 2}], "payment_token": "tok_ok", "idempotency_key": "first"}))
        .await;
    assert_eq!(
        retried.json["id"],
        order_id.as_str(),
        "same key, same order"
    );
    let mine = http.get("/api/orders", Some(&ann_token)).await;
    assert_eq!(mine.status, 200);
    assert_eq!(mine.json["items"].as_array().unwrap().len(), 1);

    // Details: order, products, payment and customer together.
    let details = http
        .get(&format!("/api/orders/{order_id}/details"), Some(&ann_token))
        .await;
    assert_eq!(details.status, 200, "{details:?}");
    let d = &details.json;
    assert_eq!(d["complete"], true, "{d}");
    assert_eq!(d["order"]["id"], order_id.as_str());
    assert_eq!(d["products"][0]["status"], "ok");
    assert_eq!(d["products"][0]["product"]["id"], "kb");
    assert_eq!(d["products"][0]["product"]["stock"], 8);
    assert_eq!(d["payment"]["status"], "ok");
    assert_eq!(d["payment"]["payment"]["status"], "captured");
    assert_eq!(d["payment"]["payment"]["amount_cents"], 2 * 4_999);
    assert_eq!(d["customer"]["profile"]["email"], "ann@example.com");

    // Someone else's order is a 404; listing someone else's is 403; admins see any.
    let (_bob, bob_token) = shop.customer("bob@example.com").await;
    for path in [
        format!("/api/orders/{order_id}"),
        format!("/api/orders/{order_id}/details"),
    ] {
        let other = http.get(&path, Some(&bob_token)).await;
        assert_eq!(other.status, 404, "{path}: {other:?}");
    }
    let cancel = http
        .post(
            &format!("/api/orders/{order_id}/cancel"),
            Some(&bob_token),
            json!({}),
        )
        .await;
    assert_eq!(cancel.status, 404);
    let theirs = http
        .get(&format!("/api/orders?user_id={ann}"), Some(&bob_token))
        .await;
    assert_eq!(theirs.status, 403, "{theirs:?}");
    let bobs = http.get("/api/orders", Some(&bob_token)).await;
    assert_eq!(bobs.json["items"], json!([]));
    let as_admin = http
        .get(&format!("/api/orders/{order_id}"), Some(&admin))
        .await;
    assert_eq!(as_admin.status, 200);
    let listed_by_admin = http
        .get(&format!("/api/orders?user_id={ann}"), Some(&admin))
        .await;
    assert_eq!(listed_by_admin.json["items"][0]["id"], order_id.as_str());

    cache_follows_product_events(&shop, &admin).await;
    bad_input_is_400_and_changes_nothing(&shop, &ann_token).await;
    every_documented_route_is_served(&shop, &admin).await;
    observability(&shop, &ann_token).await;
}

/// A product read twice is served from the cache; an update made behind the
/// gateway's back (over NATS) is visible through it within 100 ms.
async fn cache_follows_product_events(shop: &Shop, admin: &str) {
    let http = &shop.http;
    let hits = |m: &str| metric(m, "shop_gateway_cache_hits_total");
    let before = shop.admin.get("/metrics", None).await;
    let first = http.get("/api/products/kb", None).await;
    let second = http.get("/api/products/kb", None).await;
    assert_eq!(first.body, second.body);
    let after = shop.admin.get("/metrics", None).await;
    assert!(
        hits(std::str::from_utf8(&after.body).unwrap())
            >= hits(std::str::from_utf8(&before.body).unwrap()) + 1.0,
        "the second read is a cache hit"
    );

    let updated = shop
        .req("product.update", json!({"id": "kb", "price_cents": 5_555}))
        .await;
    assert!(updated.is_ok(), "{:?}", updated.error);
    let since = Instant::now();
    let mut reads = 0;
    loop {
        reads += 1;
        let read = http.get("/api/products/kb", None).await;
        if read.json["price_cents"] == 5_555 {
            assert_ne!(read.header("etag"), first.header("etag"));
            break;
        }
        assert!(
            since.elapsed() < Duration::from_millis(100),
            "update not visible through the gateway after {reads} reads in {:?}",
            since.elapsed()
        );
    }
    assert!(
        since.elapsed() < Duration::from_millis(100),
        "seen after {:?}",
        since.elapsed()
    );

    // A write through the gateway is seen by its next read too.
    let patched = http
        .patch(
            "/api/products/kb",
            Some(admin),
            json!({"price_cents": 6_000}),
        )
        .await;
    assert_eq!(patched.status, 200, "{patched:?}");
    let read = http.get("/api/products/kb", None).await;
    assert_eq!(read.json["price_cents"], 6_000);
    let listed = http.get("/api/products?limit=10", None).await;
    let kb = listed.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "kb")
        .cloned()
        .unwrap();
    assert_eq!(kb["price_cents"], 6_000, "list pages are dropped too");
}

async fn bad_input_is_400_and_changes_nothing(shop: &Shop, token: &str) {
    let http = &shop.http;
    let orders_before = http.get("/api/orders", Some(token)).await.json["items"].clone();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("invalid JSON", b"{\"items\": [".to_vec()),
        ("request body is empty", b"".to_vec()),
        ("must be a JSON object", b"[1,2]".to_vec()),
        (
            "larger than 4096 bytes",
            json!({"items": [], "payment_token": "tok_ok", "idempotency_key": "x".repeat(5000)})
                .to_string()
                .into_bytes(),
        ),
        (
            "invalid type",
            json!({"items": [{"product_id": "kb", "quantity": "two"}], "payment_token": "tok_ok", "idempotency_key": "bad-1"})
                .to_string()
                .into_bytes(),
        ),
        (
            "user_id is not accepted",
            json!({"user_id": "someone-else", "items": [{"product_id": "kb", "quantity": 1}], "payment_token": "tok_ok", "idempotency_key": "bad-2"})
                .to_string()
                .into_bytes(),
        ),
        (
            "unknown field",
            json!({"items": [{"product_id": "kb", "quantity": 1}], "payment_token": "tok_ok", "idempotency_key": "bad-3", "discount": 100})
                .to_string()
                .into_bytes(),
        ),
    ];
    for (expected, body) in cases {
        let reply = http
            .with_body(Method::POST, "/api/orders", Some(token), body)
            .await;
        assert_eq!(reply.status, 400, "{expected}: {reply:?}");
        assert_eq!(reply.json["error"]["code"], 400);
        assert!(
            reply.message().contains(expected),
            "{expected:?} not in {:?}",
            reply.message()
        );
    }
    for (path, expected) in [
        ("/api/products/a.b", "id must be"),
        ("/api/products?limit=abc", "limit"),
        ("/api/products?color=red", "unknown field"),
    ] {
        let reply = http.get(path, None).await;
        assert_eq!(reply.status, 400, "{path}: {reply:?}");
        assert!(reply.message().contains(expected), "{path}: {reply:?}");
    }
    let orders_after = http.get("/api/orders", Some(token)).await.json["items"].clone();
    assert_eq!(
        orders_before, orders_after,
        "no order was placed by bad input"
    );
    let no_route = http.get("/api/nothing-here", None).await;
    assert_eq!(no_route.status, 404);
    assert_eq!(no_route.json["error"]["code"], 404);
    let wrong_method = http
        .send(Method::DELETE, "/api/products/kb", &[], None)
        .await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.json["error"]["code"], 405);
}

/// Every route in `/api/openapi.json` is served (not the fallback).
async fn every_documented_route_is_served(shop: &Shop, admin: &str) {
    let http = &shop.http;
    let doc = http.get("/api/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.json["openapi"], "3.1.0");
    let paths = doc.json["paths"].as_object().unwrap();
    let mut count = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            count += 1;
            let concrete = path.replace("{id}", "kb");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let auth = format!("Bearer {admin}");
            let reply = http
                .send(
                    method.clone(),
                    &concrete,
                    &[("authorization", &auth)],
                    Some(b"{}".to_vec()),
                )
                .await;
            assert_ne!(reply.status, 405, "{method} {path}");
            assert!(
                !reply.message().starts_with("no such route"),
                "{method} {path} is documented but not routed"
            );
        }
    }
    assert_eq!(count, 15, "every route is documented");

    // Metrics and the detailed health are not public: they are on the admin listener.
    let public = http.get("/metrics", None).await;
    assert_eq!(public.status, 404, "{public:?}");
    let health = http.get("/health", None).await;
    assert_eq!(health.status, 200);
    assert_eq!(
        health.json,
        json!({"status": "ok"}),
        "nothing but the status"
    );
    let detailed = shop.admin.get("/health", None).await;
    assert_eq!(detailed.json["status"], "ok", "{}", detailed.json);
    assert!(detailed.json["services"]["order"]["live"].as_u64() >= Some(1));
    assert_eq!(shop.admin.get("/ready", None).await.status, 200);
    let scraped = shop.admin.get("/metrics", None).await;
    assert!(std::str::from_utf8(&scraped.body)
        .unwrap()
        .contains("shop_gateway_http_responses_total"));
    // The registry names the admin listener, where Prometheus finds /metrics.
    let registry =
        shop_nats::discovery::Registry::open(&async_nats::jetstream::new(shop.client.clone()))
            .await
            .unwrap();
    let gateways = registry.list(Some("gateway")).await.unwrap();
    assert_eq!(
        gateways[0].admin_addr.as_deref(),
        Some(shop.admin.addr.as_str())
    );
    assert_ne!(shop.admin.addr, shop.http.addr);
}

/// Request ids, the access log (without tokens) and the metrics.
async fn observability(shop: &Shop, token: &str) {
    let http = &shop.http;
    let reply = http.get("/api/products/kb", None).await;
    let id = reply
        .header("x-request-id")
        .expect("request id")
        .to_string();
    let gateway = shop.gateway();
    let line = gateway
        .wait_for_log(&format!("\"request_id\":\"{id}\""), Duration::from_secs(5))
        .await
        .unwrap();
    let log: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(log["status"], 200);
    assert_eq!(log["method"], "GET");
    assert_eq!(log["path"], "/api/products/kb");
    assert_eq!(log["route"], "/api/products/{id}");
    assert!(log["duration_us"].is_u64());
    assert_eq!(log["trace_id"].as_str().unwrap().len(), 32);
    let logs = gateway.logs().join("\n");
    assert!(!logs.contains(token), "no token in the gateway's logs");
    assert!(
        !logs.contains(PASSWORD),
        "no password in the gateway's logs"
    );

    let metrics = shop.admin.get("/metrics", None).await;
    let text = std::str::from_utf8(&metrics.body).unwrap();
    assert!(
        metric_line(
            text,
            "shop_gateway_http_responses_total",
            &["route=\"GET /api/products/{id}\"", "status=\"2xx\""]
        ) > 0.0,
        "{text}"
    );
    assert_eq!(
        metric_line(text, "shop_gateway_live_instances", &["target=\"order\""]),
        1.0
    );
}

/// The sum of every sample of `name` in a Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The samples of `name` whose labels contain every one of `labels`, summed.
fn metric_line(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
