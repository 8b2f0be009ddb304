//! Failure isolation: a stopped service degrades the order details instead of
//! failing them; a hung service opens its breaker after timeouts, then calls
//! are refused within 50 ms with Retry-After while other routes are unaffected;
//! a killed service fails fast and, restarted, closes its breaker again.

mod common;

use std::time::{Duration, Instant};

use common::Shop;
use serde_json::{json, Value};

const FAST: Duration = Duration::from_millis(50);

/// The order service's breaker state as the gateway reports it.
fn order_breaker(health: &Value) -> &str {
    health["services"]["order"]["breaker"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_services_fail_fast_and_recover() {
    let mut shop = Shop::full(&[
        ("GATEWAY_RATE_LIMIT_PER_SEC", "0"),
        ("GATEWAY_BREAKER_FAILURES", "3"),
        ("GATEWAY_BREAKER_OPEN_MS", "1000"),
        ("GATEWAY_SERVICE_TIMEOUTS", "order=500"),
    ])
    .await;
    shop.product("mug", 10, 1_200).await;
    let (_, token) = shop.customer("erin@example.com").await;
    let http = shop.http.clone();
    let mut events = shop.order_events().await;
    let placed = http
        .post("/api/orders", Some(&token), json!({"items": [{"product_id": "mug", "quantity": 1}], "payment_token": "tok_ok", "idempotency_key": "mug-1"}))
        .await;
    assert_eq!(placed.status, 201, "{placed:?}");
    let order_id = placed.json["id"].as_str().unwrap().to_string();
    let (settled, _) = Shop::settled(&mut events, &order_id).await;
    assert_eq!(settled["status"], "confirmed");
    let details_path = format!("/api/orders/{order_id}/details");

    // 1. Payment stopped cleanly: gone from the registry; details still come.
    shop.service("payment").sigterm().unwrap();
    shop.service("payment")
        .wait_exit(Duration::from_secs(15))
        .await
        .unwrap();
    shop.health_when(|h| h["services"]["payment"]["live"] == 0)
        .await;
    let started = Instant::now();
    let details = http.get(&details_path, Some(&token)).await;
    assert_eq!(details.status, 200, "{details:?}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "no waiting for a timeout"
    );
    assert_eq!(details.json["complete"], false);
    assert_eq!(details.json["payment"]["status"], "unavailable");
    assert_eq!(details.json["payment"]["error"]["code"], 503);
    let why = details.json["payment"]["error"]["message"]
        .as_str()
        .unwrap();
    assert!(why.contains("no live instance"), "{why}");
    assert_eq!(details.json["products"][0]["status"], "ok");
    assert_eq!(details.json["customer"]["status"], "ok");
    assert_eq!(details.json["order"]["status"], "confirmed");
    shop.service("payment").restart().await.unwrap();
    shop.health_when(|h| h["services"]["payment"]["live"] == 1)
        .await;
    let whole = http.get(&details_path, Some(&token)).await;
    assert_eq!(whole.json["complete"], true, "{}", whole.json);

    // 2. Order hung (SIGSTOP): timeouts open the breaker, then 503 at once.
    let pid = shop.service("order").pid().unwrap() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let timeouts =
        futures::future::join_all((0..3).map(|_| http.get("/api/orders", Some(&token)))).await;
    for reply in &timeouts {
        assert_eq!(reply.status, 504, "{reply:?}");
    }
    let health = shop.admin.get("/health", None).await;
    assert_eq!(order_breaker(&health.json), "open", "{}", health.json);
    assert_eq!(health.json["status"], "degraded");
    for path in ["/api/orders", details_path.as_str()] {
        let started = Instant::now();
        let refused = http.get(path, Some(&token)).await;
        let took = started.elapsed();
        assert_eq!(refused.status, 503, "{path}: {refused:?}");
        assert!(took < FAST, "{path}: refused in {took:?}");
        assert!(refused.message().contains("circuit open"), "{refused:?}");
        assert!(refused.header("retry-after").is_some());
    }
    // Other routes are unaffected.
    let started = Instant::now();
    assert_eq!(http.get("/api/products/mug", None).await.status, 200);
    assert_eq!(http.get("/api/users/me", Some(&token)).await.status, 200);
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    eventually_ok(&http, "/api/orders", &token).await;
    assert_eq!(
        order_breaker(&shop.admin.get("/health", None).await.json),
        "closed"
    );

    // 3. Order killed: no responders, the breaker opens, 503 fast; restarted, it closes.
    shop.service("order").kill9().unwrap();
    no_responders(&shop, "order.list").await;
    let mut codes = Vec::new();
    for _ in 0..4 {
        let started = Instant::now();
        let reply = http.get("/api/orders", Some(&token)).await;
        assert!(
            started.elapsed() < FAST,
            "refused in {:?}",
            started.elapsed()
        );
        assert!(reply.header("retry-after").is_some(), "{reply:?}");
        codes.push(reply.status);
    }
    assert_eq!(codes, [503; 4]);
    let health = shop.admin.get("/health", None).await;
    assert_eq!(order_breaker(&health.json), "open", "{}", health.json);
    assert_eq!(http.get("/api/products/mug", None).await.status, 200);
    shop.service("order").restart().await.unwrap();
    eventually_ok(&http, "/api/orders", &token).await;
    let health = shop.admin.get("/health", None).await;
    assert_eq!(order_breaker(&health.json), "closed", "{}", health.json);
    let back = http.get(&details_path, Some(&token)).await;
    assert_eq!(back.json["complete"], true);
}

/// Polls `path` until it answers 200 (at most 10 s); returns how long it took.
/// Every answer on the way must be a 503, and the breaker's refusals fast.
async fn eventually_ok(http: &common::Http, path: &str, token: &str) -> Duration {
    let since = Instant::now();
    loop {
        let started = Instant::now();
        let reply = http.get(path, Some(token)).await;
        if reply.status == 200 {
            return since.elapsed();
        }
        assert_eq!(reply.status, 503, "{reply:?}");
        if reply.message().contains("circuit open") {
            let took = started.elapsed();
            assert!(took < FAST, "refused in {took:?}: {reply:?}");
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "never recovered: {reply:?}"
        );
        let wait: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!(wait >= 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the server knows nobody listens on `subject` any more.
async fn no_responders(shop: &Shop, subject: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let request = async_nats::Request::new()
            .payload("{}".into())
            .timeout(Some(Duration::from_millis(200)));
        match shop.client.send_request(subject.to_string(), request).await {
            Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => return,
            _ => assert!(Instant::now() < deadline, "{subject} still answered"),
        }
    }
}
