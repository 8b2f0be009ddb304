//! Bad input: a clear 4xx and no change in state.

mod common;

use common::Cluster;
use serde_json::json;

#[tokio::test]
async fn bad_requests_get_clear_4xx_and_change_nothing() {
    let c = Cluster::start(1).await.unwrap();
    c.create("steady", 10).await;
    let before_product = c.req("product.get", json!({"id": "steady"})).await.body;
    let before_seq = c.stream_last_sequence().await;

    let big = format!(
        "{{\"id\":\"steady\",\"pad\":\"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("product.create", "{not json".into(), 400, "invalid JSON"),
        ("product.create", "".into(), 400, "empty payload"),
        ("product.create", json!({"price_cents": 1, "currency": "USD", "stock": 1}).to_string(), 400, "missing field `name`"),
        ("product.create", json!({"name": "x", "price_cents": "12", "currency": "USD", "stock": 1}).to_string(), 400, "invalid type"),
        ("product.create", json!({"name": "x", "price_cents": 12.5, "currency": "USD", "stock": 1}).to_string(), 400, "invalid type"),
        ("product.create", json!({"name": "x", "price_cents": -100, "currency": "USD", "stock": 1}).to_string(), 400, "price_cents"),
        ("product.create", json!({"name": "x", "price_cents": 100, "currency": "USD", "stock": -1}).to_string(), 400, "stock"),
        ("product.create", json!({"name": "x", "price_cents": 100, "currency": "DOLLARS", "stock": 1}).to_string(), 400, "currency"),
        ("product.create", json!({"name": "x", "price_cents": 100, "currency": "USD", "stock": 1, "colour": "red"}).to_string(), 400, "unknown field `colour`"),
        ("product.create", json!({"id": "bad id!", "name": "x", "price_cents": 100, "currency": "USD", "stock": 1}).to_string(), 400, "id must be"),
        ("product.update", json!({"id": "steady"}).to_string(), 400, "nothing to update"),
        ("product.update", json!({"id": "steady", "price_cents": -5}).to_string(), 400, "price_cents"),
        ("product.update", json!({"id": "steady", "stock": "many"}).to_string(), 400, "invalid type"),
        ("product.get", json!({}).to_string(), 400, "missing field `id`"),
        ("product.get", json!({"id": 42}).to_string(), 400, "invalid type"),
        ("product.list", json!({"limit": 101}).to_string(), 400, "limit"),
        ("product.list", json!({"limit": -1}).to_string(), 400, "invalid value"),
        ("product.stock.reserve", json!({"product_id": "steady", "quantity": -3, "reservation_id": "r1"}).to_string(), 400, "quantity"),
        ("product.stock.reserve", json!({"product_id": "steady", "quantity": 0, "reservation_id": "r1"}).to_string(), 400, "quantity"),
        ("product.stock.reserve", json!({"product_id": "steady", "quantity": 1}).to_string(), 400, "missing field `reservation_id`"),
        ("product.stock.release", json!({"product_id": "steady", "quantity": -1, "reservation_id": "r1"}).to_string(), 400, "quantity"),
        ("product.stock.reserve", json!({"product_id": "ghost", "quantity": 1, "reservation_id": "r1"}).to_string(), 404, "not found"),
        ("product.get", big, 400, "exceeds the limit"),
        ("product.frobnicate", json!({"id": "steady"}).to_string(), 404, "unknown subject product.frobnicate"),
        ("product.stock.steal", "{}".into(), 404, "unknown subject"),
    ];
    for (subject, payload, code, needle) in cases {
        let reply = c.req_raw(subject, payload.clone()).await;
        let shown: String = payload.chars().take(80).collect();
        assert_eq!(
            reply.error_code,
            Some(code),
            "{subject} {shown}: {:?}",
            reply.error
        );
        let message = reply.error.clone().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{subject} {shown}: {message:?} should mention {needle:?}"
        );
        assert_eq!(
            reply.body["error"]["code"], code,
            "JSON error body for {subject}"
        );
        assert_eq!(reply.body["error"]["message"], message.as_str());
    }

    assert_eq!(
        c.stream_last_sequence().await,
        before_seq,
        "no event was written"
    );
    assert_eq!(
        c.req("product.get", json!({"id": "steady"})).await.body,
        before_product
    );
    let list = c.req("product.list", json!({})).await;
    assert_eq!(
        list.body["items"].as_array().unwrap().len(),
        1,
        "no product was created"
    );
}
