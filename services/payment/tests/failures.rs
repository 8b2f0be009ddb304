//! An instance that dies while the provider is charging: nothing is recorded
//! yet, and a retry on another instance asks the provider again with the same
//! idempotency key, which answers the charge it made, so nothing is charged twice.

mod common;

use std::time::Duration;

use common::{charge_request, request_with_timeout, Cluster};
use futures::StreamExt;
use payment_service::{
    domain::payment_id_for,
    local_provider::{ledger_key, LedgerCharge, LedgerOutcome, LEDGER_BUCKET},
};

#[tokio::test]
async fn a_charge_whose_instance_was_killed_is_answered_by_the_provider_on_retry() {
    let mut c = Cluster::start(1).await.unwrap();
    let key = "order-crash-1";
    let payment_id = payment_id_for("", key);
    let request = charge_request(key, "tok_timeout", 8_800);

    let ledger = async_nats::jetstream::new(c.client.clone())
        .get_key_value(LEDGER_BUCKET)
        .await
        .unwrap();
    let mut charged = ledger
        .watch_with_history(ledger_key(&payment_id))
        .await
        .unwrap();

    // The first attempt: the processor takes the money, and takes its time to say so.
    let first = {
        let (client, request) = (c.client.clone(), request.clone());
        tokio::spawn(async move {
            request_with_timeout(&client, "payment.charge", request, 20_000).await
        })
    };
    let entry = tokio::time::timeout(Duration::from_secs(10), charged.next())
        .await
        .expect("the processor records the charge")
        .unwrap()
        .unwrap();
    let recorded: LedgerCharge = serde_json::from_slice(&entry.value).unwrap();
    assert_eq!(recorded.outcome, Some(LedgerOutcome::Approved));

    // The instance dies before the processor's answer comes: nothing recorded.
    c.instances[0].kill9().unwrap();
    first.abort();
    assert_eq!(c.stream_last_sequence().await, 0, "no payment recorded yet");
    c.add_instance("payment-2", &[]).await.unwrap();

    let retried = c
        .req_with_timeout("payment.charge", request.clone(), 8_000)
        .await;
    assert!(retried.is_ok(), "{:?}", retried.error);
    assert_eq!(retried.body["status"], "captured");
    assert_eq!(retried.body["payment_id"], payment_id.as_str());

    let events = c.events().await;
    let recorded: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.event_type.as_str(),
                e.body["attempt"]["owner"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(recorded, [("payment.captured", "payment-2")]);
    let ledger = c.ledger(&payment_id).await.unwrap();
    assert_eq!(ledger.requests, 2, "asked twice with the same key");
    assert_eq!(ledger.amount_cents, 8_800);
    assert_eq!(c.ledger_len().await, 1, "charged once");

    let again = c.req("payment.charge", request).await;
    assert_eq!(again.body, retried.body);
}
