//! `payment.void`: a charge key voided before any charge never charges; a key
//! already charged answers its capture; a void racing a charge on two
//! instances ends one way for both, as the provider decided; a void of a
//! charge the provider answered too late finds the provider's capture.

mod common;

use common::{charge_request, request_with_timeout, Cluster};
use payment_service::{domain::payment_id_for, local_provider::LedgerOutcome};
use serde_json::{json, Value};

fn void_request(key: &str, amount_cents: i64) -> Value {
    let mut request = charge_request(key, "tok_ok", amount_cents);
    request
        .as_object_mut()
        .expect("a charge request is an object")
        .remove("payment_token");
    request
}

#[tokio::test]
async fn a_voided_key_never_charges_and_a_charged_key_answers_its_capture() {
    let c = Cluster::start(1).await.unwrap();

    let voided = c.req("payment.void", void_request("void-1", 700)).await;
    assert!(voided.is_ok(), "{:?}", voided.error);
    assert_eq!(voided.body["status"], "voided");
    let payment_id = payment_id_for("", "void-1");
    assert_eq!(voided.body["payment_id"], payment_id.as_str());
    let charge = c.charge("void-1", "tok_ok", 700).await;
    assert!(charge.is_ok(), "{:?}", charge.error);
    assert_eq!(
        charge.body["status"], "voided",
        "the charge is refused for good"
    );
    let ledger = c.ledger(&payment_id).await.unwrap();
    assert_eq!(ledger.outcome, Some(LedgerOutcome::Voided));
    assert_eq!(
        ledger.requests, 0,
        "the provider never took a charge request"
    );
    let refund = c
        .req(
            "payment.refund",
            json!({"payment_id": payment_id, "idempotency_key": "r"}),
        )
        .await;
    assert_eq!(refund.error_code, Some(409), "{:?}", refund.body);
    let again = c.req("payment.void", void_request("void-1", 700)).await;
    assert_eq!(again.body, voided.body, "a repeated void answers the same");

    let captured = c.charge("void-2", "tok_ok", 900).await;
    assert_eq!(captured.body["status"], "captured");
    let void = c.req("payment.void", void_request("void-2", 900)).await;
    assert_eq!(void.body["status"], "captured", "{:?}", void.error);
    assert_eq!(void.body["payment_id"], captured.body["payment_id"]);

    let other_amount = c.req("payment.void", void_request("void-2", 901)).await;
    assert_eq!(
        other_amount.error_code,
        Some(409),
        "{:?}",
        other_amount.body
    );
    let bad = c
        .req("payment.void", json!({"idempotency_key": "void-3"}))
        .await;
    assert_eq!(bad.error_code, Some(400));
    assert_eq!(
        c.events_of(&payment_id_for("", "void-3"), "payment.voided")
            .await
            .len(),
        0
    );
}

/// Twenty keys, each charged and voided at once through two instances: both
/// answers name the same outcome, and the provider agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_void_racing_a_charge_ends_the_same_way_for_both() {
    let c = Cluster::start(2).await.unwrap();
    let mut races = Vec::new();
    for n in 0..20 {
        let key = format!("race-{n}");
        let (a, b) = (c.client.clone(), c.client.clone());
        let charge = charge_request(&key, "tok_ok", 1_000);
        let void = void_request(&key, 1_000);
        races.push(tokio::spawn(async move {
            let (charged, voided) = tokio::join!(
                request_with_timeout(&a, "payment.charge", charge, 10_000),
                request_with_timeout(&b, "payment.void", void, 10_000),
            );
            (key, charged, voided)
        }));
    }
    let mut outcomes = std::collections::BTreeMap::new();
    for race in races {
        let (key, charged, voided) = race.await.unwrap();
        assert!(charged.is_ok(), "{key}: {:?}", charged.error);
        assert!(voided.is_ok(), "{key}: {:?}", voided.error);
        let status = charged.body["status"].as_str().unwrap().to_string();
        assert_eq!(voided.body["status"], status.as_str(), "{key}");
        let ledger = c.ledger(&payment_id_for("", &key)).await;
        match status.as_str() {
            "captured" => assert_eq!(ledger.unwrap().outcome, Some(LedgerOutcome::Approved)),
            "voided" => assert_eq!(
                ledger.unwrap().outcome,
                Some(LedgerOutcome::Voided),
                "{key}: voided at the provider before the charge reached it"
            ),
            other => panic!("{key}: {other}"),
        }
        *outcomes.entry(status).or_insert(0) += 1;
    }
    eprintln!("race outcomes: {outcomes:?}");
    assert_eq!(outcomes.values().sum::<i32>(), 20, "{outcomes:?}");
}

/// The provider charged but answered after the deadline, so the payment is
/// pending with no outcome: the void asks the provider, which answers the
/// capture, and the payment is recorded captured (for the caller to refund).
#[tokio::test]
async fn a_void_of_an_unanswered_charge_asks_the_provider() {
    let c = Cluster::start(1).await.unwrap();
    let late = c
        .req_with_timeout(
            "payment.charge",
            charge_request("late-1", "tok_timeout", 500),
            1_000,
        )
        .await;
    assert_eq!(late.error_code, Some(504), "{:?}", late.body);
    let payment_id = payment_id_for("", "late-1");
    let void = c
        .req_with_timeout("payment.void", void_request("late-1", 500), 5_000)
        .await;
    assert!(void.is_ok(), "{:?}", void.error);
    assert_eq!(void.body["status"], "captured");
    let types: Vec<_> = c
        .events()
        .await
        .into_iter()
        .filter(|e| e.subject == format!("events.payment.{payment_id}"))
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        ["payment.captured"],
        "the provider's capture, recorded by the void"
    );
    let refund = c
        .req(
            "payment.refund",
            json!({"payment_id": payment_id, "idempotency_key": "r"}),
        )
        .await;
    assert!(refund.is_ok(), "{:?}", refund.error);

    // A charge that never reached an outcome at the provider is voided there.
    let flaky = c
        .req_with_timeout(
            "payment.charge",
            charge_request("flaky-1", "tok_flaky", 500),
            100,
        )
        .await;
    assert!(
        flaky.error_code.is_some_and(|code| code >= 500),
        "{:?}",
        flaky.body
    );
    let payment_id = payment_id_for("", "flaky-1");
    let void = c
        .req_with_timeout("payment.void", void_request("flaky-1", 500), 5_000)
        .await;
    assert!(void.is_ok(), "{:?}", void.error);
    assert_eq!(void.body["status"], "voided");
    assert_eq!(
        c.ledger(&payment_id).await.and_then(|l| l.outcome),
        Some(LedgerOutcome::Voided)
    );
    let charge = c.charge("flaky-1", "tok_flaky", 500).await;
    assert_eq!(charge.body["status"], "voided");
}
