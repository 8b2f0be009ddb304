//! `order-place`: orders from `order.create` to their `order.confirmed` event,
//! through the product, payment, user, notification and order services (the
//! saga: reserve stock, charge, confirm). The latency of an order runs to the
//! arrival of its confirmation event; the `order.create` reply is a phase.
//! In the open loop (the usual model here) an order's time starts at its
//! intended send time, so a system that falls behind shows as latency.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::{Client, Request};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::oneshot;

use super::{connect_clients, measure, pick, request, run_id, Options, Target};
use crate::load::{Operation, Outcome};
use crate::results::ScenarioResult;
use crate::seed;
use crate::stats::OpError;

/// Operation name: an order from create to confirmed.
pub const OP: &str = "order.create→confirmed";
/// Phase: the reply to `order.create` (the order is `pending` then).
pub const CREATE_REPLY: &str = "order.create reply";
/// Products ordered, `order-bench-0000` ..
pub const PRODUCT_PREFIX: &str = "order-bench-";
const EVENT_TYPE_HEADER: &str = "Shop-Event-Type";

/// How an order ended, and when the harness saw it.
#[derive(Debug, Clone)]
pub struct Settled {
    pub status: String,
    pub reason: Option<String>,
    pub at: Instant,
}

enum Slot {
    Arrived(Settled),
    Waiting(oneshot::Sender<Settled>),
}

/// Final order events, matched with the orders waiting for them (an event may
/// arrive before the `order.create` reply).
#[derive(Default)]
pub struct Tracker {
    slots: Mutex<HashMap<String, Slot>>,
}

impl Tracker {
    pub fn settled(&self, id: String, settled: Settled) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        match slots.remove(&id) {
            Some(Slot::Waiting(tx)) => {
                let _ = tx.send(settled);
            }
            Some(Slot::Arrived(first)) => {
                slots.insert(id, Slot::Arrived(first));
            }
            None => {
                slots.insert(id, Slot::Arrived(settled));
            }
        }
    }

    /// Waits for order `id` to settle, for at most `timeout`.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Option<Settled> {
        let rx = {
            let mut slots = self.slots.lock().ok()?;
            match slots.remove(id) {
                Some(Slot::Arrived(s)) => return Some(s),
                _ => {
                    let (tx, rx) = oneshot::channel();
                    slots.insert(id.to_string(), Slot::Waiting(tx));
                    rx
                }
            }
        };
        let settled = tokio::time::timeout(timeout, rx)
            .await
            .ok()
            .and_then(Result::ok);
        if settled.is_none() {
            if let Ok(mut slots) = self.slots.lock() {
                slots.remove(id);
            }
        }
        settled
    }
}

/// Subscribes to order events and feeds confirmed/cancelled ones to a tracker.
pub async fn watch_orders(client: &Client) -> Result<(Arc<Tracker>, tokio::task::JoinHandle<()>)> {
    let mut events = client
        .subscribe("events.order.>")
        .await
        .context("subscribing to order events")?;
    client.flush().await.context("flushing the subscription")?;
    let tracker = Arc::new(Tracker::default());
    let feed = tracker.clone();
    let task = tokio::spawn(async move {
        while let Some(message) = events.next().await {
            let at = Instant::now();
            let event_type = message
                .headers
                .as_ref()
                .and_then(|h| h.get(EVENT_TYPE_HEADER))
                .map(|v| v.as_str().to_string());
            if !matches!(
                event_type.as_deref(),
                Some("order.confirmed" | "order.cancelled") | None
            ) {
                continue;
            }
            let Ok(event) = serde_json::from_slice::<serde_json::Value>(&message.payload) else {
                continue;
            };
            let order = &event["order"];
            let status = order["status"].as_str().unwrap_or_default();
            if status != "confirmed" && status != "cancelled" {
                continue;
            }
            if let Some(id) = order["id"].as_str() {
                feed.settled(
                    id.to_string(),
                    Settled {
                        status: status.to_string(),
                        reason: order["reason"].as_str().map(str::to_string),
                        at,
                    },
                );
            }
        }
    });
    Ok((tracker, task))
}

/// Registers a fresh user and logs it in; returns its id, email, password
/// (for logins) and the headers carrying its token (order endpoints need it).
pub async fn register_user(
    client: &Client,
    run: &str,
) -> Result<(String, String, String, async_nats::HeaderMap)> {
    let email = format!("bench-{run}@example.com");
    let password = format!("bench-password-{run}");
    let body = serde_json::json!({ "email": email, "password": password, "name": "Bench" });
    let reply = client
        .request("user.register", body.to_string().into())
        .await;
    let reply = crate::nats::reply_outcome(reply)
        .map_err(|e| anyhow::anyhow!("registering the bench user: {}", e.message))?;
    let profile: serde_json::Value = serde_json::from_slice(&reply.payload)?;
    let id = profile["id"]
        .as_str()
        .context("user.register reply without id")?
        .to_string();
    let token = shop_nats::login::login(client, &email, &password, Duration::from_secs(10))
        .await
        .map_err(|e| anyhow::anyhow!("logging the bench user in: {}", e.message))?;
    Ok((id, email, password, shop_nats::auth::bearer_headers(&token)))
}

