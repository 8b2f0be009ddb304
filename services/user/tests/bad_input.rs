//! Bad input: a clear 4xx and no change in state.

mod common;

use common::Cluster;
use serde_json::json;

#[tokio::test]
async fn bad_requests_get_clear_4xx_and_change_nothing() {
    let c = Cluster::start(1).await.unwrap();
    let user = c
        .register("steady@example.com", "0123456789", "Steady")
        .await;
    let id = user["id"].as_str().unwrap().to_string();
    let before_seq = c.stream_last_sequence().await;

    let big = format!(
        "{{\"email\":\"a@b.co\",\"password\":\"{}\",\"name\":\"x\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let reg = |email: &str, password: &str, name: &str| {
        json!({"email": email, "password": password, "name": name}).to_string()
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("user.register", "{not json".into(), 400, "invalid JSON"),
        ("user.register", "".into(), 400, "empty payload"),
        ("user.register", json!({"email": "a@b.co", "password": "0123456789"}).to_string(), 400, "missing field `name`"),
        ("user.register", json!({"email": "a@b.co", "name": "A"}).to_string(), 400, "missing field `password`"),
        ("user.register", json!({"email": 5, "password": "0123456789", "name": "A"}).to_string(), 400, "invalid type"),
        ("user.register", reg("not-an-email", "0123456789", "A"), 400, "email is not valid"),
        ("user.register", reg("a@b", "0123456789", "A"), 400, "email is not valid"),
        ("user.register", reg("a@@b.co", "0123456789", "A"), 400, "email is not valid"),
        ("user.register", reg(&format!("{}@b.co", "a".repeat(250)), "0123456789", "A"), 400, "email is not valid"),
        ("user.register", reg("new@example.com", "short", "A"), 400, "password must be 10-1024 characters"),
        ("user.register", reg("new@example.com", &"x".repeat(1025), "A"), 400, "password must be 10-1024 characters"),
        ("user.register", reg("new@example.com", "0123456789", "  "), 400, "name must not be empty"),
        ("user.register", reg("new@example.com", "0123456789", &"n".repeat(101)), 400, "name must be at most 100"),
        ("user.register", json!({"email": "new@example.com", "password": "0123456789", "name": "A", "roles": ["admin"]}).to_string(), 400, "unknown field `roles`"),
        ("user.register", big, 400, "exceeds the limit"),
        ("user.register", reg("steady@example.com", "0123456789", "Again"), 409, "email is already registered"),
        ("user.login", json!({"email": "steady@example.com"}).to_string(), 400, "missing field `password`"),
        ("user.login", json!({"email": "nope", "password": "0123456789"}).to_string(), 400, "email is not valid"),
        ("user.login", json!({"email": "steady@example.com", "password": ""}).to_string(), 400, "password must be"),
        ("user.login", json!({"email": "steady@example.com", "password": "x".repeat(1025)}).to_string(), 400, "password must be"),
        ("user.get", json!({}).to_string(), 400, "missing field `id`"),
        ("user.get", json!({"id": 42}).to_string(), 400, "invalid type"),
        ("user.get", json!({"id": "bad id!"}).to_string(), 400, "id must be"),
        ("user.update", json!({"id": id}).to_string(), 400, "nothing to update"),
        ("user.update", json!({"id": id, "roles": ["admin"]}).to_string(), 400, "unknown field `roles`"),
        ("user.update", json!({"id": id, "email": "other@example.com"}).to_string(), 400, "unknown field `email`"),
        ("user.update", json!({"id": id, "password": "0123456789xx"}).to_string(), 400, "unknown field `password`"),
        ("user.update", json!({"id": id, "name": ""}).to_string(), 400, "name must not be empty"),
        ("user.update", json!({"id": id, "name": 7}).to_string(), 400, "invalid type"),
        ("user.update", json!({"id": "ghost", "name": "Ghost"}).to_string(), 404, "user ghost not found"),
        ("user.keys", json!({"rotate": true}).to_string(), 400, "unknown field `rotate`"),
        ("user.keys", "[".into(), 400, "invalid JSON"),
        ("user.frobnicate", "{}".into(), 404, "unknown subject user.frobnicate"),
    ];
    for (subject, payload, code, needle) in cases {
        let reply = c.req_raw(subject, payload.clone()).await;
        let shown: String = payload.chars().take(80).collect();
        assert_eq!(
            reply.error_code,
            Some(code),
            "{subject} {shown}: {:?}",
            reply.error
        );
        let message = reply.error.clone().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{subject} {shown}: {message:?} should mention {needle:?}"
        );
        assert_eq!(
            reply.body["error"]["code"], code,
            "JSON error body for {subject}"
        );
        assert_eq!(reply.body["error"]["message"], message.as_str());
        assert!(
            !message.contains("0123456789") && !message.contains("xxxxxxxxxx"),
            "an error never repeats a password: {message}"
        );
    }

    assert_eq!(
        c.stream_last_sequence().await,
        before_seq,
        "no event was written"
    );
    let after = c.req("user.get", json!({"id": id})).await;
    assert_eq!(after.body, user, "the account is unchanged");
    assert_eq!(after.body["roles"], json!(["customer"]));
    assert!(c.login("steady@example.com", "0123456789").await.is_ok());
    assert_eq!(
        c.login("new@example.com", "0123456789").await.error_code,
        Some(401),
        "no account was created"
    );
}
