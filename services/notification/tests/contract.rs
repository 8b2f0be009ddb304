//! The contract through raw JSON: events in as their owners publish them,
//! messages out in the spool, `notification.list` as `nats req` sees it.

mod common;

use std::time::Duration;

use common::{await_metric, header, read_eml, split_message, Cluster, SentWatch};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn welcome_then_order_messages_listed_newest_first() {
    let c = Cluster::start(1, &[]).await.unwrap();
    let mut sent = SentWatch::start(&c.client).await;

    // A registration, as raw JSON with fields this service does not know.
    let registered = c
        .publish(
            "events.user.registered.u-ann",
            r#"{"type":"user.registered","user":{"id":"u-ann","email":"ann@example.com","name":"Ann Smith","password_set":true},"at":"2025-01-01T00:00:00Z"}"#.to_string(),
        )
        .await;
    let welcome = sent.next(1, WAIT).await.remove(0);
    assert_eq!(welcome["user_id"], "u-ann");
    assert_eq!(welcome["kind"], "welcome");
    assert_eq!(welcome["source_event"], registered.as_str());
    let id = welcome["id"].as_str().unwrap().to_string();

    // One RFC 5322 message, its Message-ID after the notification.
    assert_eq!(c.spooled("notification-1").len(), 1);
    let (head, body) = c.spooled_message("notification-1", &id);
    assert_eq!(header(&head, "From").as_deref(), Some("shop@localhost"));
    assert_eq!(
        header(&head, "To").as_deref(),
        Some("\"Ann Smith\" <ann@example.com>")
    );
    assert_eq!(
        header(&head, "Subject").as_deref(),
        Some("Welcome to the shop, Ann Smith!")
    );
    assert_eq!(
        header(&head, "Message-ID"),
        Some(format!("<{id}@localhost>"))
    );
    assert_eq!(header(&head, "MIME-Version").as_deref(), Some("1.0"));
    assert_eq!(
        header(&head, "Content-Type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    assert!(
        header(&head, "Date").is_some_and(|d| d.ends_with("+0000")),
        "{head}"
    );
    assert!(body.starts_with("Hello Ann Smith,"), "{body}");

    let listed = c.list_fresh("u-ann").await;
    assert_eq!(listed.len(), 1);
    let item = &listed[0];
    for field in ["id", "kind", "to", "subject", "created_at", "source_event"] {
        assert_eq!(item[field], welcome[field], "{field}");
    }
    assert_eq!(item["to"], "ann@example.com");

    // Orders carry the user id only: the address comes from the registration.
    let order = json!({
        "id": "o-1", "user_id": "u-ann", "status": "confirmed", "currency": "USD", "total_cents": 11498,
        "items": [
            {"product_id": "kb", "quantity": 2, "price_cents": 4999},
            {"product_id": "mouse", "quantity": 1, "price_cents": 1500}
        ]
    });
    c.order_event("order.created", order.clone()).await;
    let confirmed = c.order_event("order.confirmed", order.clone()).await;
    // Events are handled concurrently: wait for one before the next so the
    // list order below is the order of the events.
    let mut orders = sent.next(1, WAIT).await;
    let mut cancelled_order = order.clone();
    cancelled_order["status"] = json!("cancelled");
    cancelled_order["reason"] = json!("payment declined");
    let cancelled = c.order_event("order.cancelled", cancelled_order).await;
    orders.extend(sent.next(1, WAIT).await);
    assert_eq!(orders[0]["source_event"], confirmed.as_str());
    assert_eq!(orders[0]["kind"], "order_confirmed");
    assert_eq!(orders[0]["to"], "ann@example.com");
    assert_eq!(orders[0]["subject"], "Your order o-1 is confirmed");
    assert_eq!(orders[1]["source_event"], cancelled.as_str());
    assert_eq!(orders[1]["kind"], "order_cancelled");

    let (_, body) = c.spooled_message("notification-1", orders[0]["id"].as_str().unwrap());
    assert!(body.contains("2 x kb at 49.99 USD = 99.98 USD"), "{body}");
    assert!(body.contains("Total: 114.98 USD"), "{body}");
    let (_, body) = c.spooled_message("notification-1", orders[1]["id"].as_str().unwrap());
    assert!(body.contains("Reason: payment declined"), "{body}");

    // order.created is acknowledged without a message: 3 order events handled, 2 sent.
    await_metric(
        &c,
        0,
        "shop_events_consumed_total",
        &[("consumer", "notification-orders"), ("outcome", "ok")],
        3.0,
    )
    .await;
    assert_eq!(c.spooled("notification-1").len(), 3);
    assert_eq!(c.sent_events_stored().await, 3);

    // Newest first, in pages.
    let all = c.list_fresh("u-ann").await;
    let kinds: Vec<&str> = all.iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["order_cancelled", "order_confirmed", "welcome"]);
    let page1 = c.list(json!({"user_id": "u-ann", "limit": 2})).await;
    assert!(page1.is_ok(), "{:?}", page1.error);
    assert_eq!(page1.body["items"].as_array().unwrap().len(), 2);
    let cursor = page1.body["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let page2 = c
        .list(json!({"user_id": "u-ann", "limit": 2, "cursor": cursor}))
        .await;
    assert_eq!(page2.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(page2.body["items"][0]["kind"], "welcome");
    assert_eq!(page2.body["next_cursor"], Value::Null);

    // Someone else's list is empty, not an error.
    let other = c.list(json!({"user_id": "u-nobody"})).await;
    assert!(other.is_ok());
    assert_eq!(other.body, json!({"items": [], "next_cursor": null}));

    // A user lists their own notifications only; a claimed user is no user.
    let ann = c.1.headers("u-ann", &["customer"]);
    let own = c
        .list_with(ann, json!({"user_id": "u-ann", "limit": 100}))
        .await;
    assert!(own.is_ok(), "{:?}", own.error);
    assert_eq!(own.body["items"].as_array().map(Vec::len), Some(3));
    let bob = c.1.headers("u-bob", &["customer"]);
    let refused = c.list_with(bob, json!({"user_id": "u-ann"})).await;
    assert_eq!(refused.error_code, Some(403), "{:?}", refused.error);
    assert_eq!(refused.body["error"]["code"], 403);
    let mut claimed = async_nats::HeaderMap::new();
    claimed.insert("Shop-User-Id", "u-ann");
    claimed.insert("Shop-User-Roles", "admin");
    let claimed = c.list_with(claimed, json!({"user_id": "u-ann"})).await;
    assert_eq!(claimed.error_code, Some(401), "{:?}", claimed.error);
    let anonymous = c
        .list_with(async_nats::HeaderMap::new(), json!({"user_id": "u-ann"}))
        .await;
    assert_eq!(anonymous.error_code, Some(401));
}

#[tokio::test]
async fn an_order_with_its_own_address_needs_no_registration() {
    let c = Cluster::start(1, &[]).await.unwrap();
    let mut sent = SentWatch::start(&c.client).await;
    c.order_event(
        "order.confirmed",
        json!({"id": "o-9", "user_id": "u-guest", "email": "guest@example.com", "currency": "JPY", "total_cents": 1200,
               "items": [{"product_id": "tea", "quantity": 3, "price_cents": 400}]}),
    )
    .await;
    let n = sent.next(1, WAIT).await.remove(0);
    assert_eq!(n["to"], "guest@example.com");
    let (head, body) = split_message(&c.spooled("notification-1")[0]);
    assert_eq!(header(&head, "To").as_deref(), Some("guest@example.com"));
    assert!(body.contains("3 x tea at 400 JPY = 1200 JPY"), "{body}");
}

#[tokio::test]
async fn eml_format_writes_one_file_per_message_named_after_it() {
    let c = Cluster::start(1, &[("SPOOL_FORMAT", "eml")]).await.unwrap();
    let mut sent = SentWatch::start(&c.client).await;
    c.register_user("u-eve", "eve@example.com", "Eve").await;
    let welcome = sent.next(1, WAIT).await.remove(0);
    let id = welcome["id"].as_str().unwrap();
    let files = c.spool_files("notification-1");
    assert_eq!(files.len(), 1);
    assert_eq!(
        files[0].file_name().unwrap().to_str().unwrap(),
        format!("{id}.eml")
    );
    let (head, _) = read_eml(&files[0]);
    assert_eq!(
        header(&head, "To").as_deref(),
        Some("Eve <eve@example.com>")
    );
    assert_eq!(
        header(&head, "Message-ID"),
        Some(format!("<{id}@localhost>"))
    );
    let segments =
        notification_service::mbox::segments(&c.data_dir("notification-1").join("spool")).unwrap();
    assert!(segments.is_empty(), "no mbox segment: {segments:?}");
}

#[tokio::test]
async fn services_protocol_and_admin_http() {
    let c = Cluster::start(1, &[]).await.unwrap();
    let info = c
        .client
        .request("$SRV.INFO.notification", "".into())
        .await
        .unwrap();
    let info: Value = serde_json::from_slice(&info.payload).unwrap();
    assert_eq!(info["endpoints"][0]["subject"], "notification.list");
    let (status, health) = testkit::http::get(&c.instances[0].admin_addr, "/health")
        .await
        .unwrap();
    assert_eq!(status, 200, "{health}");
    let unknown = c
        .client
        .request("notification.send", "{}".into())
        .await
        .unwrap();
    assert_eq!(
        unknown
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Service-Error-Code"))
            .map(|v| v.as_str()),
        Some("404")
    );
}
