//! Several instances share the work: every event becomes exactly one message
//! in total, and each instance delivers some of them.

mod common;

use std::{collections::HashSet, time::Duration};

use common::{Cluster, SentWatch};
use serde_json::json;

const USERS: usize = 30;

#[tokio::test]
async fn three_instances_share_the_work_and_send_each_message_once() {
    let c = Cluster::start(3, &[("NOTIFY_CONCURRENCY", "2")])
        .await
        .unwrap();
    let mut sent = SentWatch::start(&c.client).await;

    let mut sources = HashSet::new();
    for i in 0..USERS {
        sources.insert(
            c.register_user(
                &format!("u{i}"),
                &format!("user{i}@example.com"),
                &format!("User {i}"),
            )
            .await,
        );
    }
    // Orders right behind the registrations: an instance may get an order
    // before the registration was recorded (by another instance); it retries.
    for i in 0..USERS {
        sources.insert(
            c.order_event(
                "order.confirmed",
                json!({"id": format!("o{i}"), "user_id": format!("u{i}"), "currency": "EUR", "total_cents": 100 + i,
                       "items": [{"product_id": "p", "quantity": 1, "price_cents": 100 + i}]}),
            )
            .await,
        );
    }
    let notifications = sent.next(2 * USERS, Duration::from_secs(60)).await;
    let sent_sources: HashSet<String> = notifications
        .iter()
        .map(|n| n["source_event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sent_sources, sources, "one notification per event");

    // Exactly one message per event across all instances' spools, and every
    // instance delivered some.
    let mut messages = Vec::new();
    for instance in &c.instances {
        let own = c.spooled(&instance.instance_id);
        assert!(
            !own.is_empty(),
            "{} delivered nothing: the work was not shared",
            instance.instance_id
        );
        messages.extend(own);
    }
    assert_eq!(messages.len(), 2 * USERS, "{messages:?}");
    let ids: HashSet<_> = messages
        .iter()
        .map(|m| common::header(&common::split_message(m).0, "Message-ID").unwrap())
        .collect();
    assert_eq!(ids.len(), 2 * USERS, "no message delivered twice");
    assert_eq!(c.sent_events_stored().await, 2 * USERS as u64);

    // Every instance answers for every user, whoever did the work.
    let revision = c.stream_last_sequence("NOTIFICATION").await;
    for i in 0..USERS {
        let reply = c
            .list(json!({"user_id": format!("u{i}"), "min_revision": revision}))
            .await;
        let items = reply.body["items"].as_array().unwrap();
        // Newest first is the order they were sent in: an order may overtake
        // the welcome when the two are handled by different instances at once.
        let mut kinds: Vec<&str> = items.iter().map(|n| n["kind"].as_str().unwrap()).collect();
        kinds.sort();
        assert_eq!(kinds, ["order_confirmed", "welcome"], "u{i}");
        for item in items {
            assert_eq!(item["to"], json!(format!("user{i}@example.com")));
        }
    }

    // The consumers' counters agree: all events acknowledged once in total
    // (counted just after each ack), and each instance acknowledged some.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut per_instance = Vec::new();
        for i in 0..c.instances.len() {
            let metrics = c.metrics(i).await;
            let ok = ["notification-users", "notification-orders"]
                .iter()
                .map(|consumer| {
                    testkit::metrics::value(
                        &metrics,
                        "shop_events_consumed_total",
                        &[("consumer", consumer), ("outcome", "ok")],
                    )
                    .unwrap_or(0.0)
                })
                .sum::<f64>();
            per_instance.push(ok);
        }
        if per_instance.iter().sum::<f64>() == (2 * USERS) as f64 {
            assert!(
                per_instance.iter().all(|ok| *ok > 0.0),
                "every instance acknowledged some: {per_instance:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "acknowledged per instance: {per_instance:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
