//! Where order events land: each on `events.order.<type>.<id>`, and an order
//! an earlier version left on its single subject `events.order.<id>` goes on
//! there to the end (its revision check needs every event on one subject).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::Shop;
use futures::StreamExt;
use serde_json::{json, Value};

/// The subject and status of every event of order `id`, until it is final.
async fn events_until_final(
    events: &mut async_nats::Subscriber,
    id: &str,
) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(message) = events.next().await {
            let event: Value = serde_json::from_slice(&message.payload).unwrap();
            if event["order"]["id"] != id {
                continue;
            }
            let status = event["order"]["status"].as_str().unwrap().to_string();
            seen.push((message.subject.to_string(), status.clone()));
            if status == "confirmed" || status == "cancelled" {
                return;
            }
        }
    })
    .await;
    assert!(waited.is_ok(), "order {id} not final: {seen:?}");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_their_type_in_the_subject_and_old_orders_keep_theirs() {
    let shop = Shop::start(1, &[]).await.unwrap();
    shop.product("kb", 10, 2_500).await;
    let user = shop.user("subjects@example.com").await;
    let mut events = shop.client.subscribe("events.order.>").await.unwrap();
    shop.client.flush().await.unwrap();

    let placed = shop
        .place(
            &user,
            json!([{"product_id": "kb", "quantity": 1}]),
            "tok_ok",
            "s1",
        )
        .await;
    let id = placed["id"].as_str().unwrap().to_string();
    let seen = events_until_final(&mut events, &id).await;
    let expected: Vec<(String, String)> = [
        ("created", "pending"),
        ("stock_reserved", "stock_reserved"),
        ("confirmed", "confirmed"),
    ]
    .iter()
    .map(|(kind, status)| (format!("events.order.{kind}.{id}"), status.to_string()))
    .collect();
    assert_eq!(seen, expected);

    // An order an earlier version was cancelling (before any charge), on its
    // single subject: the saga takes it, and its last event goes there too.
    let now = shop_nats::clock::now_ms();
    let old = json!({
        "id": "o-old", "user_id": user, "currency": "USD", "total_cents": 2_500,
        "items": [{"product_id": "kb", "quantity": 1, "price_cents": 2_500}],
        "status": "cancelling", "reason": "cancelled_by_user", "cancelled_from": "pending",
        "payment_id": null, "created_at_ms": now, "updated_at_ms": now, "revision": 0,
    });
    let event = json!({"type": "order.cancelling", "order": old});
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Shop-Event-Type", "order.cancelling");
    let js = async_nats::jetstream::new(shop.client.clone());
    js.publish_with_headers(
        "events.order.o-old",
        headers,
        Bytes::from(event.to_string()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let seen = events_until_final(&mut events, "o-old").await;
    assert_eq!(
        seen,
        [
            ("events.order.o-old".to_string(), "cancelling".to_string()),
            ("events.order.o-old".to_string(), "cancelled".to_string()),
        ]
    );
    let last = shop.last_sequence("ORDER").await;
    let read = shop
        .req("order.get", json!({"id": "o-old", "min_revision": last}))
        .await;
    assert_eq!(read.body["status"], "cancelled", "{:?}", read.body);
    assert_eq!(shop.stock("kb").await, 9, "only the new order holds stock");
}
