//! Crashes between delivering a message and acknowledging its event, and
//! events that keep failing: still exactly one message per event.

mod common;

use std::time::Duration;

use common::{Cluster, DeadLetterWatch, SentWatch};
use serde_json::json;

/// The server hands an unacknowledged event to another consumer this soon.
const ACK_WAIT: (&str, &str) = ("NOTIFY_ACK_WAIT_SECS", "2");
const REDELIVERY: Duration = Duration::from_secs(20);

#[tokio::test]
async fn kill_9_after_recording_then_another_instance_dedupes_the_redelivery() {
    // Long enough for the second instance to start before the first one's
    // claim on the event runs out.
    let ack_wait = ("NOTIFY_ACK_WAIT_SECS", "6");
    let mut c = Cluster::start(0, &[]).await.unwrap();
    c.add_instance(
        "notification-1",
        &[ack_wait, ("NOTIFICATION_FAULT", "pause_after_record")],
    )
    .await
    .unwrap();
    let mut sent = SentWatch::start(&c.client).await;
    let event_id = c.register_user("u-k", "k@example.com", "Kay").await;
    let notification = sent.next(1, Duration::from_secs(15)).await.remove(0);
    assert_eq!(notification["source_event"], event_id.as_str());
    c.instances[0]
        .wait_for_log("\"fault injected\"", Duration::from_secs(10))
        .await
        .unwrap();
    // Delivered and recorded, not acknowledged: the server still owes the event.
    c.add_instance("notification-2", &[ack_wait]).await.unwrap();
    c.instances[0].kill9().unwrap();

    let line = c.instances[1]
        .wait_for_log("already delivered; acknowledging the repeat", REDELIVERY)
        .await
        .unwrap();
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["source_event"], event_id.as_str());
    assert!(line["attempt"].as_i64().unwrap() >= 2, "{line}");

    c.instances[0].restart().await.unwrap();
    let files: Vec<_> = ["notification-1", "notification-2"]
        .iter()
        .flat_map(|id| c.spooled(id))
        .collect();
    assert_eq!(files.len(), 1, "exactly one message: {files:?}");
    assert_eq!(c.sent_events_stored().await, 1);
    assert_eq!(c.list_fresh("u-k").await.len(), 1);
    common::await_metric(
        &c,
        1,
        "shop_events_consumed_total",
        &[("consumer", "notification-users"), ("outcome", "ok")],
        1.0,
    )
    .await;
}

#[tokio::test]
async fn kill_9_after_delivery_delivers_again_without_a_second_mbox_copy() {
    kill_9_after_delivery("mbox").await;
}

#[tokio::test]
async fn kill_9_after_delivery_delivers_again_into_the_same_eml_file() {
    kill_9_after_delivery("eml").await;
}

/// A crash between delivery and its record: the restarted instance delivers
/// again and the spool still holds one copy (the mbox spool reads what it
/// holds at start; the `.eml` spool rewrites the same file).
async fn kill_9_after_delivery(format: &str) {
    let mut c = Cluster::start(
        1,
        &[
            ACK_WAIT,
            ("NOTIFICATION_FAULT", "pause_after_delivery"),
            ("SPOOL_FORMAT", format),
        ],
    )
    .await
    .unwrap();
    let mut sent = SentWatch::start(&c.client).await;
    let event_id = c.register_user("u-d", "d@example.com", "Dee").await;
    c.instances[0]
        .wait_for_log("\"fault injected\"", Duration::from_secs(10))
        .await
        .unwrap();
    let spooled = c.spooled("notification-1");
    assert_eq!(spooled.len(), 1, "delivered before the crash");
    let files = c.spool_files("notification-1");
    assert_eq!(files.len(), usize::from(format == "eml"), "{files:?}");
    c.instances[0].kill9().unwrap();
    assert_eq!(
        c.sent_events_stored().await,
        0,
        "not recorded before the crash"
    );

    // The restarted instance gets the event again (the fault only strikes a
    // first delivery), delivers again, and records it.
    c.instances[0].restart().await.unwrap();
    let notification = sent.next(1, REDELIVERY).await.remove(0);
    assert_eq!(notification["source_event"], event_id.as_str());
    let line = c.instances[0]
        .wait_for_log("\"notification sent\"", Duration::from_secs(5))
        .await
        .unwrap();
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["attempt"], 2, "{line}");
    // One message still, the same one (the eml spool rewrote it: its Date
    // header is the second delivery's).
    let message_ids = |messages: &[String]| -> Vec<Option<String>> {
        messages
            .iter()
            .map(|m| common::header(&common::split_message(m).0, "Message-ID"))
            .collect()
    };
    assert_eq!(
        message_ids(&c.spooled("notification-1")),
        message_ids(&spooled),
        "the same single message"
    );
    assert_eq!(c.spool_files("notification-1"), files, "the same files");
    assert_eq!(c.sent_events_stored().await, 1);
    assert_eq!(c.list_fresh("u-d").await.len(), 1);
}

