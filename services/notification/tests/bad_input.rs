//! Bad input: a clear 4xx and no change in state, for requests; for events
//! that can never become a message, a dead letter with the reason at once and
//! nothing sent.

mod common;

use std::time::Duration;

use common::{await_metric, Cluster, DeadLetterWatch, SentWatch};
use serde_json::json;

#[tokio::test]
async fn bad_list_requests_get_clear_4xx_and_change_nothing() {
    let c = Cluster::start(1, &[]).await.unwrap();
    let mut sent = SentWatch::start(&c.client).await;
    c.register_user("u1", "u1@example.com", "One").await;
    sent.next(1, Duration::from_secs(15)).await;
    let before_list = c.list_fresh("u1").await;
    let before_seq = c.stream_last_sequence("NOTIFICATION").await;

    let big = format!(
        "{{\"user_id\":\"u1\",\"pad\":\"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "invalid JSON"),
        ("".into(), "empty payload"),
        ("[]".into(), "invalid length"),
        (json!({}).to_string(), "missing field `user_id`"),
        (json!({"user_id": 7}).to_string(), "invalid type"),
        (json!({"user_id": ""}).to_string(), "user_id must be"),
        (json!({"user_id": "a.b"}).to_string(), "user_id must be"),
        (json!({"user_id": "u1>"}).to_string(), "user_id must be"),
        (
            json!({"user_id": "x".repeat(65)}).to_string(),
            "user_id must be",
        ),
        (
            json!({"user_id": "u1", "limit": 0}).to_string(),
            "limit must be",
        ),
        (
            json!({"user_id": "u1", "limit": 101}).to_string(),
            "limit must be",
        ),
        (
            json!({"user_id": "u1", "limit": -1}).to_string(),
            "invalid value",
        ),
        (
            json!({"user_id": "u1", "cursor": "abc"}).to_string(),
            "cursor must be",
        ),
        (
            json!({"user_id": "u1", "cursor": 5}).to_string(),
            "invalid type",
        ),
        (
            json!({"user_id": "u1", "since": 5}).to_string(),
            "unknown field `since`",
        ),
        (big, "payload"),
    ];
    for (payload, needle) in cases {
        let shown: String = payload.chars().take(60).collect();
        let reply =
            testkit::request_json_with_headers(&c.client, "notification.list", c.admin(), payload)
                .await
                .unwrap();
        assert_eq!(reply.error_code, Some(400), "{shown}: {:?}", reply.error);
        let message = reply.error.clone().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{shown}: {message:?} should contain {needle:?}"
        );
        assert_eq!(reply.body["error"]["code"], 400);
        assert_eq!(reply.body["error"]["message"], message.as_str());
    }

    assert_eq!(c.stream_last_sequence("NOTIFICATION").await, before_seq);
    assert_eq!(c.list_fresh("u1").await, before_list);
    assert_eq!(c.spooled("notification-1").len(), 1);
    // Still serving.
    assert!(c.list(json!({"user_id": "u1"})).await.is_ok());
}

#[tokio::test]
async fn events_that_cannot_become_a_message_are_dead_lettered_at_once() {
    let c = Cluster::start(1, common::FAST_RETRIES).await.unwrap();
    let mut dead = DeadLetterWatch::start(&c.client).await;
    let cases = [
        (
            "events.user.registered.x",
            "{garbage".to_string(),
            "undecodable event",
        ),
        (
            "events.user.registered.bad",
            json!({"type": "user.registered", "user": {"id": "u.1", "email": "a@example.com"}})
                .to_string(),
            "user_id must be",
        ),
        (
            "events.user.registered.u2",
            json!({"type": "user.registered", "user": {"id": "u2", "email": "not an address"}})
                .to_string(),
            "recipient address",
        ),
        (
            "events.user.registered.u3",
            json!({"type": "user.registered", "user": {"id": "u3"}}).to_string(),
            "missing field `email`",
        ),
    ];
    for (subject, payload, needle) in cases {
        let event_id = c.publish(subject, payload.clone()).await;
        let letter = dead.next(Duration::from_secs(10)).await;
        assert_eq!(letter.subject, "deadletter.notification-users");
        let reason = letter.header("Shop-Dead-Letter-Reason");
        assert!(reason.starts_with("permanent:"), "{reason}");
        assert!(
            reason.contains(needle),
            "{reason:?} should contain {needle:?}"
        );
        assert_eq!(
            letter.header("Shop-Deliveries"),
            "1",
            "no retry for {needle}"
        );
        assert_eq!(letter.header("Shop-Original-Subject"), subject);
        assert_eq!(
            format!(
                "{}:{}",
                letter.header("Shop-Original-Stream"),
                letter.header("Shop-Original-Sequence")
            ),
            event_id
        );
        assert_eq!(letter.payload, payload.as_bytes());
    }
    await_metric(
        &c,
        0,
        "shop_dead_letters_total",
        &[("consumer", "notification-users")],
        4.0,
    )
    .await;
    assert!(c.spooled("notification-1").is_empty());
    assert_eq!(c.sent_events_stored().await, 0);
    // The recipient of the bad address was recorded before delivery failed;
    // no message was, and u2's list stays empty.
    assert!(c.list_fresh("u2").await.is_empty());
}
