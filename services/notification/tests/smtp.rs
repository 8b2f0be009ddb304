//! The SMTP path against a real SMTP server on a loopback port: delivery,
//! a server that is down (retries with backoff, then a dead letter), and a
//! server that refuses the recipient (a dead letter at once).

mod common;

use std::time::{Duration, Instant};

use common::{
    await_metric, header,
    smtp::{Mode, SmtpServer},
    Cluster, DeadLetterWatch, SentWatch,
};
use serde_json::json;

#[tokio::test]
async fn delivers_through_smtp_with_a_stable_message_id() {
    let server = SmtpServer::start(Mode::Accept).await;
    let url = server.url();
    let c = Cluster::start(
        1,
        &[
            ("SMTP_URL", url.as_str()),
            ("MAIL_FROM", "Shop <shop@example.com>"),
        ],
    )
    .await
    .unwrap();
    let mut sent = SentWatch::start(&c.client).await;
    c.register_user("u-smtp", "bo@example.com", "Bo").await;

    let message = server.next_message(Duration::from_secs(15)).await;
    let notification = sent.next(1, Duration::from_secs(15)).await.remove(0);
    assert_eq!(message.mail_from, "shop@example.com");
    assert_eq!(message.rcpt_to, ["bo@example.com"]);
    let (head, body) = message.data.split_once("\r\n\r\n").unwrap();
    let id = notification["id"].as_str().unwrap();
    assert_eq!(
        header(head, "Message-ID"),
        Some(format!("<{id}@example.com>"))
    );
    assert_eq!(
        notification["message_id"],
        format!("<{id}@example.com>").as_str()
    );
    assert_eq!(
        header(head, "From").as_deref(),
        Some("Shop <shop@example.com>")
    );
    assert_eq!(header(head, "To").as_deref(), Some("Bo <bo@example.com>"));
    assert_eq!(
        header(head, "Subject").as_deref(),
        Some("Welcome to the shop, Bo!")
    );
    assert_eq!(header(head, "MIME-Version").as_deref(), Some("1.0"));
    assert!(body.starts_with("Hello Bo,"), "{body}");

    let listed = c.list_fresh("u-smtp").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id);
    assert!(
        c.spooled("notification-1").is_empty(),
        "with SMTP_URL nothing is spooled"
    );
    assert!(server.pending().await.is_empty(), "sent once");
}

#[tokio::test]
async fn smtp_down_is_retried_with_backoff_then_dead_lettered() {
    // A port with nothing listening: connections are refused.
    let port = testkit::nats_server::free_port().unwrap();
    let url = format!("smtp://127.0.0.1:{port}");
    let env = [
        ("SMTP_URL", url.as_str()),
        ("SMTP_TIMEOUT_SECS", "2"),
        ("NOTIFY_MAX_DELIVER", "3"),
        ("NOTIFY_BACKOFF_MS", "300,600"),
    ];
    let c = Cluster::start(1, &env).await.unwrap();
    let mut dead = DeadLetterWatch::start(&c.client).await;
    let published = Instant::now();
    let event_id = c.register_user("u-down", "down@example.com", "Dee").await;

    let letter = dead.next(Duration::from_secs(20)).await;
    let elapsed = published.elapsed();
    assert_eq!(letter.subject, "deadletter.notification-users");
    let reason = letter.header("Shop-Dead-Letter-Reason");
    assert!(reason.starts_with("transient:"), "{reason}");
    assert!(reason.contains("SMTP delivery failed"), "{reason}");
    assert_eq!(letter.header("Shop-Deliveries"), "3");
    assert_eq!(
        format!(
            "{}:{}",
            letter.header("Shop-Original-Stream"),
            letter.header("Shop-Original-Sequence")
        ),
        event_id
    );
    assert!(
        elapsed >= Duration::from_millis(900),
        "two backoffs of 300 and 600 ms came first, took {elapsed:?}"
    );

    // Each retry was logged with its wait.
    let logs = c.instances[0].logs();
    let retries: Vec<serde_json::Value> = logs
        .iter()
        .filter(|l| l.contains("event failed; will retry"))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let waits: Vec<(i64, i64)> = retries
        .iter()
        .map(|r| {
            (
                r["attempt"].as_i64().unwrap(),
                r["retry_in_ms"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(waits, [(1, 300), (2, 600)]);
    assert!(
        logs.iter().all(|l| !l.contains("down@example.com")),
        "addresses are not logged"
    );

    // Counted once the runtime has the dead letter stored (just after we see it).
    await_metric(
        &c,
        0,
        "shop_dead_letters_total",
        &[("consumer", "notification-users")],
        1.0,
    )
    .await;
    await_metric(
        &c,
        0,
        "shop_events_consumed_total",
        &[("consumer", "notification-users"), ("outcome", "retry")],
        2.0,
    )
    .await;
    assert!(
        c.list_fresh("u-down").await.is_empty(),
        "nothing recorded as sent"
    );
    assert_eq!(c.sent_events_stored().await, 0);
}

#[tokio::test]
async fn a_refused_recipient_is_dead_lettered_at_once() {
    let server = SmtpServer::start(Mode::RejectRecipients).await;
    let url = server.url();
    let c = Cluster::start(
        1,
        &[("SMTP_URL", url.as_str()), ("NOTIFY_MAX_DELIVER", "5")],
    )
    .await
    .unwrap();
    let mut dead = DeadLetterWatch::start(&c.client).await;
    c.order_event(
        "order.cancelled",
        json!({"id": "o-x", "user_id": "u-x", "email": "gone@example.com", "currency": "USD", "total_cents": 100, "items": []}),
    )
    .await;
    let letter = dead.next(Duration::from_secs(15)).await;
    assert_eq!(letter.subject, "deadletter.notification-orders");
    let reason = letter.header("Shop-Dead-Letter-Reason");
    assert!(reason.starts_with("permanent:"), "{reason}");
    assert!(reason.contains("550"), "{reason}");
    assert_eq!(letter.header("Shop-Deliveries"), "1");
    await_metric(
        &c,
        0,
        "shop_dead_letters_total",
        &[("consumer", "notification-orders")],
        1.0,
    )
    .await;
    assert_eq!(server.connections(), 1, "not retried");
    assert!(c.list_fresh("u-x").await.is_empty());
}