#[tokio::test]
async fn abort_after_recording_then_restart_acknowledges_without_sending_again() {
    let mut c = Cluster::start(1, &[ACK_WAIT, ("NOTIFICATION_FAULT", "abort_after_record")])
        .await
        .unwrap();
    let mut sent = SentWatch::start(&c.client).await;
    let event_id = c.register_user("u-a", "a@example.com", "Abe").await;
    sent.next(1, Duration::from_secs(15)).await;
    let status = c.instances[0]
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap();
    assert!(!status.success(), "aborted: {status:?}");

    c.instances[0].restart().await.unwrap();
    let line = c.instances[0]
        .wait_for_log("already delivered; acknowledging the repeat", REDELIVERY)
        .await
        .unwrap();
    assert!(line.contains(&event_id), "{line}");
    assert_eq!(c.spooled("notification-1").len(), 1);
    assert_eq!(c.sent_events_stored().await, 1);
    assert_eq!(c.list_fresh("u-a").await.len(), 1);
}

#[tokio::test]
async fn an_order_for_an_unknown_user_is_retried_then_dead_lettered() {
    let c = Cluster::start(1, common::FAST_RETRIES).await.unwrap();
    let mut dead = DeadLetterWatch::start(&c.client).await;
    c.order_event(
        "order.confirmed",
        json!({"id": "o-u", "user_id": "u-unknown", "currency": "USD", "total_cents": 5, "items": []}),
    )
    .await;
    let letter = dead.next(Duration::from_secs(15)).await;
    assert_eq!(letter.subject, "deadletter.notification-orders");
    let reason = letter.header("Shop-Dead-Letter-Reason");
    assert!(reason.contains("unknown user u-unknown"), "{reason}");
    assert_eq!(letter.header("Shop-Deliveries"), "3");
    common::await_metric(
        &c,
        0,
        "shop_dead_letters_total",
        &[("consumer", "notification-orders")],
        1.0,
    )
    .await;
    assert!(c.spooled("notification-1").is_empty());
}

#[tokio::test]
async fn a_registration_arriving_during_the_retries_lets_the_order_through() {
    let c = Cluster::start(
        1,
        &[("NOTIFY_MAX_DELIVER", "20"), ("NOTIFY_BACKOFF_MS", "200")],
    )
    .await
    .unwrap();
    let mut sent = SentWatch::start(&c.client).await;
    c.order_event(
        "order.confirmed",
        json!({"id": "o-late", "user_id": "u-late", "currency": "USD", "total_cents": 5, "items": []}),
    )
    .await;
    c.instances[0]
        .wait_for_log("unknown user u-late", Duration::from_secs(10))
        .await
        .unwrap();
    c.register_user("u-late", "late@example.com", "Lee").await;
    let mut kinds: Vec<String> = sent
        .next(2, Duration::from_secs(15))
        .await
        .iter()
        .map(|n| n["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["order_confirmed", "welcome"]);
    let listed = c.list_fresh("u-late").await;
    assert!(listed.iter().all(|n| n["to"] == "late@example.com"));
}
