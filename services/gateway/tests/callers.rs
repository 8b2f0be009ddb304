//! Callers proven, secrets off the bus, through the whole shop (real
//! nats-server, real service and gateway processes):
//!
//! - one user's token reaches none of another user's orders, profile,
//!   payments or notifications over NATS (with `Authorization` headers; over
//!   HTTP through the gateway in api.rs); an admin's token reaches them all;
//! - headers that merely claim a user (`Shop-User-Id`) or a role
//!   (`Shop-User-Roles: admin`) count for nothing;
//! - a request naming a reply subject outside the inbox prefix is not answered;
//! - the signing keys' bucket, the credential events and the payment tokens'
//!   bucket hold no secret in clear, read directly as a privileged client;
//! - no log line and no `LOGS` record holds a password, a token, a payment
//!   token or a key.

mod common;

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use common::{Shop, ADMIN_PASSWORD, PASSWORD};
use futures::StreamExt;
use serde_json::{json, Value};
use shop_nats::auth::bearer_headers;

/// A payment token the local provider approves (suffix allowed), easy to spot.
const PAYMENT_TOKEN: &str = "tok_ok_5ecret7oken";

/// Headers claiming `user_id` and the admin role, added to `base`.
fn claiming(mut base: HeaderMap, user_id: &str) -> HeaderMap {
    base.insert("Shop-User-Id", user_id);
    base.insert("Shop-User-Roles", "customer,admin");
    base
}

