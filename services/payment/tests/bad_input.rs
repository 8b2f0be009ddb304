//! Bad input: a clear 4xx and no change of state, in the stream or at the provider.

mod common;

use common::{charge_request, request_with_timeout, Cluster};
use serde_json::json;

#[tokio::test]
async fn bad_requests_get_clear_4xx_and_change_nothing() {
    let c = Cluster::start(1).await.unwrap();
    let charged = c.charge("steady", "tok_ok", 1_000).await;
    assert!(charged.is_ok(), "{:?}", charged.error);
    let payment_id = charged.body["payment_id"].as_str().unwrap().to_string();
    let before_payment = c.get(json!({"payment_id": payment_id})).await.body;
    let before_seq = c.stream_last_sequence().await;
    let before_ledger = c.ledger_len().await;

    let secret = "tok_ok_s3cr3t";
    let charge = |change: serde_json::Value| {
        let mut request = charge_request("fresh-key", secret, 500);
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                request.as_object_mut().unwrap().remove(k);
            } else {
                request[k] = v.clone();
            }
        }
        request.to_string()
    };
    let big = format!(
        "{{\"payment_id\":\"{payment_id}\",\"pad\":\"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("payment.charge", "{not json".into(), 400, "invalid JSON"),
        ("payment.charge", "".into(), 400, "empty payload"),
        (
            "payment.charge",
            charge(json!({"payment_token": null})),
            400,
            "missing field `payment_token`",
        ),
        (
            "payment.charge",
            charge(json!({"idempotency_key": null})),
            400,
            "missing field `idempotency_key`",
        ),
        (
            "payment.charge",
            charge(json!({"amount_cents": "500"})),
            400,
            "invalid type",
        ),
        (
            "payment.charge",
            charge(json!({"amount_cents": 5.5})),
            400,
            "invalid type",
        ),
        (
            "payment.charge",
            charge(json!({"amount_cents": -500})),
            400,
            "amount_cents",
        ),
        (
            "payment.charge",
            charge(json!({"amount_cents": 0})),
            400,
            "amount_cents",
        ),
        (
            "payment.charge",
            charge(json!({"amount_cents": 100_000_000_001i64})),
            400,
            "amount_cents",
        ),
        (
            "payment.charge",
            charge(json!({"currency": "DOLLARS"})),
            400,
            "currency",
        ),
        (
            "payment.charge",
            charge(json!({"currency": "XYZ"})),
            400,
            "currency",
        ),
        (
            "payment.charge",
            charge(json!({"order_id": "bad id!"})),
            400,
            "order_id",
        ),
        (
            "payment.charge",
            charge(json!({"idempotency_key": ""})),
            400,
            "idempotency_key",
        ),
        (
            "payment.charge",
            charge(json!({"payment_token": "tok ok s3cr3t"})),
            400,
            "payment_token",
        ),
        (
            "payment.charge",
            charge(json!({"payment_token": ""})),
            400,
            "payment_token",
        ),
        (
            "payment.charge",
            charge(json!({"card_number": "4242424242424242"})),
            400,
            "unknown field `card_number`",
        ),
        (
            "payment.refund",
            json!({"payment_id": payment_id, "amount_cents": 0, "idempotency_key": "r"})
                .to_string(),
            400,
            "amount_cents",
        ),
        (
            "payment.refund",
            json!({"payment_id": payment_id, "amount_cents": -1, "idempotency_key": "r"})
                .to_string(),
            400,
            "amount_cents",
        ),
        (
            "payment.refund",
            json!({"payment_id": payment_id, "currency": "XX", "idempotency_key": "r"}).to_string(),
            400,
            "currency",
        ),
        (
            "payment.refund",
            json!({"payment_id": payment_id}).to_string(),
            400,
            "missing field `idempotency_key`",
        ),
        (
            "payment.refund",
            json!({"payment_id": "a.b", "idempotency_key": "r"}).to_string(),
            400,
            "payment_id",
        ),
        (
            "payment.refund",
            json!({"payment_id": "ghost", "idempotency_key": "r"}).to_string(),
            404,
            "not found",
        ),
        (
            "payment.get",
            json!({}).to_string(),
            400,
            "exactly one of payment_id or idempotency_key",
        ),
        (
            "payment.get",
            json!({"payment_id": payment_id, "idempotency_key": "steady"}).to_string(),
            400,
            "exactly one",
        ),
        (
            "payment.get",
            json!({"idempotency_key": ""}).to_string(),
            400,
            "idempotency_key",
        ),
        (
            "payment.get",
            json!({"idempotency_key": "never-used"}).to_string(),
            404,
            "not found",
        ),
        (
            "payment.get",
            json!({"payment_id": 42}).to_string(),
            400,
            "invalid type",
        ),
        (
            "payment.get",
            json!({"payment_id": "ghost"}).to_string(),
            404,
            "not found",
        ),
        ("payment.get", big, 400, "exceeds the limit"),
        (
            "payment.steal",
            "{}".into(),
            404,
            "unknown subject payment.steal",
        ),
    ];
    for (subject, payload, code, needle) in cases {
        // payment.get needs a user's token: an admin's, who may read any payment.
        let headers = match subject {
            "payment.get" => c.issuer().admin(),
            _ => async_nats::HeaderMap::new(),
        };
        let reply =
            testkit::request_json_with_headers(&c.client, subject, headers, payload.clone())
                .await
                .unwrap();
        let shown: String = payload.chars().take(100).collect();
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
        assert!(!message.contains("s3cr3t"), "the error repeats the token");
        assert_eq!(reply.body["error"]["code"], code);
        assert_eq!(reply.body["error"]["message"], message.as_str());
    }

    // The same charge, valid now: the only write of this test.
    let valid = request_with_timeout(
        &c.client,
        "payment.charge",
        charge_request("fresh-key", secret, 500),
        5_000,
    )
    .await;
    assert_eq!(valid.body["status"], "captured", "{:?}", valid.error);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Shop-Timeout-Ms", "soon");
    let reply = c
        .client
        .request_with_headers(
            "payment.charge",
            headers,
            charge_request("other-key", secret, 500).to_string().into(),
        )
        .await
        .unwrap();
    let code = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Service-Error-Code"))
        .map(|v| v.as_str().to_string());
    assert_eq!(code.as_deref(), Some("400"));

    // Everything above but the one valid charge left no trace.
    let events = c.events().await;
    assert_eq!(
        events.len() as u64,
        before_seq + 1,
        "only the valid charge's outcome was written: {:?}",
        events.iter().map(|e| &e.event_type).collect::<Vec<_>>()
    );
    assert_eq!(c.ledger_len().await, before_ledger + 1);
    assert_eq!(
        c.get(json!({"payment_id": payment_id})).await.body,
        before_payment
    );
    for line in c.all_logs() {
        assert!(
            !line.contains("s3cr3t"),
            "a log line carries the token: {line}"
        );
    }
}
