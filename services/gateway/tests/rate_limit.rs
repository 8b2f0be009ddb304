//! Rate limits per client: the address for anonymous requests, the user for
//! authenticated ones; 429 with Retry-After, and served again once it passed.

mod common;

use std::time::Duration;

use common::Shop;
use serde_json::json;
use shop_nats::discovery::Registry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_hit_per_client_and_recover() {
    // 5 per second, 3 at once.
    let mut shop = Shop::start(
        &["product", "user"],
        &[
            ("GATEWAY_RATE_LIMIT_PER_SEC", "5"),
            ("GATEWAY_RATE_LIMIT_BURST", "3"),
        ],
    )
    .await;
    shop.product("lamp", 5, 2_500).await;
    // Accounts and tokens over NATS, so that only the reads below count.
    let registered = shop
        .req(
            "user.register",
            json!({"email": "dave@example.com", "password": common::PASSWORD, "name": "Dave"}),
        )
        .await;
    assert!(registered.is_ok(), "{:?}", registered.error);
    let login = shop
        .req(
            "user.login",
            json!({"email": "dave@example.com", "password": common::PASSWORD}),
        )
        .await;
    let token = login.body["token"].as_str().unwrap().to_string();
    let http = &shop.http;

    for i in 0..3 {
        let reply = http.get("/api/products/lamp", None).await;
        assert_eq!(reply.status, 200, "request {i} within the burst");
    }
    let limited = http.get("/api/products/lamp", None).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert_eq!(limited.json["error"]["code"], 429);
    assert!(limited.message().contains("rate limit"));
    let retry_after: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1, "one token back within 200 ms, rounded up");

    // The same address with a token is another client; health is never limited.
    for i in 0..3 {
        let reply = http.get("/api/users/me", Some(&token)).await;
        assert_eq!(reply.status, 200, "user request {i}");
    }
    assert_eq!(http.get("/api/users/me", Some(&token)).await.status, 429);
    for _ in 0..5 {
        assert_eq!(http.get("/health", None).await.status, 200);
    }

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let recovered = http.get("/api/products/lamp", None).await;
    assert_eq!(recovered.status, 200, "served again after Retry-After");
    assert_eq!(http.get("/api/users/me", Some(&token)).await.status, 200);

    let metrics = shop.admin.get("/metrics", None).await;
    let text = std::str::from_utf8(&metrics.body).unwrap();
    let limited_total: f64 = text
        .lines()
        .find(|l| l.starts_with("shop_gateway_rate_limited_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert_eq!(limited_total, 2.0);

    // A clean stop leaves the registry at once and exits 0.
    let js = async_nats::jetstream::new(shop.client.clone());
    let registry = Registry::existing(&js).await.unwrap().unwrap();
    assert_eq!(registry.list(Some("gateway")).await.unwrap().len(), 1);
    let mut gateway = shop.gateway.take().unwrap();
    gateway.sigterm().unwrap();
    let status = gateway.wait_exit(Duration::from_secs(15)).await.unwrap();
    assert!(status.success(), "{status:?}");
    assert!(gateway.logs().iter().any(|l| l.contains("stopped cleanly")));
    assert_eq!(registry.list(Some("gateway")).await.unwrap(), vec![]);
}
