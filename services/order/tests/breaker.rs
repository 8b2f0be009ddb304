//! The order service's breaker towards product recovers: a two-line
//! `order.create` at half-open sends one line as the probe and is refused on the
//! other, which drops the probe's call; the probe's reply still closes the
//! breaker, so once product is back the next creates (and the saga's calls to
//! product) succeed.

mod common;

use std::time::Duration;

use common::Shop;
use serde_json::json;
use testkit::Reply;

/// A two-line `order.create` for `user` with idempotency key `key`.
async fn create(shop: &Shop, user: &str, key: &str) -> Reply {
    shop.req(
        "order.create",
        json!({
            "user_id": user,
            "items": [{"product_id": "a", "quantity": 1}, {"product_id": "b", "quantity": 1}],
            "payment_token": "tok_ok",
            "idempotency_key": key,
        }),
    )
    .await
}

/// The wait a "circuit open, retry after N ms" refusal asks for.
fn retry_after(reply: &Reply) -> Option<Duration> {
    let message = reply.error.as_deref()?;
    let (_, after) = message.split_once("circuit open, retry after ")?;
    let millis = after.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_millis(millis))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_line_create_at_half_open_closes_the_breaker() {
    let mut shop = Shop::start(1, &[]).await.unwrap();
    shop.product("a", 100, 500).await;
    shop.product("b", 100, 700).await;
    let user = shop.user("carol@example.com").await;
    let product = shop
        .processes
        .iter()
        .position(|p| p.instance_id.starts_with("product"))
        .unwrap();

    // Product gone: pricing fails until the order instance's breaker opens.
    shop.processes[product].kill9().unwrap();
    let mut open = None;
    for attempt in 0..5 {
        let reply = create(&shop, &user, &format!("down-{attempt}")).await;
        assert_eq!(reply.error_code, Some(503), "{reply:?}");
        if let Some(wait) = retry_after(&reply) {
            open = Some(wait);
            break;
        }
    }
    let open = open.expect("the breaker opened");

    // Product back; the open period runs out.
    shop.processes[product].restart().await.unwrap();
    tokio::time::sleep(open + Duration::from_millis(50)).await;

    // Half-open: line a takes the probe, line b is refused, the create fails
    // and drops line a's call.
    let refused = create(&shop, &user, "half-open").await;
    assert_eq!(refused.error_code, Some(503), "{refused:?}");
    assert_eq!(
        retry_after(&refused),
        Some(Duration::from_millis(100)),
        "refused while the probe is out: {refused:?}"
    );

    // The probe's reply closes the breaker: the next creates succeed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut first = create(&shop, &user, "after-0").await;
    while !first.is_ok() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        first = create(&shop, &user, "after-0").await;
    }
    assert!(first.is_ok(), "still refused: {first:?}");
    let mut ids = vec![first.body["id"].as_str().unwrap().to_string()];
    for i in 1..4 {
        let reply = create(&shop, &user, &format!("after-{i}")).await;
        assert!(reply.is_ok(), "create {i}: {reply:?}");
        ids.push(reply.body["id"].as_str().unwrap().to_string());
    }
    // And the saga's calls to product go through: every order is confirmed.
    let settled = shop.settle(&ids, Duration::from_secs(20)).await;
    for id in &ids {
        assert_eq!(
            settled[id]["status"], "confirmed",
            "{id}: {:?}",
            settled[id]
        );
    }
    assert_eq!(shop.stock("a").await, 96);
}
