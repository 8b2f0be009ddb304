//! A whole shop for the saga's tests: nats-server and real processes of the
//! product, payment, user, notification and order services.

#![allow(dead_code)]

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use testkit::{request_json, workspace_bin, NatsServer, Reply, ServiceProcess};

pub struct Shop {
    pub nats: NatsServer,
    pub client: async_nats::Client,
    pub data: tempfile::TempDir,
    pub processes: Vec<ServiceProcess>,
    next: usize,
}

pub const SERVICES: &[&str] = &["product", "payment", "user", "notification"];

/// The order a `PAYMENT` stream event is about.
pub fn payment_order_id(event: &Value) -> String {
    event["payment"]["order_id"]
        .as_str()
        .or(event["order_id"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// The amount a `PAYMENT` stream event moved (a refund's, else the payment's).
pub fn payment_amount(event: &Value) -> i64 {
    event["amount_cents"]
        .as_i64()
        .or(event["refund"]["amount_cents"].as_i64())
        .or(event["payment"]["amount_cents"].as_i64())
        .unwrap_or(0)
}

/// The value of the series `name` with `labels` on the instance at
/// `admin_addr`'s `/metrics` (0 when absent).
pub async fn metric(admin_addr: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, metrics) = testkit::http::get(admin_addr, "/metrics").await.unwrap();
    testkit::metrics::value(&metrics, name, labels).unwrap_or(0.0)
}

/// What the payment service did for one order, from its stream and its reply.
#[derive(Debug)]
pub struct Money {
    /// `payment.captured` events of the order.
    pub captures: usize,
    /// `payment.refunded` events of the order, and their total.
    pub refunds: usize,
    pub refunded_cents: i64,
    /// The payment as `payment.get` answers it (once the stream is read), if captured.
    pub payment: Option<Value>,
}

impl Shop {
    /// `replicas` instances of every service, including `order` (with `order_env`).
    pub async fn start(replicas: usize, order_env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let nats = NatsServer::start().await?;
        let client = nats.client().await?;
        let mut shop = Self {
            nats,
            client,
            data: tempfile::tempdir()?,
            processes: Vec::new(),
            next: 0,
        };
        for service in SERVICES {
            for _ in 0..replicas {
                shop.add(
                    service,
                    &[("ARGON2_MEMORY_KIB", "1024"), ("ARGON2_ITERATIONS", "1")],
                )
                .await?;
            }
        }
        for _ in 0..replicas {
            shop.add_order(order_env).await?;
        }
        Ok(shop)
    }

    pub async fn add(&mut self, service: &str, env: &[(&str, &str)]) -> anyhow::Result<usize> {
        self.next += 1;
        let id = format!("{service}-{}", self.next);
        let dir = self.data.path().join(&id);
        let bin = workspace_bin(&format!("{service}-service"))?;
        let process = ServiceProcess::start(&bin, &self.nats.url(), &id, &dir, env).await?;
        self.processes.push(process);
        Ok(self.processes.len() - 1)
    }

    /// Adds an order instance; saga steps of a dead instance move on after 2 s.
    pub async fn add_order(&mut self, env: &[(&str, &str)]) -> anyhow::Result<usize> {
        let mut all = vec![
            ("ORDER_SAGA_ACK_WAIT_SECS", "2"),
            ("ORDER_DEADLINE_SECS", "60"),
        ];
        all.extend_from_slice(env);
        self.add("order", &all).await
    }

    /// The index in `processes` of the first instance of `service`.
    pub fn instance(&self, service: &str) -> usize {
        self.processes
            .iter()
            .position(|p| p.instance_id.starts_with(&format!("{service}-")))
            .unwrap_or_else(|| panic!("no {service} instance"))
    }

    pub async fn req(&self, subject: &str, payload: Value) -> Reply {
        request_json(&self.client, subject, payload.to_string())
            .await
            .unwrap_or_else(|e| panic!("{subject}: {e:#}"))
    }

    pub async fn product(&self, id: &str, stock: i64, price_cents: i64) {
        let reply = self
            .req("product.create", json!({"id": id, "name": format!("Product {id}"), "price_cents": price_cents, "currency": "USD", "stock": stock}))
            .await;
        assert!(reply.is_ok(), "creating {id}: {:?}", reply.error);
    }

    pub async fn stock(&self, id: &str) -> i64 {
        // Read through the stream's latest revision so the answer is not stale.
        let last = self.last_sequence("PRODUCT").await;
        let reply = self
            .req("product.get", json!({"id": id, "min_revision": last}))
            .await;
        assert!(reply.is_ok(), "{:?}", reply.error);
        reply.body["stock"].as_i64().unwrap()
    }

    pub async fn user(&self, email: &str) -> String {
        let reply = self
            .req(
                "user.register",
                json!({"email": email, "password": "correct horse battery", "name": "Test User"}),
            )
            .await;
        assert!(reply.is_ok(), "registering {email}: {:?}", reply.error);
        reply.body["id"].as_str().expect("user id").to_string()
    }

    pub async fn place(&self, user_id: &str, items: Value, token: &str, key: &str) -> Value {
        let reply = self
            .req("order.create", json!({"user_id": user_id, "items": items, "payment_token": token, "idempotency_key": key}))
            .await;
        assert!(reply.is_ok(), "order.create: {:?}", reply.error);
        assert_eq!(reply.body["status"], "pending");
        reply.body
    }

    /// Places an order of `quantity` × `product` paid with `tok_ok` and waits
    /// until it is confirmed; returns its id.
    pub async fn confirmed(
        &self,
        user_id: &str,
        product: &str,
        quantity: i64,
        key: &str,
    ) -> String {
        let items = json!([{"product_id": product, "quantity": quantity}]);
        let placed = self.place(user_id, items, "tok_ok", key).await;
        let id = placed["id"].as_str().expect("order id").to_string();
        let settled = self
            .settle(std::slice::from_ref(&id), Duration::from_secs(30))
            .await;
        assert_eq!(settled[&id]["status"], "confirmed", "{:?}", settled[&id]);
        id
    }

    /// Waits until every given order is confirmed or cancelled; returns them by id.
    pub async fn settle(
        &self,
        ids: &[String],
        timeout: Duration,
    ) -> std::collections::HashMap<String, Value> {
        let mut events = self.client.subscribe("events.order.>").await.unwrap();
        self.client.flush().await.unwrap();
        let mut done = std::collections::HashMap::new();
        for id in ids {
            let reply = self.req("order.get", json!({"id": id})).await;
            if matches!(
                reply.body["status"].as_str(),
                Some("confirmed" | "cancelled")
            ) {
                done.insert(id.clone(), reply.body);
            }
        }
        let waited = tokio::time::timeout(timeout, async {
            while done.len() < ids.len() {
                let Some(message) = events.next().await else {
                    break;
                };
                let event: Value = serde_json::from_slice(&message.payload).unwrap();
                let order = &event["order"];
                let id = order["id"].as_str().unwrap_or_default().to_string();
                if ids.contains(&id)
                    && matches!(order["status"].as_str(), Some("confirmed" | "cancelled"))
                {
                    done.insert(id, order.clone());
                }
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "{} of {} orders settled within {timeout:?}",
            done.len(),
            ids.len()
        );
        done
    }

    /// What `stream` holds now (messages, first and last sequence).
    pub async fn stream_state(&self, stream: &str) -> async_nats::jetstream::stream::State {
        let js = async_nats::jetstream::new(self.client.clone());
        js.get_stream(stream)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .clone()
    }

    /// The last sequence `stream` holds.
    pub async fn last_sequence(&self, stream: &str) -> u64 {
        self.stream_state(stream).await.last_sequence
    }

    /// Captures and refunds of `order_id`, and its payment as the payment
    /// service answers it at the stream's last revision.
    pub async fn money(&self, order_id: &str) -> Money {
        let of_order = |events: Vec<Value>| -> Vec<Value> {
            events
                .into_iter()
                .filter(|e| payment_order_id(e) == order_id)
                .collect()
        };
        let captures = of_order(self.stream_events("PAYMENT", "payment.captured").await);
        let refunds = of_order(self.stream_events("PAYMENT", "payment.refunded").await);
        let payment = match captures.first() {
            Some(capture) => {
                let last = self.last_sequence("PAYMENT").await;
                let reply = self
                    .req(
                        "payment.get",
                        json!({"payment_id": capture["payment"]["payment_id"], "min_revision": last}),
                    )
                    .await;
                assert!(reply.is_ok(), "payment.get: {:?}", reply.error);
                Some(reply.body)
            }
            None => None,
        };
        Money {
            captures: captures.len(),
            refunds: refunds.len(),
            refunded_cents: refunds.iter().map(payment_amount).sum(),
            payment,
        }
    }

    /// Events of a stream whose JSON `type` is `kind`.
    pub async fn stream_events(&self, stream: &str, kind: &str) -> Vec<Value> {
        let js = async_nats::jetstream::new(self.client.clone());
        let stream = js.get_stream(stream).await.unwrap();
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
            .await
            .unwrap();
        let last = self.last_sequence(&stream.cached_info().config.name).await;
        let mut out = Vec::new();
        if last == 0 {
            return out;
        }
        let mut messages = consumer.messages().await.unwrap();
        while let Some(Ok(message)) = messages.next().await {
            let value: Value = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
            if value["type"] == kind {
                out.push(value);
            }
            if message.info().unwrap().stream_sequence >= last {
                break;
            }
        }
        out
    }
}
