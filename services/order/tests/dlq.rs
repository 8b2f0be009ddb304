//! `shop dlq ls` and `shop dlq replay` against the whole shop. The order
//! instances dead-letter a saga step after 3 attempts (`ORDER_SAGA_MAX_DELIVER`,
//! as the saga did before it retried without limit), so an order cancelled
//! while product is down is left `cancelling` with its compensation in
//! `DEADLETTER`, the state the chaos runs found; junk on the product stream
//! is parked in `PARKED`. The operator lists both, replays the dead letters,
//! and the order ends cancelled with its stock and money back.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::Shop;
use futures::StreamExt;
use serde_json::{json, Value};

/// Runs `shop --server <nats> args...`: exit code, stdout, stderr.
async fn shop_cli(shop: &Shop, args: &[&str]) -> (i32, String, String) {
    let bin = testkit::workspace_bin("shop").unwrap();
    let mut command = std::process::Command::new(bin);
    command
        .arg("--server")
        .arg(shop.nats.url())
        .args(args)
        .env_remove("NATS_CREDS")
        .env("ADMIN_EMAIL", common::ADMIN_EMAIL)
        .env("ADMIN_PASSWORD", common::ADMIN_PASSWORD);
    // The bus is locked: the operator's identity reads DEADLETTER and PARKED.
    if let Some(creds) = testkit::operator_creds_of(&shop.nats.url()) {
        command.arg("--creds").arg(creds);
    }
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `shop dlq ls --json`, one object per line.
async fn listed(shop: &Shop) -> Vec<Value> {
    let (code, out, err) = shop_cli(shop, &["dlq", "ls", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The next message on a core subscription, within `timeout`.
async fn next(subscription: &mut async_nats::Subscriber, timeout: Duration) -> async_nats::Message {
    tokio::time::timeout(timeout, subscription.next())
        .await
        .expect("a message in time")
        .expect("subscription open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed_to_their_end() {
    let mut shop = Shop::start(
        1,
        &[
            ("ORDER_SAGA_MAX_DELIVER", "3"),
            ("ORDER_SAGA_RETRY_MAX_SECS", "1"),
        ],
    )
    .await
    .unwrap();
    shop.product("kb", 10, 2_000).await;
    shop.product("probe", 10, 100).await;
    let user = shop.user("dlq@example.com").await;
    let id = shop.confirmed(&user, "kb", 1, "dlq-1").await;

    // Junk on the product stream: parked by the product service.
    let mut parked = shop.client.subscribe("parked.>").await.unwrap();
    let mut dead = shop
        .client
        .subscribe("deadletter.order-saga")
        .await
        .unwrap();
    shop.client.flush().await.unwrap();
    let js = async_nats::jetstream::new(shop.client.clone());
    js.publish("events.product.ghost", Bytes::from_static(b"\x00not json"))
        .await
        .unwrap()
        .await
        .unwrap();
    next(&mut parked, Duration::from_secs(10)).await;

    // Product down: the cancel's compensation is dead-lettered after 3 attempts.
    let product = shop.instance("product");
    shop.processes[product].kill9().unwrap();
    let cancel = shop.req("order.cancel", json!({"id": id})).await;
    assert!(cancel.is_ok(), "{:?}", cancel.error);
    next(&mut dead, Duration::from_secs(30)).await;
    let stuck = shop.req("order.get", json!({"id": id})).await;
    assert_eq!(stuck.body["status"], "cancelling");

    // Listed: the dead letter and the parked event, with where, why and when.
    let items = listed(&shop).await;
    assert_eq!(items.len(), 2, "{items:?}");
    let letter = &items[0];
    assert_eq!(letter["by"], "order-saga");
    assert_eq!(letter["subject"], format!("events.order.{id}"));
    assert_eq!(letter["deliveries"], 3);
    assert!(
        letter["reason"].as_str().unwrap().starts_with("transient:"),
        "{letter}"
    );
    assert!(letter["original"].as_str().unwrap().starts_with("ORDER:"));
    assert!(letter["when"].as_str().unwrap().ends_with('Z'));
    let letter_id = letter["id"].as_str().unwrap().to_string();
    assert!(letter_id.starts_with("DEADLETTER:"), "{letter_id}");
    let poison = &items[1];
    assert_eq!(poison["by"], "product");
    assert_eq!(poison["subject"], "events.product.ghost");
    assert_eq!(poison["deliveries"], Value::Null);
    assert!(poison["reason"]
        .as_str()
        .unwrap()
        .starts_with("undecodable"));
    let poison_id = poison["id"].as_str().unwrap().to_string();
    let (code, table, _) = shop_cli(&shop, &["dlq", "ls"]).await;
    assert_eq!(code, 0);
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&letter_id) && l.contains("order-saga")),
        "{table}"
    );

    // Refusals, observed.
    let (code, _, err) = shop_cli(&shop, &["dlq", "replay", &poison_id]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot be replayed"), "{err}");
    assert!(
        err.contains("product service's state could not apply"),
        "{err}"
    );
    let (code, _, err) = shop_cli(&shop, &["dlq", "replay", "DEADLETTER:999"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no DEADLETTER:999"), "{err}");
    let (code, _, err) = shop_cli(&shop, &["dlq", "replay", "yesterday"]).await;
    assert_eq!(code, 2, "{err}");
    // order.redrive is an admin endpoint: a wrong admin password replays nothing.
    let (code, _, err) = shop_cli(
        &shop,
        &["dlq", "replay", &letter_id, "--admin-password", "wrong"],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("admin login: error 401"), "{err}");

    // Replayed while product is still down: re-driven, and its compensation
    // fails its 3 attempts again; the replay says so, and both stay listed.
    let (code, _, err) = shop_cli(&shop, &["dlq", "replay", &letter_id, "--wait", "30"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("dead-lettered again"), "{err}");
    next(&mut dead, Duration::from_secs(30)).await;
    assert_eq!(listed(&shop).await.len(), 3);

    // Product back, and reachable from the order instance again (its breaker
    // towards product has closed: a new order can be priced).
    shop.processes[product].restart().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let probe = shop
            .req("order.create", json!({"user_id": user, "items": [{"product_id": "probe", "quantity": 1}], "payment_token": "tok_decline", "idempotency_key": "probe"}))
            .await;
        if probe.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{:?}", probe.error);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Replaying every saga dead letter finishes the order.
    let (code, out, err) = shop_cli(&shop, &["dlq", "replay", "--all"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.matches("cancelled (cancelled_by_user)").count(),
        2,
        "{out}"
    );
    assert_eq!(out.matches("removed from DEADLETTER").count(), 2, "{out}");
    let order = shop.req("order.get", json!({"id": id})).await;
    assert_eq!(order.body["status"], "cancelled", "{:?}", order.body);
    assert_eq!(shop.stock("kb").await, 10, "stock back");
    let money = shop.money(&id).await;
    assert_eq!((money.captures, money.refunds), (1, 1), "{money:?}");
    assert_eq!(money.refunded_cents, 2_000);

    // Only the parked event is left; replaying again changes nothing.
    let left = listed(&shop).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["id"], poison_id.as_str());
    let (code, out, err) = shop_cli(&shop, &["dlq", "replay", &letter_id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no longer parked"), "{out}");
    let money = shop.money(&id).await;
    assert_eq!(money.refunds, 1, "refunded once, however often replayed");
}
