//! Shared set-up for the payment service's tests: a real nats-server and real
//! `payment-service` processes.

#![allow(dead_code)]

use std::{
    ops::{Deref, DerefMut},
    path::PathBuf,
    time::Duration,
};

use async_nats::HeaderMap;
use payment_service::local_provider::{ledger_key, LedgerCharge, LEDGER_BUCKET};
use serde_json::{json, Value};
use testkit::Reply;

/// The service's own debug lines, which the tests read.
const DEBUG_LOGS: &[(&str, &str)] = &[("RUST_LOG", "info,payment_service=debug")];

pub fn payment_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_payment-service"))
}

/// One event read back from the `PAYMENT` stream.
#[derive(Debug, Clone)]
pub struct Event {
    pub sequence: u64,
    pub subject: String,
    pub event_type: String,
    pub body: Value,
}

/// Payment instances on a nats-server of their own, and a stand-in token
/// issuer (`payment.get` needs a user's token).
pub struct Cluster(testkit::Cluster, testkit::tokens::Issuer);

impl Deref for Cluster {
    type Target = testkit::Cluster;
    fn deref(&self) -> &testkit::Cluster {
        &self.0
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut testkit::Cluster {
        &mut self.0
    }
}

impl Cluster {
    /// A nats-server and `n` payment instances (`payment-1` ... `payment-n`).
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        Self::start_with_env(n, &[]).await
    }

    pub async fn start_with_env(n: usize, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut cluster = testkit::Cluster::empty(&payment_bin(), DEBUG_LOGS).await?;
        let issuer = testkit::tokens::Issuer::serve(&cluster.client).await?;
        cluster.add_instances("payment", n, env).await?;
        Ok(Self(cluster, issuer))
    }

    /// The stand-in issuer whose tokens the instances accept.
    pub fn issuer(&self) -> &testkit::tokens::Issuer {
        &self.1
    }

    /// `payment.get` as an admin (who may read every payment).
    pub async fn get(&self, payload: Value) -> Reply {
        testkit::request_json_with_headers(
            &self.client,
            "payment.get",
            self.1.admin(),
            payload.to_string(),
        )
        .await
        .unwrap_or_else(|e| panic!("payment.get: {e:#}"))
    }

    /// A request carrying the caller's timeout in `Shop-Timeout-Ms`.
    pub async fn req_with_timeout(&self, subject: &str, payload: Value, timeout_ms: u64) -> Reply {
        request_with_timeout(&self.client, subject, payload, timeout_ms).await
    }

    pub async fn charge(&self, key: &str, token: &str, amount_cents: i64) -> Reply {
        self.req("payment.charge", charge_request(key, token, amount_cents))
            .await
    }

    /// Stream sequence of the payment stream's last message.
    pub async fn stream_last_sequence(&self) -> u64 {
        self.0
            .stream_last_sequence("PAYMENT")
            .await
            .expect("PAYMENT stream info")
    }

    /// Every event in the `PAYMENT` stream, in order.
    pub async fn events(&self) -> Vec<Event> {
        let js = async_nats::jetstream::new(self.client.clone());
        let stream = js.get_stream("PAYMENT").await.expect("PAYMENT stream");
        let last = self.stream_last_sequence().await;
        let mut events = Vec::new();
        for sequence in 1..=last {
            let message = stream
                .get_raw_message(sequence)
                .await
                .unwrap_or_else(|e| panic!("event {sequence}: {e}"));
            events.push(Event {
                sequence,
                subject: message.subject.to_string(),
                event_type: message
                    .headers
                    .get("Shop-Event-Type")
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default(),
                body: serde_json::from_slice(&message.payload).expect("event JSON"),
            });
        }
        events
    }

    /// Events of one payment with the given type header.
    pub async fn events_of(&self, payment_id: &str, event_type: &str) -> Vec<Event> {
        let subject = format!("events.payment.{payment_id}");
        self.events()
            .await
            .into_iter()
            .filter(|e| e.subject == subject && e.event_type == event_type)
            .collect()
    }

    async fn ledger_bucket(&self) -> async_nats::jetstream::kv::Store {
        async_nats::jetstream::new(self.client.clone())
            .get_key_value(LEDGER_BUCKET)
            .await
            .expect("provider ledger bucket")
    }

    /// The provider's ledger entry for a payment's charge.
    pub async fn ledger(&self, payment_id: &str) -> Option<LedgerCharge> {
        self.ledger_bucket()
            .await
            .get(ledger_key(payment_id))
            .await
            .expect("reading ledger")
            .map(|v| serde_json::from_slice(&v).expect("ledger JSON"))
    }

    /// How many charges the provider's ledger holds.
    pub async fn ledger_len(&self) -> usize {
        use futures::StreamExt;
        let keys = self.ledger_bucket().await.keys().await;
        match keys {
            Ok(keys) => keys.count().await,
            Err(e) => panic!("listing ledger keys: {e}"),
        }
    }

    /// Every log line of every running instance.
    pub fn all_logs(&self) -> Vec<String> {
        self.instances.iter().flat_map(|i| i.logs()).collect()
    }
}

pub fn charge_request(key: &str, token: &str, amount_cents: i64) -> Value {
    json!({
        "order_id": format!("order-{}", key.replace(|c: char| !c.is_ascii_alphanumeric(), "-")),
        "user_id": "u-payer",
        "amount_cents": amount_cents,
        "currency": "USD",
        "payment_token": token,
        "idempotency_key": key,
    })
}

pub async fn request_with_timeout(
    client: &async_nats::Client,
    subject: &str,
    payload: Value,
    timeout_ms: u64,
) -> Reply {
    let mut headers = HeaderMap::new();
    headers.insert("Shop-Timeout-Ms", timeout_ms.to_string().as_str());
    let message = tokio::time::timeout(
        Duration::from_secs(30),
        client.request_with_headers(subject.to_string(), headers, payload.to_string().into()),
    )
    .await
    .unwrap_or_else(|_| panic!("{subject} timed out"))
    .unwrap_or_else(|e| panic!("{subject} failed: {e}"));
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
    };
    Reply {
        error_code: header("Nats-Service-Error-Code").and_then(|c| c.parse().ok()),
        error: header("Nats-Service-Error"),
        body: serde_json::from_slice(&message.payload).unwrap_or(Value::Null),
        raw: message.payload.clone(),
        headers: message.headers,
    }
}