/// Sends `order.create` for one unit of a product (failures count as `op`);
/// returns the order id, the reply size and when the reply came.
pub async fn create_order(
    client: &Client,
    op: &'static str,
    auth: &async_nats::HeaderMap,
    user_id: &str,
    product: &str,
    key: String,
    timeout: Duration,
) -> Result<(String, usize, Instant), Outcome> {
    let body = serde_json::json!({
        "user_id": user_id,
        "items": [{"product_id": product, "quantity": 1}],
        "payment_token": "tok_ok",
        "idempotency_key": key,
    });
    let create = Request::new()
        .payload(Bytes::from(body.to_string()))
        .headers(auth.clone())
        .timeout(Some(timeout));
    let reply = request(client, op, "order.create", create).await?;
    let replied = Instant::now();
    let id = serde_json::from_slice::<serde_json::Value>(&reply.payload)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_string));
    let bad = || {
        Outcome::err(
            op,
            OpError::new("bad_reply", "order.create reply without id"),
        )
    };
    Ok((id.ok_or_else(bad)?, reply.payload.len(), replied))
}

struct PlaceOrder {
    clients: Vec<Client>,
    tracker: Arc<Tracker>,
    products: Vec<String>,
    user_id: String,
    auth: async_nats::HeaderMap,
    run: String,
    timeout: Duration,
    settle_timeout: Duration,
}

impl Operation for PlaceOrder {
    async fn call(&self, seq: u64) -> Outcome {
        let client = &self.clients[(seq % self.clients.len() as u64) as usize];
        let key = format!("bench-{}-{seq}", self.run);
        let product = pick(&self.products, seq);
        let (id, bytes, replied) = match create_order(
            client,
            OP,
            &self.auth,
            &self.user_id,
            product,
            key,
            self.timeout,
        )
        .await
        {
            Ok(created) => created,
            Err(failed) => return failed,
        };
        let phases = vec![(CREATE_REPLY, replied)];
        match self.tracker.wait(&id, self.settle_timeout).await {
            Some(s) if s.status == "confirmed" => Outcome {
                done: Some(s.at),
                phases,
                ..Outcome::ok(OP, bytes)
            },
            Some(s) => Outcome {
                done: Some(s.at),
                phases,
                ..Outcome::err(
                    OP,
                    OpError::new(
                        format!("cancelled_{}", s.reason.as_deref().unwrap_or("unknown")),
                        format!("order {id} was cancelled ({:?})", s.reason),
                    ),
                )
            },
            None => Outcome {
                phases,
                ..Outcome::err(
                    OP,
                    OpError::new(
                        "unsettled",
                        format!("order {id} not settled within {:?}", self.settle_timeout),
                    ),
                )
            },
        }
    }

    fn label(&self, _seq: u64) -> &'static str {
        OP
    }
}

/// Products to order, created unless present.
pub async fn seed_order_products(client: &Client) -> Result<Vec<String>> {
    seed::ensure_products(client, PRODUCT_PREFIX, 20, seed::DEFAULT_STOCK, 8).await
}

pub async fn run(target: &Target, opts: &Options) -> Result<ScenarioResult> {
    let clients = connect_clients(&target.nats_url, opts.connections, opts.timeout).await?;
    let products = seed_order_products(&clients[0]).await?;
    let run = run_id();
    let (user_id, _, _, auth) = register_user(&clients[0], &run).await?;
    let (tracker, watcher) = watch_orders(&clients[0]).await?;
    let op = Arc::new(PlaceOrder {
        clients,
        tracker,
        products,
        user_id,
        auth,
        run,
        timeout: opts.timeout,
        settle_timeout: opts.settle_timeout,
    });
    let measured = measure(op, target, opts).await;
    watcher.abort();
    let (runs, cpu) = measured?;
    let sync = target.nats_sync.as_ref().map(|s| format!("sync-{s}"));
    let variant = opts.variant.clone().or(sync);
    let under_load = "order.create → events.order.*";
    target.result("order-place", variant.as_deref(), under_load, &runs, cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(status: &str) -> Settled {
        Settled {
            status: status.to_string(),
            reason: None,
            at: Instant::now(),
        }
    }

    #[tokio::test]
    async fn an_event_before_the_reply_is_kept_for_the_waiter() {
        let t = Tracker::default();
        t.settled("a".into(), settled("confirmed"));
        let s = t.wait("a", Duration::from_millis(10)).await.unwrap();
        assert_eq!(s.status, "confirmed");
        assert!(t.slots.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_waiter_gets_the_event_when_it_comes() {
        let t = Arc::new(Tracker::default());
        let t2 = t.clone();
        let waiter = tokio::spawn(async move { t2.wait("b", Duration::from_secs(5)).await });
        while t.slots.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        t.settled("b".into(), settled("cancelled"));
        assert_eq!(waiter.await.unwrap().unwrap().status, "cancelled");
    }

    #[tokio::test]
    async fn an_order_that_never_settles_times_out_and_is_forgotten() {
        let t = Tracker::default();
        assert!(t.wait("c", Duration::from_millis(20)).await.is_none());
        assert!(t.slots.lock().unwrap().is_empty());
    }
}
