//! The request contract through raw JSON, exactly what `nats req` sends.

mod common;

use std::time::{Duration, Instant};

use common::{charge_request, Cluster};
use payment_service::domain::{payment_id_for, Payment};
use serde_json::json;
use shop_nats::Encoding;

#[tokio::test]
async fn charges_answer_by_token() {
    let c = Cluster::start(1).await.unwrap();

    let ok = c.charge("order-1-attempt", "tok_ok", 2_500).await;
    assert!(ok.is_ok(), "{:?}", ok.error);
    let payment_id = ok.body["payment_id"].as_str().unwrap().to_string();
    assert_eq!(payment_id, payment_id_for("", "order-1-attempt"));
    assert_eq!(ok.body["status"], "captured");
    assert_eq!(ok.body["order_id"], "order-order-1-attempt");
    assert_eq!(ok.body["amount_cents"], 2_500);
    assert_eq!(ok.body["currency"], "USD");
    assert!(ok.body["reason"].is_null());
    let revision = ok.body["revision"].as_u64().unwrap();
    assert!(revision > 0);

    let again = c.charge("order-1-attempt", "tok_ok", 2_500).await;
    assert_eq!(again.body, ok.body, "a retry answers the stored outcome");

    let got = c
        .get(json!({"payment_id": payment_id, "min_revision": revision}))
        .await;
    assert!(got.is_ok(), "{:?}", got.error);
    assert_eq!(got.body["status"], "captured");
    assert_eq!(got.body["refunded_cents"], 0);
    assert_eq!(got.body["refunds"], json!([]));
    assert_eq!(got.body["revision"], revision);
    let by_key = c.get(json!({"idempotency_key": "order-1-attempt"})).await;
    assert_eq!(by_key.body, got.body, "found by the charge's key too");

    for (key, token, reason) in [
        ("declined-1", "tok_decline", "card_declined"),
        ("declined-2", "tok_insufficient_funds", "insufficient_funds"),
        ("declined-3", "tok_no_such_card", "invalid_token"),
    ] {
        let declined = c.charge(key, token, 700).await;
        assert!(declined.is_ok(), "{token}: {:?}", declined.error);
        assert_eq!(declined.body["status"], "declined", "{token}");
        assert_eq!(declined.body["reason"], reason, "{token}");
    }

    let flaky = c.charge("flaky-1", "tok_flaky", 900).await;
    assert!(flaky.is_ok(), "{:?}", flaky.error);
    assert_eq!(flaky.body["status"], "captured");
    let ledger = c.ledger(&payment_id_for("", "flaky-1")).await.unwrap();
    assert_eq!(
        (ledger.failures, ledger.requests),
        (2, 3),
        "two transient failures, retried by the service within the request"
    );

    let lower = c
        .req(
            "payment.charge",
            json!({"order_id": "o-9", "user_id": "u-payer", "amount_cents": 100, "currency": "eur", "payment_token": "tok_ok", "idempotency_key": "eur-1"}),
        )
        .await;
    assert_eq!(lower.body["currency"], "EUR");

    let reused = c.charge("order-1-attempt", "tok_ok", 2_501).await;
    assert_eq!(reused.error_code, Some(409));
    assert!(reused
        .error
        .unwrap()
        .contains("idempotency_key already used"));

    // Events: self-contained, typed by header, and free of tokens.
    let events = c.events().await;
    let types: Vec<_> = events
        .iter()
        .filter(|e| e.subject == format!("events.payment.{payment_id}"))
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(
        types,
        ["payment.captured"],
        "recorded once the provider answered"
    );
    let captured = events
        .iter()
        .find(|e| e.event_type == "payment.captured")
        .unwrap();
    assert_eq!(captured.body["type"], "payment.captured");
    assert_eq!(captured.body["payment"]["payment_id"], payment_id.as_str());
    assert_eq!(captured.body["payment"]["status"], "captured");
    assert_eq!(captured.body["payment"]["amount_cents"], 2_500);
    assert_eq!(
        c.events_of(&payment_id_for("", "declined-2"), "payment.declined")
            .await[0]
            .body["payment"]["reason"],
        "insufficient_funds"
    );
    for event in &events {
        assert!(
            !event.body.to_string().contains("tok_"),
            "event {} carries a token",
            event.sequence
        );
    }
}

