//! The order-placement saga through real services.

mod common;

use std::{collections::HashMap, time::Duration};

use common::{payment_amount, payment_order_id, Shop};
use futures::StreamExt;
use serde_json::{json, Value};

/// Notifications sent to `user_id` about orders, once `expected` have arrived.
async fn order_notifications(shop: &Shop, user_id: &str, expected: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply = shop
            .req(
                "notification.list",
                json!({"user_id": user_id, "limit": 100}),
            )
            .await;
        assert!(reply.is_ok(), "notification.list: {:?}", reply.error);
        let items: Vec<Value> = reply.body["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n["kind"].as_str().unwrap_or_default().contains("order"))
            .collect();
        if items.len() >= expected || tokio::time::Instant::now() > deadline {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (10 s at most) until order `id`'s payment token is purged.
async fn token_purged(shop: &Shop, id: &str) -> bool {
    let js = async_nats::jetstream::new(shop.client.clone());
    let tokens = js.get_key_value("order_payment_tokens").await.unwrap();
    let mut entries = tokens.watch_with_history(id).await.unwrap();
    let purged = async {
        while let Some(entry) = entries.next().await {
            if entry.unwrap().operation != async_nats::jetstream::kv::Operation::Put {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(Duration::from_secs(10), purged)
        .await
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_declined_and_out_of_stock() {
    let shop = Shop::start(1, &[]).await.unwrap();
    shop.product("kb", 10, 4_999).await;
    shop.product("mouse", 1, 1_999).await;
    let user = shop.user("buyer@example.com").await;

    let ok = shop
        .place(
            &user,
            json!([{"product_id": "kb", "quantity": 2}]),
            "tok_ok",
            "happy",
        )
        .await;
    let declined = shop
        .place(
            &user,
            json!([{"product_id": "kb", "quantity": 1}]),
            "tok_decline",
            "declined",
        )
        .await;
    let short = shop
        .place(
            &user,
            json!([{"product_id": "kb", "quantity": 1}, {"product_id": "mouse", "quantity": 5}]),
            "tok_ok",
            "short",
        )
        .await;
    assert_eq!(ok["total_cents"], 2 * 4_999, "priced at creation");
    let ids: Vec<String> = [&ok, &declined, &short]
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect();
    let settled = shop.settle(&ids, Duration::from_secs(30)).await;

    assert_eq!(settled[&ids[0]]["status"], "confirmed");
    assert!(settled[&ids[0]]["payment_id"].is_string());
    assert_eq!(settled[&ids[1]]["status"], "cancelled");
    assert_eq!(settled[&ids[1]]["reason"], "payment_declined");
    assert_eq!(settled[&ids[2]]["status"], "cancelled");
    assert_eq!(settled[&ids[2]]["reason"], "out_of_stock");

    assert_eq!(
        shop.stock("kb").await,
        8,
        "only the confirmed order keeps stock; the others released theirs"
    );
    assert_eq!(shop.stock("mouse").await, 1);

    let captures = shop.stream_events("PAYMENT", "payment.captured").await;
    let per_order = |id: &str| {
        captures
            .iter()
            .filter(|e| payment_order_id(e) == id)
            .count()
    };
    assert_eq!(
        per_order(&ids[0]),
        1,
        "one capture for the confirmed order: {captures:?}"
    );
    assert_eq!(per_order(&ids[1]), 0);
    assert_eq!(per_order(&ids[2]), 0, "nothing charged when stock ran out");

    // Each final order's payment token is purged from the bucket (in a task
    // of its own, after the final event).
    for id in &ids {
        assert!(token_purged(&shop, id).await, "token of {id} still kept");
    }

    let notes = order_notifications(&shop, &user, 3).await;
    assert_eq!(
        notes.len(),
        3,
        "one notification per final order event: {notes:?}"
    );

    // A repeated create with the same key is the same order, not a second one.
    let again = shop
        .req("order.create", json!({"user_id": user, "items": [{"product_id": "kb", "quantity": 2}], "payment_token": "tok_ok", "idempotency_key": "happy"}))
        .await;
    assert_eq!(again.body["id"], ok["id"]);
    assert_eq!(
        again.body["status"], "confirmed",
        "the existing order, as it is now"
    );

    // A confirmed order can be cancelled: refunded and its stock released.
    let cancel = shop.req("order.cancel", json!({"id": ids[0]})).await;
    assert!(cancel.is_ok(), "{:?}", cancel.error);
    let cancelled = shop.settle(&ids[..1], Duration::from_secs(30)).await;
    assert_eq!(cancelled[&ids[0]]["status"], "cancelled");
    assert_eq!(cancelled[&ids[0]]["reason"], "cancelled_by_user");
    assert_eq!(shop.stock("kb").await, 10);
    let refunds = shop.stream_events("PAYMENT", "payment.refunded").await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_orders_are_refused_and_change_nothing() {
    let shop = Shop::start(1, &[]).await.unwrap();
    shop.product("kb", 10, 4_999).await;
    let u1 = shop.user("u1@example.com").await;
    let cases = [
        (
            json!({"user_id": u1, "items": [], "payment_token": "tok_ok", "idempotency_key": "k"}),
            "items",
        ),
        (
            json!({"user_id": u1, "items": [{"product_id": "kb", "quantity": 0}], "payment_token": "tok_ok", "idempotency_key": "k"}),
            "quantity",
        ),
        (
            json!({"user_id": u1, "items": [{"product_id": "ghost", "quantity": 1}], "payment_token": "tok_ok", "idempotency_key": "k"}),
            "does not exist",
        ),
        (
            json!({"user_id": u1, "items": [{"product_id": "kb", "quantity": 1}], "idempotency_key": "k"}),
            "payment_token",
        ),
        (
            json!({"user_id": u1, "items": "kb", "payment_token": "tok_ok", "idempotency_key": "k"}),
            "invalid type",
        ),
    ];
    for (payload, needle) in cases {
        let reply = shop.req("order.create", payload.clone()).await;
        assert_eq!(reply.error_code, Some(400), "{payload}: {:?}", reply.error);
        assert!(
            reply.error.as_deref().unwrap_or_default().contains(needle),
            "{payload}: {:?}",
            reply.error
        );
    }
    assert_eq!(
        shop.last_sequence("ORDER").await,
        0,
        "no order event written"
    );
    assert_eq!(
        shop.req("order.get", json!({"id": "nope"}))
            .await
            .error_code,
        Some(404)
    );
    assert_eq!(
        shop.req("order.cancel", json!({"id": "nope"}))
            .await
            .error_code,
        Some(404)
    );
    assert_eq!(shop.stock("kb").await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_at_each_step_is_taken_over() {
    let mut shop = Shop::start(1, &[]).await.unwrap();
    // The healthy order instance started by Shop::start is stopped: each round runs
    // one instance that dies at the fault point, then a healthy one that finishes.
    let first_order = shop.processes.len() - 1;
    shop.processes[first_order].kill9().unwrap();
    shop.product("kb", 100, 1_000).await;
    let user = shop.user("crash@example.com").await;
    let mut expected_stock = 100;
    for (round, point) in [
        "after_reserve",
        "after_charge",
        "before_confirm",
        "after_compensate",
    ]
    .iter()
    .enumerate()
    {
        let faulty = shop.add_order(&[("ORDER_FAULT_AT", point)]).await.unwrap();
        let token = if *point == "after_compensate" {
            "tok_decline"
        } else {
            "tok_ok"
        };
        let order = shop
            .place(
                &user,
                json!([{"product_id": "kb", "quantity": 3}]),
                token,
                &format!("crash-{round}"),
            )
            .await;
        let id = order["id"].as_str().unwrap().to_string();
        let status = shop.processes[faulty]
            .wait_exit(Duration::from_secs(30))
            .await
            .unwrap();
        assert!(!status.success(), "{point}: the faulty instance aborted");
        let healthy = shop.add_order(&[]).await.unwrap();
        let settled = shop
            .settle(std::slice::from_ref(&id), Duration::from_secs(30))
            .await;
        let expected = if *point == "after_compensate" {
            "cancelled"
        } else {
            "confirmed"
        };
        assert_eq!(settled[&id]["status"], expected, "{point}");
        if expected == "confirmed" {
            expected_stock -= 3;
        }
        assert_eq!(
            shop.stock("kb").await,
            expected_stock,
            "{point}: stock reserved exactly once"
        );
        let captures = shop.stream_events("PAYMENT", "payment.captured").await;
        let count = captures
            .iter()
            .filter(|e| payment_order_id(e) == id)
            .count();
        assert_eq!(
            count,
            usize::from(expected == "confirmed"),
            "{point}: exactly one capture"
        );
        shop.processes[healthy].kill9().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_orders_keep_every_invariant() {
    let shop = Shop::start(3, &[]).await.unwrap();
    // p0-p3 run out; p4 never does, so the declined orders reach their charge
    // whatever order the saga takes them in.
    let products = [
        ("p0", 40),
        ("p1", 40),
        ("p2", 25),
        ("p3", 10),
        ("p4", 1_000),
    ];
    for (id, stock) in products {
        shop.product(id, stock, 1_000).await;
    }
    let users: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..5 {
            v.push(shop.user(&format!("load{i}@example.com")).await);
        }
        v
    };
    let mut tasks = Vec::new();
    for n in 0..200usize {
        let client = shop.client.clone();
        let user = users[n % users.len()].clone();
        let (token, items) = if n % 7 == 0 {
            ("tok_decline", json!([{"product_id": "p4", "quantity": 1}]))
        } else {
            (
                "tok_ok",
                json!([{"product_id": format!("p{}", n % 4), "quantity": 1 + n % 2}, {"product_id": format!("p{}", (n + 1) % 4), "quantity": 1}]),
            )
        };
        let auth = shop.auth_of(&user);
        tasks.push(tokio::spawn(async move {
            let body = json!({"user_id": user, "items": items, "payment_token": token, "idempotency_key": format!("load-{n}")});
            testkit::request_json_with_headers(&client, "order.create", auth, body.to_string())
                .await
                .unwrap()
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        let reply = task.await.unwrap();
        assert!(reply.is_ok(), "order.create under load: {:?}", reply.error);
        ids.push(reply.body["id"].as_str().unwrap().to_string());
    }
    let settled = shop.settle(&ids, Duration::from_secs(120)).await;

    // Stock left plus quantities in confirmed orders equals the starting stock.
    let mut confirmed_qty: HashMap<String, i64> = HashMap::new();
    for order in settled.values().filter(|o| o["status"] == "confirmed") {
        for line in order["items"].as_array().unwrap() {
            *confirmed_qty
                .entry(line["product_id"].as_str().unwrap().to_string())
                .or_default() += line["quantity"].as_i64().unwrap();
        }
    }
    for (id, start) in products {
        let left = shop.stock(id).await;
        assert_eq!(
            left + confirmed_qty.get(id).copied().unwrap_or(0),
            start,
            "{id}: stock left + confirmed = start"
        );
    }
    let confirmed = settled
        .values()
        .filter(|o| o["status"] == "confirmed")
        .count();
    let cancelled: Vec<&Value> = settled
        .values()
        .filter(|o| o["status"] == "cancelled")
        .collect();
    assert!(confirmed > 0 && !cancelled.is_empty());
    assert!(cancelled.iter().any(|o| o["reason"] == "payment_declined"));
    assert!(cancelled.iter().any(|o| o["reason"] == "out_of_stock"));

    // Every confirmed order has exactly one capture; every cancelled one nets zero.
    let captures = shop.stream_events("PAYMENT", "payment.captured").await;
    let refunds = shop.stream_events("PAYMENT", "payment.refunded").await;
    for (id, order) in &settled {
        let captured: Vec<&Value> = captures
            .iter()
            .filter(|e| payment_order_id(e) == *id)
            .collect();
        if order["status"] == "confirmed" {
            assert_eq!(captured.len(), 1, "order {id}: one capture");
        } else {
            let refunded: i64 = refunds
                .iter()
                .filter(|e| payment_order_id(e) == *id)
                .map(payment_amount)
                .sum();
            let charged: i64 = captured.iter().map(|e| payment_amount(e)).sum();
            assert_eq!(charged, refunded, "cancelled order {id} nets zero");
        }
    }

    // Exactly one notification per final order event.
    for user in &users {
        let mine = settled
            .values()
            .filter(|o| o["user_id"] == user.as_str())
            .count();
        let notes = order_notifications(&shop, user, mine).await;
        assert_eq!(notes.len(), mine, "user {user}: one notification per order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_flaky_payments_still_capture_once() {
    let shop = Shop::start(1, &[]).await.unwrap();
    shop.product("kb", 10, 1_000).await;
    let user = shop.user("slow@example.com").await;
    let slow = shop
        .place(
            &user,
            json!([{"product_id": "kb", "quantity": 1}]),
            "tok_timeout",
            "slow",
        )
        .await;
    let flaky = shop
        .place(
            &user,
            json!([{"product_id": "kb", "quantity": 1}]),
            "tok_flaky",
            "flaky",
        )
        .await;
    let ids: Vec<String> = [&slow, &flaky]
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect();
    let settled = shop.settle(&ids, Duration::from_secs(60)).await;
    let captures = shop.stream_events("PAYMENT", "payment.captured").await;
    for id in &ids {
        assert_eq!(
            settled[id]["status"], "confirmed",
            "{id}: {:?}",
            settled[id]
        );
        assert_eq!(
            captures
                .iter()
                .filter(|e| payment_order_id(e) == *id)
                .count(),
            1,
            "{id}: one capture"
        );
    }
    assert_eq!(shop.stock("kb").await, 8);
}
