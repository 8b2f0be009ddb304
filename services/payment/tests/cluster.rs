//! Three instances on one queue group: shared work, and one capture however
//! many instances a charge's retries reach.

mod common;

use std::{collections::HashSet, time::Duration};

use common::{charge_request, Cluster};
use payment_service::{domain::payment_id_for, local_provider::LedgerOutcome};
use serde_json::json;

#[tokio::test]
async fn three_instances_share_charges_refunds_and_reads() {
    let c = Cluster::start(3).await.unwrap();
    for i in 0..24 {
        let key = format!("shared-{i}");
        let charged = c.charge(&key, "tok_ok", 1_000 + i).await;
        assert!(charged.is_ok(), "{key}: {:?}", charged.error);
        let payment_id = charged.body["payment_id"].as_str().unwrap();
        // Whichever instance takes the refund knows the payment.
        let refunded = c
            .req(
                "payment.refund",
                json!({"payment_id": payment_id, "amount_cents": 100, "idempotency_key": "first"}),
            )
            .await;
        assert!(refunded.is_ok(), "{key}: {:?}", refunded.error);
        // Whichever takes the read sees the refund.
        let read = c
            .get(json!({"payment_id": payment_id, "min_revision": refunded.body["revision"]}))
            .await;
        assert_eq!(read.body["refunded_cents"], 100, "{key}: stale read");
        assert_eq!(read.body["amount_cents"], 1_000 + i);
    }
    for (endpoint, total) in [("charge", 24), ("refund", 24), ("get", 24)] {
        let served = c.served_by_instance("payment", endpoint).await.unwrap();
        assert_eq!(
            served.iter().map(|(_, n)| n).sum::<u64>(),
            total,
            "{endpoint}: {served:?}"
        );
        assert!(
            served.iter().filter(|(_, n)| *n > 0).count() >= 2,
            "{endpoint} spread over instances: {served:?}"
        );
    }
}

#[tokio::test]
async fn a_hundred_concurrent_retries_on_three_instances_capture_once() {
    // A slower processor widens the window in which retries overlap the first attempt.
    let c = Cluster::start_with_env(3, &[("LOCAL_PROVIDER_LATENCY_MS", "150")])
        .await
        .unwrap();
    let secret_token = format!("tok_ok_{}", uuid::Uuid::new_v4().simple());
    let key = "order-77-payment";
    let payment_id = payment_id_for("", key);
    let request = charge_request(key, &secret_token, 12_345).to_string();

    // Each caller does what the contract asks of one: a 504 (the provider
    // did not answer in the caller's time; the charge is pending) is retried
    // with the same key until the outcome comes back. On a slow machine the
    // hundred callers queue behind the provider's 150 ms long enough for that.
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (client, request) = (c.client.clone(), request.clone());
            tokio::spawn(async move {
                let mut attempts = 0u64;
                loop {
                    attempts += 1;
                    let reply = testkit::request_json(&client, "payment.charge", request.clone())
                        .await
                        .unwrap();
                    if reply.error_code != Some(504) || attempts == 20 {
                        return (reply, attempts);
                    }
                }
            })
        })
        .collect();
    let mut revisions = HashSet::new();
    let mut sent = 0;
    for task in tasks {
        let (reply, attempts) = task.await.unwrap();
        sent += attempts;
        assert!(reply.is_ok(), "{:?} {:?}", reply.error_code, reply.error);
        assert_eq!(reply.body["status"], "captured");
        assert_eq!(reply.body["payment_id"], payment_id.as_str());
        assert_eq!(reply.body["amount_cents"], 12_345);
        revisions.insert(reply.body["revision"].as_u64().unwrap());
    }
    assert_eq!(revisions.len(), 1, "one outcome: {revisions:?}");

    let charges = c.served_by_instance("payment", "charge").await.unwrap();
    assert_eq!(charges.iter().map(|(_, n)| n).sum::<u64>(), sent);
    assert!(
        charges.iter().all(|(_, n)| *n > 0),
        "every instance got retries: {charges:?}"
    );

    let assert_charged_once = |events: Vec<common::Event>| {
        let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["payment.captured"], "one capture recorded");
    };
    assert_charged_once(c.events().await);
    let ledger = c.ledger(&payment_id).await.unwrap();
    assert_eq!(ledger.outcome, Some(LedgerOutcome::Approved));
    assert!(
        (2..=100).contains(&ledger.requests),
        "overlapping retries each asked the provider, which charged once: {}",
        ledger.requests
    );
    let asked = ledger.requests;
    assert_eq!(c.ledger_len().await, 1, "the provider holds one charge");

    let check_logs = |logs: Vec<String>| {
        assert!(!logs.is_empty());
        for line in logs {
            assert!(
                !line.contains(&secret_token) && !line.contains("tok_ok"),
                "a log line carries the payment token: {line}"
            );
        }
    };
    check_logs(c.all_logs());

    // Every instance stops and starts again; the retry answers the same.
    let mut c = c;
    for instance in &mut c.instances {
        instance.sigterm().unwrap();
        let status = instance.wait_exit(Duration::from_secs(20)).await.unwrap();
        assert!(status.success(), "{} exited {status}", instance.instance_id);
    }
    for instance in &mut c.instances {
        instance.restart().await.unwrap();
    }
    let retried = testkit::request_json(&c.client, "payment.charge", request)
        .await
        .unwrap();
    assert!(retried.is_ok(), "{:?}", retried.error);
    assert_eq!(retried.body["status"], "captured");
    assert_eq!(retried.body["payment_id"], payment_id.as_str());
    assert_eq!(
        retried.body["revision"].as_u64(),
        revisions.into_iter().next()
    );
    assert_charged_once(c.events().await);
    assert_eq!(
        c.ledger(&payment_id).await.unwrap().requests,
        asked,
        "answered from the record, without asking the provider"
    );
    check_logs(c.all_logs());
}