#[tokio::test]
async fn a_timed_out_charge_leaves_no_payment_and_its_retry_captures_once() {
    let c = Cluster::start(1).await.unwrap();
    let payment_id = payment_id_for("", "slow-1");

    let sent = Instant::now();
    let timed_out = c
        .req_with_timeout(
            "payment.charge",
            charge_request("slow-1", "tok_timeout", 4_000),
            1_000,
        )
        .await;
    let took = sent.elapsed();
    assert_eq!(timed_out.error_code, Some(504), "{:?}", timed_out.body);
    assert!(
        took < Duration::from_millis(1_000),
        "answered within the caller's timeout, took {took:?}"
    );
    let message = timed_out.error.unwrap();
    assert!(
        message.contains(&payment_id) && message.contains("retry with the same idempotency_key"),
        "{message}"
    );

    let unknown = c.get(json!({"payment_id": payment_id})).await;
    assert_eq!(
        unknown.error_code,
        Some(404),
        "nothing is recorded before the provider answers: {:?}",
        unknown.body
    );
    let ledger = c.ledger(&payment_id).await.unwrap();
    assert_eq!(
        ledger.requests, 1,
        "the processor charged but answered late"
    );

    let retried = c.charge("slow-1", "tok_timeout", 4_000).await;
    assert!(retried.is_ok(), "{:?}", retried.error);
    assert_eq!(retried.body["status"], "captured");
    assert_eq!(retried.body["payment_id"], payment_id.as_str());

    let ledger = c.ledger(&payment_id).await.unwrap();
    assert_eq!(
        ledger.requests, 2,
        "the retry asked again with the same key"
    );
    assert_eq!(ledger.amount_cents, 4_000);
    let types: Vec<_> = c.events().await.into_iter().map(|e| e.event_type).collect();
    assert_eq!(types, ["payment.captured"]);
}

#[tokio::test]
async fn refunds_partial_full_and_refused() {
    let c = Cluster::start(1).await.unwrap();
    let charged = c.charge("refund-me", "tok_ok", 1_000).await;
    assert!(charged.is_ok(), "{:?}", charged.error);
    let payment_id = charged.body["payment_id"].as_str().unwrap().to_string();

    let partial = c
        .req(
            "payment.refund",
            json!({"payment_id": payment_id, "amount_cents": 300, "idempotency_key": "r1"}),
        )
        .await;
    assert!(partial.is_ok(), "{:?}", partial.error);
    assert_eq!(partial.body["payment_id"], payment_id.as_str());
    assert_eq!(partial.body["amount_cents"], 300);
    assert_eq!(partial.body["refunded_cents"], 300);
    assert_eq!(partial.body["status"], "partially_refunded");
    let refund_1 = partial.body["refund_id"].as_str().unwrap().to_string();
    assert!(
        partial.body["revision"].as_u64().unwrap() > charged.body["revision"].as_u64().unwrap()
    );

    let repeated = c
        .req(
            "payment.refund",
            json!({"payment_id": payment_id, "amount_cents": 300, "idempotency_key": "r1"}),
        )
        .await;
    assert_eq!(
        repeated.body, partial.body,
        "a repeated refund changes nothing"
    );

    let seq_before_refusals = c.stream_last_sequence().await;
    for (payload, code, needle) in [
        (
            json!({"payment_id": payment_id, "amount_cents": 701, "idempotency_key": "r2"}),
            409,
            "exceeds the 700 USD still refundable",
        ),
        (
            json!({"payment_id": payment_id, "amount_cents": 100, "currency": "EUR", "idempotency_key": "r2"}),
            409,
            "is in USD, not EUR",
        ),
        (
            json!({"payment_id": payment_id, "amount_cents": 200, "idempotency_key": "r1"}),
            409,
            "idempotency_key already used",
        ),
        (
            json!({"payment_id": "nope", "idempotency_key": "r2"}),
            404,
            "not found",
        ),
    ] {
        let refused = c.req("payment.refund", payload.clone()).await;
        assert_eq!(
            refused.error_code,
            Some(code),
            "{payload}: {:?}",
            refused.error
        );
        let message = refused.error.unwrap();
        assert!(message.contains(needle), "{message}");
    }
    assert_eq!(c.stream_last_sequence().await, seq_before_refusals);

    let rest = c
        .req(
            "payment.refund",
            json!({"payment_id": payment_id, "currency": "usd", "idempotency_key": "r3"}),
        )
        .await;
    assert!(rest.is_ok(), "{:?}", rest.error);
    assert_eq!(rest.body["amount_cents"], 700, "no amount: what is left");
    assert_eq!(rest.body["refunded_cents"], 1_000);
    assert_eq!(rest.body["status"], "refunded");

    let over = c
        .req(
            "payment.refund",
            json!({"payment_id": payment_id, "amount_cents": 1, "idempotency_key": "r4"}),
        )
        .await;
    assert_eq!(over.error_code, Some(409));
    assert!(over.error.unwrap().contains("fully refunded"));

    let got = c
        .get(json!({"payment_id": payment_id, "min_revision": rest.body["revision"]}))
        .await;
    assert_eq!(got.body["status"], "captured");
    assert_eq!(got.body["refunded_cents"], 1_000);
    let refunds = got.body["refunds"].as_array().unwrap();
    assert_eq!(refunds.len(), 2);
    assert_eq!(refunds[0]["refund_id"], refund_1.as_str());
    assert_eq!(refunds[0]["amount_cents"], 300);
    assert_eq!(refunds[1]["amount_cents"], 700);
    assert!(refunds.iter().all(|r| r["status"] == "refunded"));

    let declined = c.charge("declined-refund", "tok_decline", 500).await;
    let refused = c
        .req(
            "payment.refund",
            json!({"payment_id": declined.body["payment_id"], "idempotency_key": "r1"}),
        )
        .await;
    assert_eq!(refused.error_code, Some(409));
    assert!(refused.error.unwrap().contains("declined"));

    let refunded = c.events_of(&payment_id, "payment.refunded").await;
    assert_eq!(refunded.len(), 2);
    assert_eq!(refunded[1].body["refund"]["amount_cents"], 700);
    assert_eq!(refunded[1].body["payment"]["refunded_cents"], 1_000);
    let ledger = c.ledger(&payment_id).await.unwrap();
    assert_eq!(
        (ledger.refunded_cents, ledger.refunds.len()),
        (1_000, 2),
        "the provider refunded exactly that"
    );
}

