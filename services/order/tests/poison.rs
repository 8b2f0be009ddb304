//! Poison on every service's stream, through the whole shop: junk bytes on the
//! subject of an existing aggregate, and a copy of a real event under another
//! aggregate's subject, are published straight onto the PRODUCT, USER, PAYMENT,
//! ORDER and NOTIFICATION streams. Every service keeps reading and writing (an
//! order placed afterwards goes through all of them, and cancelling the first
//! order writes to the aggregates that got the junk), parks and counts both
//! events, dead-letters what its consumers cannot decode, and a new instance of
//! each rebuilds its state past them.

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull::OrderedConfig};
use bytes::Bytes;
use common::Shop;
use futures::StreamExt;
use serde_json::{json, Value};

/// Each service and the stream its state tails.
const STREAMS: &[(&str, &str)] = &[
    ("product", "PRODUCT"),
    ("user", "USER"),
    ("payment", "PAYMENT"),
    ("order", "ORDER"),
    ("notification", "NOTIFICATION"),
];

const JUNK: &[u8] = b"\x00\xff{ not an event";

/// The first message of `stream` whose subject matches `filter`.
async fn first_message(js: &jetstream::Context, stream: &str, filter: &str) -> jetstream::Message {
    let consumer = js
        .get_stream(stream)
        .await
        .unwrap()
        .create_consumer(OrderedConfig {
            filter_subject: filter.to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .unwrap_or_else(|_| panic!("nothing on {filter} in {stream}"))
        .unwrap()
        .unwrap()
}

/// Publishes `payload` on `subject`; returns its stream sequence.
async fn publish(js: &jetstream::Context, subject: String, payload: Bytes) -> u64 {
    js.publish(subject, payload)
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
}

/// `shop_state_events_parked_total{reason}` of the instance at `admin_addr`.
async fn parked(admin_addr: &str, reason: &str) -> f64 {
    common::metric(
        admin_addr,
        "shop_state_events_parked_total",
        &[("reason", reason)],
    )
    .await
}

/// What was written after the poison, read back: products, a login, the
/// orders, the new order's payment and the buyer's notifications.
async fn read_back(shop: &Shop, buyer: &str, order_id: &str, cancelled_id: &str) -> Value {
    let product = shop.req("product.get", json!({"id": "after"})).await;
    let mug = shop.req("product.get", json!({"id": "mug"})).await;
    let cancelled = shop.req("order.get", json!({"id": cancelled_id})).await;
    let login = shop
        .req(
            "user.login",
            json!({"email": "bob@example.com", "password": "correct horse battery"}),
        )
        .await;
    let order = shop.req("order.get", json!({"id": order_id})).await;
    let payment_id = order.body["payment_id"].as_str().unwrap_or_default();
    let payment = shop
        .req("payment.get", json!({"payment_id": payment_id}))
        .await;
    let notifications = shop
        .req("notification.list", json!({"user_id": buyer}))
        .await;
    let mut kinds: Vec<_> = notifications.body["items"]
        .as_array()
        .map(|items| items.iter().map(|n| n["kind"].clone()).collect())
        .unwrap_or_default();
    kinds.sort_by_key(|k| k.to_string());
    json!({
        "product": [product.error, product.body["stock"].clone()],
        "mug": [mug.error, mug.body["stock"].clone()],
        "cancelled": [cancelled.error, cancelled.body["status"].clone()],
        "login": [login.error, login.body["user"]["id"].clone()],
        "order": [order.error, order.body["status"].clone()],
        "payment": [payment.error, payment.body["status"].clone()],
        "notifications": [notifications.error, kinds],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_on_every_stream_stops_nothing() {
    let mut shop = Shop::start(1, &[]).await.unwrap();
    let js = jetstream::new(shop.client.clone());

    // Every stream gets real events first: an order through the whole saga.
    shop.product("mug", 10, 1_200).await;
    let ann = shop.user("ann@example.com").await;
    let first = shop
        .place(
            &ann,
            json!([{"product_id": "mug", "quantity": 1}]),
            "tok_ok",
            "ann-1",
        )
        .await;
    let first_id = first["id"].as_str().unwrap().to_string();
    let settled = shop
        .settle(std::slice::from_ref(&first_id), Duration::from_secs(20))
        .await;
    assert_eq!(settled[&first_id]["status"], "confirmed");

    // On each stream, junk on the subject of its first event's aggregate, and
    // a copy of that event under a subject naming another aggregate.
    let mut junk_on_order = None;
    for (_, stream) in STREAMS {
        let original = first_message(&js, stream, ">").await;
        let prefix = original
            .subject
            .rsplit_once('.')
            .map(|(prefix, _)| prefix.to_string())
            .unwrap();
        let junk = publish(&js, original.subject.to_string(), Bytes::from_static(JUNK)).await;
        publish(&js, format!("{prefix}.forged"), original.payload.clone()).await;
        if *stream == "ORDER" {
            junk_on_order = Some((original.subject.to_string(), junk));
        }
    }

    // Every service still reads and writes: a new user, a new product, and an
    // order through product, payment, order and notification.
    let bob = shop.user("bob@example.com").await;
    shop.product("after", 5, 700).await;
    let order = shop
        .place(
            &bob,
            json!([{"product_id": "after", "quantity": 2}, {"product_id": "mug", "quantity": 1}]),
            "tok_ok",
            "bob-1",
        )
        .await;
    let order_id = order["id"].as_str().unwrap().to_string();
    // Cancelling the first order writes the order, its payment (a refund) and
    // the mug (a release): aggregates whose subjects got the junk.
    let cancel = shop.req("order.cancel", json!({"id": first_id})).await;
    assert!(cancel.is_ok(), "{:?}", cancel.error);
    let ids = [order_id.clone(), first_id.clone()];
    let settled = shop.settle(&ids, Duration::from_secs(30)).await;
    assert_eq!(settled[&order_id]["status"], "confirmed", "{settled:?}");
    assert_eq!(settled[&first_id]["status"], "cancelled", "{settled:?}");
    assert_eq!(shop.stock("after").await, 3);
    let expected = json!({
        "product": [null, 3],
        "mug": [null, 9],
        "cancelled": [null, "cancelled"],
        "login": [null, bob],
        "order": [null, "confirmed"],
        "payment": [null, "captured"],
        "notifications": [null, ["order_confirmed", "welcome"]],
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen = read_back(&shop, &bob, &order_id, &first_id).await;
    // The confirmation e-mail follows the order's confirmation.
    while seen != expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = read_back(&shop, &bob, &order_id, &first_id).await;
    }
    assert_eq!(seen, expected);

    // Each service parked and counted both events; the order saga's consumer
    // dead-lettered the junk it could not decode.
    for (service, _) in STREAMS {
        let instance = shop
            .processes
            .iter()
            .find(|p| p.instance_id.starts_with(service))
            .unwrap();
        for reason in ["undecodable", "wrong_aggregate"] {
            assert_eq!(
                parked(&instance.admin_addr, reason).await,
                1.0,
                "{service} {reason}"
            );
        }
    }
    let (junk_subject, junk_sequence) = junk_on_order.unwrap();
    let dead = first_message(&js, "DEADLETTER", "deadletter.order-saga").await;
    let header = |name: &str| {
        dead.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.to_string())
    };
    assert_eq!(header("Shop-Original-Subject"), Some(junk_subject));
    assert_eq!(
        header("Shop-Original-Sequence"),
        Some(junk_sequence.to_string())
    );
    assert!(header("Shop-Dead-Letter-Reason")
        .unwrap()
        .contains("undecodable"));
    assert_eq!(dead.payload.as_ref(), JUNK);

    // A new instance of each service rebuilds its state from the streams, past
    // the poison; with the old ones gone, it serves what was written after it.
    let old = shop.processes.len();
    for (service, _) in STREAMS {
        let env = [("ARGON2_MEMORY_KIB", "1024"), ("ARGON2_ITERATIONS", "1")];
        let added = match *service {
            "order" => shop.add_order(&[]).await,
            _ => shop.add(service, &env).await,
        };
        let instance = &shop.processes[added.unwrap()];
        for reason in ["undecodable", "wrong_aggregate"] {
            assert_eq!(
                parked(&instance.admin_addr, reason).await,
                1.0,
                "new {service} {reason}"
            );
        }
    }
    for process in &mut shop.processes[..old] {
        process.kill9().unwrap();
    }
    assert_eq!(read_back(&shop, &bob, &order_id, &first_id).await, expected);

    // Parked once each, however many instances parked them.
    let mut parked_stream = js.get_stream("PARKED").await.unwrap();
    let parked_info = parked_stream.info().await.unwrap();
    assert_eq!(parked_info.state.messages, 2 * STREAMS.len() as u64);
    for (service, stream) in STREAMS {
        let message = first_message(&js, "PARKED", &format!("parked.{service}.{stream}.>")).await;
        let reason = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Shop-Parked-Reason"))
            .map(|v| v.to_string())
            .unwrap_or_default();
        assert!(reason.starts_with("undecodable"), "{service}: {reason}");
    }
}
