//! Compensation always finishes and gives every captured payment back: an
//! order cancelled during a product outage longer than the old dead-letter
//! window, and cancels racing a charge (held between the capture and its
//! recording, held just before the charge, or killed after the capture and
//! taken over by another instance). A charge that had not gone out when the
//! order was cancelled never goes out: compensation voids its key.

mod common;

use std::time::Duration;

use common::Shop;
use serde_json::{json, Value};
use testkit::service::wait_for_line;

/// Order events of `id` on the `ORDER` stream, by type.
async fn order_events(shop: &Shop, kind: &str, id: &str) -> usize {
    shop.stream_events("ORDER", kind)
        .await
        .iter()
        .filter(|e| e["order"]["id"] == id)
        .count()
}

/// Asserts that `order` ended cancelled by its user with every captured cent back.
async fn assert_refunded(shop: &Shop, order: &Value, total_cents: i64, what: &str) {
    let id = order["id"].as_str().unwrap();
    assert_eq!(order["status"], "cancelled", "{what}: {order}");
    assert_eq!(order["reason"], "cancelled_by_user", "{what}");
    let money = shop.money(id).await;
    assert_eq!(money.captures, 1, "{what}: one capture: {money:?}");
    assert_eq!(money.refunds, 1, "{what}: refunded once: {money:?}");
    assert_eq!(money.refunded_cents, total_cents, "{what}: {money:?}");
    let payment = money.payment.unwrap();
    assert_eq!(payment["refunded_cents"], total_cents, "{what}: {payment}");
    assert_eq!(payment["amount_cents"], total_cents, "{what}: {payment}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_cancelled_during_a_35_s_product_outage_is_cancelled_and_refunded() {
    // Attempts every 2 s at most: the outage outlasts the old window of 10
    // attempts (about 14 s) by far.
    let mut shop = Shop::start(1, &[("ORDER_SAGA_RETRY_MAX_SECS", "2")])
        .await
        .unwrap();
    shop.product("kb", 10, 2_500).await;
    let user = shop.user("outage@example.com").await;
    let id = shop.confirmed(&user, "kb", 2, "outage").await;
    assert_eq!(shop.stock("kb").await, 8);

    let product = shop.instance("product");
    let order = shop.instance("order");
    let mut order_log = shop.processes[order].subscribe();
    shop.processes[product].kill9().unwrap();
    let outage = tokio::time::Instant::now();
    let cancel = shop.req("order.cancel", json!({"id": id})).await;
    assert!(cancel.is_ok(), "{:?}", cancel.error);
    assert_eq!(cancel.body["status"], "cancelling");

    // Past 30 s of failing, the instance says so once.
    let warning = wait_for_line(
        &mut order_log,
        "compensation keeps failing",
        Duration::from_secs(45),
    )
    .await
    .unwrap();
    assert!(warning.contains(&id), "{warning}");
    assert!(warning.contains("\"step\":\"release\""), "{warning}");
    tokio::time::sleep_until(outage + Duration::from_secs(35)).await;

    // Still compensating, never dead-lettered, and retried well past 10 attempts.
    let during = shop.req("order.get", json!({"id": id})).await;
    assert_eq!(during.body["status"], "cancelling", "{:?}", during.body);
    let admin = shop.processes[order].admin_addr.clone();
    let retries = common::metric(
        &admin,
        "shop_order_compensation_retries_total",
        &[("step", "release")],
    )
    .await;
    assert!(retries >= 10.0, "{retries} failed attempts counted");
    let dead = shop.stream_state("DEADLETTER").await.messages;
    assert_eq!(
        dead, 0,
        "nothing dead-lettered while the failure is transient"
    );

    // Product back: the next attempt finishes the compensation.
    shop.processes[product].restart().await.unwrap();
    let settled = shop
        .settle(std::slice::from_ref(&id), Duration::from_secs(20))
        .await;
    assert_refunded(&shop, &settled[&id], 5_000, "after the outage").await;
    assert_eq!(shop.stock("kb").await, 10, "stock back");
    assert_eq!(order_events(&shop, "order.cancelled", &id).await, 1);
}

/// How the charge step of a round is interrupted (`ORDER_FAULT_AT`).
const RACES: &[(&str, &str)] = &[
    (
        "hold_after_charge",
        "captured, then held until the cancelled order is compensated; it then finds its capture unrecorded and refunds it",
    ),
    (
        "hold_before_charge,after_charge",
        "held before sending the charge until the cancelled order is compensated, which voids its key; the charge is then refused and nothing is charged",
    ),
    (
        "after_charge",
        "dies right after the capture; another instance takes the cancel and compensates",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_a_charge_gets_the_money_back() {
    // Redelivery to another instance only 10 s after the last word from the
    // one holding a step: room for the cancel to land first.
    let ack_wait = ("ORDER_SAGA_ACK_WAIT_SECS", "10");
    let mut shop = Shop::start(1, &[ack_wait]).await.unwrap();
    let first = shop.instance("order");
    shop.processes[first].kill9().unwrap();
    shop.product("kb", 100, 1_000).await;
    let user = shop.user("race@example.com").await;

    for (round, (points, what)) in RACES.iter().enumerate() {
        // The only order instance, so the order's charge step runs there.
        let faulty = shop
            .add_order(&[ack_wait, ("ORDER_FAULT_AT", points)])
            .await
            .unwrap();
        let mut faulty_log = shop.processes[faulty].subscribe();
        let placed = shop
            .place(
                &user,
                json!([{"product_id": "kb", "quantity": 3}]),
                "tok_ok",
                &format!("race-{round}"),
            )
            .await;
        let id = placed["id"].as_str().unwrap().to_string();
        let holds = points.starts_with("hold_");
        let mut taker = None;
        if holds {
            wait_for_line(
                &mut faulty_log,
                "holding the step until the order's saga ends",
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        } else {
            let status = shop.processes[faulty]
                .wait_exit(Duration::from_secs(30))
                .await
                .unwrap();
            assert!(!status.success(), "{what}: aborted after the capture");
            taker = Some(shop.add_order(&[ack_wait]).await.unwrap());
        }
        let cancel = shop.req("order.cancel", json!({"id": id})).await;
        assert!(cancel.is_ok(), "{what}: {:?}", cancel.error);
        assert_eq!(
            cancel.body["cancelled_from"], "pending",
            "{what}: cancelled between the reservation and a recorded charge"
        );
        let settled = shop
            .settle(std::slice::from_ref(&id), Duration::from_secs(30))
            .await;
        match *points {
            "hold_after_charge" => {
                wait_for_line(
                    &mut faulty_log,
                    "charge captured after the order was cancelled; refunding it",
                    Duration::from_secs(30),
                )
                .await
                .unwrap();
            }
            "hold_before_charge,after_charge" => {
                wait_for_line(
                    &mut faulty_log,
                    "charge refused: the order's cancellation voided its key",
                    Duration::from_secs(30),
                )
                .await
                .unwrap();
            }
            _ => {}
        }
        assert_eq!(
            order_events(&shop, "order.paid", &id).await
                + order_events(&shop, "order.confirmed", &id).await,
            0,
            "{what}: the capture was never recorded on the order"
        );
        if *points == "hold_before_charge,after_charge" {
            let order = &settled[&id];
            assert_eq!(order["status"], "cancelled", "{what}: {order}");
            let money = shop.money(&id).await;
            assert_eq!((money.captures, money.refunds), (0, 0), "{what}: {money:?}");
            let voided = shop.stream_events("PAYMENT", "payment.voided").await;
            assert_eq!(
                voided
                    .iter()
                    .filter(|e| e["payment"]["order_id"] == id.as_str())
                    .count(),
                1,
                "{what}: the key was voided"
            );
        } else {
            assert_refunded(&shop, &settled[&id], 3_000, what).await;
        }
        assert_eq!(shop.stock("kb").await, 100, "{what}: stock back");
        for index in [Some(faulty), taker].into_iter().flatten() {
            shop.processes[index].kill9().unwrap();
        }
    }
}