#[tokio::test]
async fn bincode_get_and_services_protocol() {
    let c = Cluster::start(1).await.unwrap();
    let charged = c.charge("bin-1", "tok_ok", 1_234).await;
    let payment_id = charged.body["payment_id"].as_str().unwrap();

    let mut headers = c.issuer().admin();
    headers.insert("Content-Type", "application/bincode");
    let request = Encoding::Bincode
        .encode(&payment_service::domain::GetPayment {
            payment_id: Some(payment_id.to_string()),
            idempotency_key: None,
            min_revision: None,
        })
        .unwrap();
    let reply = c
        .client
        .request_with_headers("payment.get", headers, request)
        .await
        .unwrap();
    let payment: Payment = Encoding::Bincode.decode(&reply.payload).unwrap();
    assert_eq!(payment.amount_cents, 1_234);
    assert_eq!(payment.payment_id, payment_id);

    let info = c
        .client
        .request("$SRV.INFO.payment", "".into())
        .await
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.payload).unwrap();
    let subjects: Vec<_> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        subjects,
        [
            "payment.charge",
            "payment.void",
            "payment.refund",
            "payment.get"
        ]
    );
}

/// `payment.get` answers a payment to its user or an admin; another user's
/// token gets the 404 of an unknown payment, and no token a 401 (no service
/// reads payments without a user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_is_read_by_its_user_only() {
    let c = Cluster::start(1).await.unwrap();
    let issuer = c.issuer();
    let charged = c.charge("own-1", "tok_ok", 700).await;
    assert!(charged.is_ok(), "{:?}", charged.error);
    let get = json!({"payment_id": charged.body["payment_id"]}).to_string();
    let as_ = |headers| {
        let get = get.clone();
        let client = c.client.clone();
        async move {
            testkit::request_json_with_headers(&client, "payment.get", headers, get)
                .await
                .unwrap()
        }
    };
    let own = as_(issuer.headers("u-payer", &["customer"])).await;
    assert!(own.is_ok(), "{:?}", own.error);
    assert_eq!(own.body["user_id"], "u-payer");
    assert!(as_(issuer.admin()).await.is_ok());
    let tokenless = as_(async_nats::HeaderMap::new()).await;
    assert_eq!(tokenless.error_code, Some(401), "{:?}", tokenless.error);
    let other = as_(issuer.headers("u-other", &["customer"])).await;
    assert_eq!(other.error_code, Some(404), "{:?}", other.error);
    let mut forged = issuer.headers("u-other", &["customer"]);
    forged.insert("Shop-User-Id", "u-payer");
    forged.insert("Shop-User-Roles", "admin");
    assert_eq!(as_(forged).await.error_code, Some(404));
    let bad = as_(shop_nats::auth::bearer_headers("not.a.token")).await;
    assert_eq!(bad.error_code, Some(401), "{:?}", bad.error);
}