/// Waits until `user_id` has `n` notifications (listed with `token`).
async fn notifications(shop: &Shop, token: &str, user_id: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = shop.services["notification"].subscribe();
    loop {
        let reply = shop
            .req_as(token, "notification.list", json!({"user_id": user_id}))
            .await;
        assert!(reply.is_ok(), "{:?}", reply.error);
        let items = reply.body["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= n {
            return items;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{n} notifications for {user_id}: {items:?}"
        );
        // Each delivery is logged: wait for the next line rather than guess.
        let _ = tokio::time::timeout(left.min(Duration::from_millis(500)), lines.recv()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_are_proven_and_secrets_stay_sealed() {
    let shop = Shop::full(&[("GATEWAY_RATE_LIMIT_PER_SEC", "0")]).await;
    let http = &shop.http;
    let admin = shop.admin_token().await;
    let created = http
        .post(
            "/api/products",
            Some(&admin),
            json!({"id": "lamp", "name": "Lamp", "price_cents": 2_500, "currency": "USD", "stock": 5}),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");

    // Watch the payment tokens' bucket before any order: every value it ever holds.
    let js = async_nats::jetstream::new(shop.client.clone());
    let (ann, ann_token) = shop.customer("ann@example.com").await;
    let (bob, bob_token) = shop.customer("bob@example.com").await;
    let tokens_kv = js.get_key_value("order_payment_tokens").await.unwrap();
    let mut token_puts = tokens_kv.watch_all().await.unwrap();

    let mut events = shop.order_events().await;
    let placed = http
        .post(
            "/api/orders",
            Some(&ann_token),
            json!({"items": [{"product_id": "lamp", "quantity": 1}], "payment_token": PAYMENT_TOKEN, "idempotency_key": "ann-1"}),
        )
        .await;
    assert_eq!(placed.status, 201, "{placed:?}");
    let order_id = placed.json["id"].as_str().unwrap().to_string();
    let (order, _) = Shop::settled(&mut events, &order_id).await;
    assert_eq!(order["status"], "confirmed", "{order}");
    let payment_id = order["payment_id"].as_str().unwrap().to_string();
    let anns_notifications = notifications(&shop, &ann_token, &ann, 2).await;

    // --- One user's token reaches none of another's data, over NATS. ---
    let bob_h = bearer_headers(&bob_token);
    for (subject, payload, code) in [
        ("order.get", json!({"id": order_id}), 404),
        ("order.cancel", json!({"id": order_id}), 404),
        ("order.list", json!({"user_id": ann}), 403),
        ("user.get", json!({"id": ann}), 404),
        ("user.update", json!({"id": ann, "name": "Not Ann"}), 404),
        ("payment.get", json!({"payment_id": payment_id}), 404),
        ("notification.list", json!({"user_id": ann}), 403),
    ] {
        let reply = shop.req_with(subject, bob_h.clone(), payload.clone()).await;
        assert_eq!(
            reply.error_code,
            Some(code),
            "bob on {subject}: {:?}",
            reply.error
        );
        // Claiming to be ann, with the admin role, next to bob's real token: still bob.
        let reply = shop
            .req_with(subject, claiming(bob_h.clone(), &ann), payload.clone())
            .await;
        assert_eq!(
            reply.error_code,
            Some(code),
            "bob claiming ann on {subject}"
        );
        // The claim alone: no token, no user.
        let reply = shop
            .req_with(subject, claiming(HeaderMap::new(), &ann), payload.clone())
            .await;
        assert_eq!(
            reply.error_code,
            Some(401),
            "a claim alone on {subject}: {:?}",
            reply.error
        );
        // Ann's own token, and the admin's, reach them.
        if subject != "order.cancel" && subject != "user.update" {
            let own = shop.req_as(&ann_token, subject, payload.clone()).await;
            assert!(own.is_ok(), "ann on {subject}: {:?}", own.error);
            let any = shop.req_as(&admin, subject, payload).await;
            assert!(any.is_ok(), "admin on {subject}: {:?}", any.error);
        }
    }
    let forged_admin = shop
        .req_with(
            "product.create",
            claiming(bob_h.clone(), &bob),
            json!({"id": "forged", "name": "Forged", "price_cents": 1, "currency": "USD", "stock": 1}),
        )
        .await;
    assert_eq!(
        forged_admin.error_code,
        Some(403),
        "no admin power from a header"
    );
    assert_eq!(
        shop.req_as(&admin, "order.get", json!({"id": order_id}))
            .await
            .body["status"],
        "confirmed"
    );
    assert_eq!(
        shop.req_as(&ann_token, "user.get", json!({"id": ann}))
            .await
            .body["name"],
        "Test Customer",
        "unchanged"
    );

    // --- And over HTTP through the gateway (another user's orders, details,
    // cancel and list are refused in api.rs): a claim next to a token is ignored.
    let claimed = http
        .send(
            hyper::Method::GET,
            "/api/users/me",
            &[
                ("authorization", &format!("Bearer {bob_token}")),
                ("shop-user-id", &ann),
                ("shop-user-roles", "admin"),
            ],
            None,
        )
        .await;
    assert_eq!(
        claimed.json["id"],
        bob.as_str(),
        "the token decides: {claimed:?}"
    );
    let anonymous = http
        .send(
            hyper::Method::GET,
            &format!("/api/orders/{order_id}"),
            &[("shop-user-id", &ann), ("shop-user-roles", "admin")],
            None,
        )
        .await;
    assert_eq!(anonymous.status, 401);
    let details = http
        .get(&format!("/api/orders/{order_id}/details"), Some(&admin))
        .await;
    assert_eq!(details.json["payment"]["payment"]["user_id"], ann.as_str());
    assert_eq!(details.json["customer"]["profile"]["id"], ann.as_str());

    // --- Replies only to inboxes. ---
    let product = shop.services["product"].admin_addr.clone();
    let mut stolen = shop.client.subscribe("events.user.>").await.unwrap();
    shop.client.flush().await.unwrap();
    shop.client
        .publish_with_reply(
            "product.get",
            "events.user.registered.x",
            r#"{"id":"lamp"}"#.into(),
        )
        .await
        .unwrap();
    shop.client.flush().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = testkit::http::get(&product, "/metrics").await.unwrap();
        let refused = testkit::metrics::value(
            &text,
            "shop_replies_refused_total",
            &[("source", "endpoint")],
        );
        if refused == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the refusal is counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leaked = tokio::time::timeout(Duration::from_millis(300), stolen.next()).await;
    assert!(
        leaked.is_err(),
        "a product landed on events.user.>: {leaked:?}"
    );

    // --- Secrets at rest, read directly as a privileged client. ---
    let user_keys = shop.user_data_keys();
    let keys_kv = js.get_key_value("user_signing_keys").await.unwrap();
    let stored = keys_kv.get("keyset").await.unwrap().expect("a key set");
    let set: user_service::keys::KeySet = serde_json::from_slice(&stored).unwrap();
    let seed = set.keys[0].signer(&user_keys).unwrap().seed();
    let stored_text = String::from_utf8_lossy(&stored);
    for form in [
        URL_SAFE_NO_PAD.encode(seed),
        base64::engine::general_purpose::STANDARD.encode(seed),
    ] {
        assert!(
            !stored_text.contains(&form),
            "a seed in clear in the bucket"
        );
    }
    let user_stream = js.get_stream("USER").await.unwrap();
    let mut credentials = 0;
    let last = user_stream.get_info().await.unwrap().state.last_sequence;
    for sequence in 1..=last {
        let Ok(message) = user_stream.get_raw_message(sequence).await else {
            continue;
        };
        let raw = String::from_utf8_lossy(&message.payload).to_string();
        assert!(
            !raw.contains("$argon2"),
            "a hash in clear on {}",
            message.subject
        );
        assert!(!raw.contains(PASSWORD) && !raw.contains(ADMIN_PASSWORD));
        if message.subject.starts_with("events.user.credential.") {
            credentials += 1;
            let event: Value = serde_json::from_str(&raw).unwrap();
            assert!(event["sealed_password_hash"]
                .as_str()
                .unwrap()
                .starts_with("v1."));
        }
    }
    assert_eq!(credentials, 3, "ann, bob and the admin");
    let mut seen_token_values = 0;
    while let Ok(Some(Ok(entry))) =
        tokio::time::timeout(Duration::from_millis(200), token_puts.next()).await
    {
        if entry.operation != async_nats::jetstream::kv::Operation::Put {
            continue;
        }
        seen_token_values += 1;
        let value = String::from_utf8_lossy(&entry.value);
        assert!(!value.contains(PAYMENT_TOKEN), "a payment token in clear");
        assert!(value.starts_with("v1."), "{value}");
    }
    assert_eq!(seen_token_values, 1, "the order's token was kept, sealed");
    assert!(
        tokens_kv.get(&order_id).await.unwrap().is_none(),
        "and forgotten once the order was final"
    );

    // --- No secret in any log line or LOGS record. ---
    let user_key_text = std::fs::read_to_string(shop.data_key_file("user"))
        .unwrap()
        .trim()
        .to_string();
    let order_key_text = std::fs::read_to_string(shop.data_key_file("order"))
        .unwrap()
        .trim()
        .to_string();
    let secrets = [
        ("a password", PASSWORD.to_string()),
        ("the admin password", ADMIN_PASSWORD.to_string()),
        ("ann's token", ann_token.clone()),
        ("bob's token", bob_token.clone()),
        ("the admin's token", admin.clone()),
        (
            "a token's signature",
            ann_token.rsplit('.').next().unwrap().to_string(),
        ),
        ("the payment token", PAYMENT_TOKEN.to_string()),
        ("the user data key", user_key_text),
        ("the order data key", order_key_text),
        ("a signing seed", URL_SAFE_NO_PAD.encode(seed)),
        ("a hash", "$argon2".to_string()),
    ];
    let mut lines: Vec<String> = shop
        .services
        .values()
        .flat_map(|s| s.logs())
        .chain(shop.gateway().logs())
        .collect();
    assert!(lines.len() > 50, "the processes logged: {}", lines.len());
    let logs_stream = js.get_stream("LOGS").await.unwrap();
    let last = logs_stream.get_info().await.unwrap().state.last_sequence;
    let mut records = 0;
    for sequence in 1..=last {
        if let Ok(message) = logs_stream.get_raw_message(sequence).await {
            // One record per line; a message may carry several.
            for record in String::from_utf8_lossy(&message.payload).lines() {
                records += 1;
                lines.push(record.to_string());
            }
        }
    }
    assert!(records > 20, "records were published to LOGS: {records}");
    for line in &lines {
        for (what, secret) in &secrets {
            assert!(
                !line.contains(secret.as_str()),
                "{what} in a log line: {line}"
            );
        }
    }
    assert!(!anns_notifications.is_empty());
}
