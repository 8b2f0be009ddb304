//! A whole shop for the saga's tests: nats-server and real processes of the
//! product, payment, user, notification and order services. Requests carry
//! tokens from the real user service: a registered user's own for requests
//! naming that user, else the admin's.

#![allow(dead_code)]

use std::{collections::HashMap, sync::Mutex, time::Duration};

use async_nats::HeaderMap;
use futures::StreamExt;
use serde_json::{json, Value};
use testkit::{request_json_with_headers, workspace_bin, NatsServer, Reply, ServiceProcess};

pub const ADMIN_EMAIL: &str = "admin@shop.test";
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
/// The password of every user [`Shop::user`] registers.
pub const PASSWORD: &str = "correct horse battery";

pub struct Shop {
    pub nats: NatsServer,
    pub client: async_nats::Client,
    pub data: tempfile::TempDir,
    pub processes: Vec<ServiceProcess>,
    next: usize,
    /// Each registered user's token, by user id.
    tokens: Mutex<HashMap<String, String>>,
    admin: tokio::sync::OnceCell<String>,
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
            tokens: Mutex::default(),
            admin: tokio::sync::OnceCell::new(),
        };
        for service in SERVICES {
            for _ in 0..replicas {
                shop.add(
                    service,
                    &[
                        ("ARGON2_MEMORY_KIB", "1024"),
                        ("ARGON2_ITERATIONS", "1"),
                        ("ADMIN_EMAIL", ADMIN_EMAIL),
                        ("ADMIN_PASSWORD", ADMIN_PASSWORD),
                    ],
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

    /// A request as the user the payload's `user_id` names (when registered
    /// here), else as the admin.
    pub async fn req(&self, subject: &str, payload: Value) -> Reply {
        let auth = match self.token_of(payload["user_id"].as_str().unwrap_or_default()) {
            Some(token) => shop_nats::auth::bearer_headers(&token),
            None => self.admin_headers().await,
        };
        self.req_with(subject, auth, payload).await
    }

    /// A request with exactly these headers.
    pub async fn req_with(&self, subject: &str, headers: HeaderMap, payload: Value) -> Reply {
        request_json_with_headers(&self.client, subject, headers, payload.to_string())
            .await
            .unwrap_or_else(|e| panic!("{subject}: {e:#}"))
    }

    /// The token of a user registered with [`Self::user`].
    pub fn token_of(&self, user_id: &str) -> Option<String> {
        self.tokens.lock().unwrap().get(user_id).cloned()
    }

    /// Headers carrying the token of a user registered with [`Self::user`].
    pub fn auth_of(&self, user_id: &str) -> HeaderMap {
        let token = self.token_of(user_id).expect("a user registered here");
        shop_nats::auth::bearer_headers(&token)
    }

    /// Headers carrying the admin's token (logged in once; the account is
    /// created by the user service a moment after it starts).
    pub async fn admin_headers(&self) -> HeaderMap {
        let token = self
            .admin
            .get_or_init(|| async {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                loop {
                    let login = shop_nats::login::login(
                        &self.client,
                        ADMIN_EMAIL,
                        ADMIN_PASSWORD,
                        Duration::from_secs(10),
                    )
                    .await;
                    match login {
                        Ok(token) => return token,
                        Err(e) if tokio::time::Instant::now() < deadline => {
                            let _ = e;
                            tokio::time::sleep(Duration::from_millis(100)).await
                        }
                        Err(e) => panic!("admin login: {e}"),
                    }
                }
            })
            .await;
        shop_nats::auth::bearer_headers(token)
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
                json!({"email": email, "password": PASSWORD, "name": "Test User"}),
            )
            .await;
        assert!(reply.is_ok(), "registering {email}: {:?}", reply.error);
        let id = reply.body["id"].as_str().expect("user id").to_string();
        let token = shop_nats::login::login(&self.client, email, PASSWORD, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("logging in {email}: {e}"));
        self.tokens.lock().unwrap().insert(id.clone(), token);
        id
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
    /// Watches the order events, and asks `order.get` again for the orders
    /// still open whenever no event came for a second (core NATS delivers at
    /// most once, so an event may be missed on a loaded machine).
    pub async fn settle(
        &self,
        ids: &[String],
        timeout: Duration,
    ) -> std::collections::HashMap<String, Value> {
        let mut events = self.client.subscribe("events.order.>").await.unwrap();
        self.client.flush().await.unwrap();
        let mut done = std::collections::HashMap::new();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                let open: Vec<&String> = ids.iter().filter(|id| !done.contains_key(*id)).collect();
                for id in open {
                    let reply = self.req("order.get", json!({"id": id})).await;
                    if matches!(
                        reply.body["status"].as_str(),
                        Some("confirmed" | "cancelled")
                    ) {
                        done.insert(id.clone(), reply.body);
                    }
                }
                while done.len() < ids.len() {
                    let Ok(Some(message)) =
                        tokio::time::timeout(Duration::from_secs(1), events.next()).await
                    else {
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
                if done.len() >= ids.len() {
                    break;
                }
            }
        })
        .await;
        if waited.is_err() {
            let mut open = Vec::new();
            for id in ids.iter().filter(|id| !done.contains_key(*id)) {
                let reply = self.req("order.get", json!({"id": id})).await;
                open.push(reply.body);
            }
            panic!(
                "{} of {} orders settled within {timeout:?}; still open: {open:?}",
                done.len(),
                ids.len()
            );
        }
        done
    }

    /// What `stream` holds now (messages, first and last sequence).
    pub async fn stream_state(&self, stream: &str) -> async_nats::jetstream::stream::State {
        let js = async_nats::jetstream::new(self.client.clone());
        testkit::stream_state(&js, stream).await
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
