//! `order-place`: orders from `order.create` to their `order.confirmed` event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::{Client, Request};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::oneshot;

use super::{connect, measure, pick, request, run_id, Options, Target};
use crate::load::{Operation, Outcome};
use crate::results::{Meta, ScenarioResult};
use crate::stats::OpError;
use crate::{nats, seed};

/// Operation name: an order from create to confirmed.
pub const OP: &str = "order.create→confirmed";
/// Phase: the reply to `order.create` (the order is `pending` then).
pub const CREATE_REPLY: &str = "order.create reply";
/// Phase: a 503 refusal of `order.create` arrived (how fast a full instance says no).
pub const CREATE_REFUSED: &str = "order.create refused (503)";
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

/// Final order events, matched with the orders waiting for them (in either order).
#[derive(Default)]
pub struct Tracker {
    slots: Mutex<HashMap<String, Result<Settled, oneshot::Sender<Settled>>>>,
}

impl Tracker {
    /// Order `id` settled: wakes its waiter, or keeps the first event for it.
    pub fn settled(&self, id: String, settled: Settled) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        match slots.remove(&id) {
            Some(Err(waiter)) => _ = waiter.send(settled),
            Some(first) => _ = slots.insert(id, first),
            None => _ = slots.insert(id, Ok(settled)),
        }
    }

    /// Waits for order `id` to settle, for at most `timeout`.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Option<Settled> {
        let rx = {
            let mut slots = self.slots.lock().ok()?;
            if let Some(Ok(s)) = slots.remove(id) {
                return Some(s);
            }
            let (tx, rx) = oneshot::channel();
            slots.insert(id.to_string(), Err(tx));
            rx
        };
        let waited = tokio::time::timeout(timeout, rx).await;
        let settled = waited.ok().and_then(Result::ok);
        if settled.is_none() {
            self.slots.lock().ok()?.remove(id);
        }
        settled
    }
}

/// The part of an order event the harness reads.
#[derive(Deserialize)]
struct OrderEvent {
    order: EventOrder,
}

#[derive(Deserialize)]
struct EventOrder {
    id: String,
    status: String,
    reason: Option<String>,
}

/// Subscribes to order events and feeds confirmed/cancelled ones to a tracker.
pub async fn watch_orders(client: &Client) -> Result<(Arc<Tracker>, tokio::task::JoinHandle<()>)> {
    let events = client.subscribe("events.order.>").await;
    let mut events = events.context("subscribing to order events")?;
    client.flush().await.context("flushing the subscription")?;
    let tracker = Arc::new(Tracker::default());
    let feed = tracker.clone();
    let task = tokio::spawn(async move {
        while let Some(message) = events.next().await {
            let at = Instant::now();
            let headers = message.headers.as_ref();
            let event_type = headers.and_then(|h| h.get(EVENT_TYPE_HEADER));
            let is_final = |t: &str| matches!(t, "order.confirmed" | "order.cancelled");
            if event_type.is_some_and(|t| !is_final(t.as_str())) {
                continue;
            }
            let Ok(OrderEvent { order }) = serde_json::from_slice(&message.payload) else {
                continue;
            };
            if matches!(order.status.as_str(), "confirmed" | "cancelled") {
                let (status, reason) = (order.status, order.reason);
                feed.settled(order.id, Settled { status, reason, at });
            }
        }
    });
    Ok((tracker, task))
}

/// A bench user, signed in.
pub struct User {
    pub id: String,
    /// Its `user.login` payload.
    pub login: Bytes,
    /// Headers carrying its token (order endpoints need it).
    pub auth: async_nats::HeaderMap,
}

/// Registers a fresh user and logs it in.
pub async fn register_user(client: &Client, run: &str) -> Result<User> {
    let email = format!("bench-{run}@example.com");
    let password = format!("bench-password-{run}");
    let body = serde_json::json!({ "email": email, "password": password, "name": "Bench" });
    let reply = client.request("user.register", body.to_string().into());
    let reply = nats::reply_outcome(reply.await)
        .map_err(|e| anyhow::anyhow!("registering the bench user: {}", e.message))?;
    let profile: serde_json::Value = serde_json::from_slice(&reply.payload)?;
    let id = profile["id"].as_str();
    let id = id.context("user.register reply without id")?;
    let token = shop_nats::login::login(client, &email, &password, Duration::from_secs(10))
        .await
        .map_err(|e| anyhow::anyhow!("logging the bench user in: {}", e.message))?;
    let login = serde_json::json!({ "email": email, "password": password }).to_string();
    Ok(User {
        id: id.to_string(),
        login: Bytes::from(login),
        auth: shop_nats::auth::bearer_headers(&token),
    })
}

/// Sends `order.create` for one unit of a product; the order id, reply size and time.
pub async fn create_order(
    client: &Client,
    op: &'static str,
    user: &User,
    product: &str,
    key: String,
    timeout: Duration,
) -> Result<(String, usize, Instant), Outcome> {
    let body = serde_json::json!({
        "user_id": user.id,
        "items": [{"product_id": product, "quantity": 1}],
        "payment_token": "tok_ok",
        "idempotency_key": key,
    });
    let create = Request::new()
        .payload(Bytes::from(body.to_string()))
        .headers(user.auth.clone())
        .timeout(Some(timeout));
    let reply = request(client, op, "order.create", create).await?;
    let replied = Instant::now();
    let value: Option<serde_json::Value> = serde_json::from_slice(&reply.payload).ok();
    let id = value.and_then(|v| v["id"].as_str().map(str::to_string));
    let bad = OpError::new("bad_reply", "order.create reply without id");
    let id = id.ok_or_else(|| Outcome::err(op, bad))?;
    Ok((id, reply.payload.len(), replied))
}

struct PlaceOrder {
    client: Client,
    tracker: Arc<Tracker>,
    products: Vec<String>,
    user: User,
    run: String,
    timeout: Duration,
    settle_timeout: Duration,
}

impl Operation for PlaceOrder {
    async fn call(&self, seq: u64) -> Outcome {
        let key = format!("bench-{}-{seq}", self.run);
        let product = pick(&self.products, seq);
        let created = create_order(&self.client, OP, &self.user, product, key, self.timeout);
        let (id, bytes, replied) = match created.await {
            Ok(created) => created,
            Err(mut failed) => {
                if matches!(&failed.result, Err(e) if e.kind == "service_503") {
                    failed.phases = vec![(CREATE_REFUSED, Instant::now())];
                }
                return failed;
            }
        };
        let settled = self.tracker.wait(&id, self.settle_timeout).await;
        let mut outcome = match &settled {
            Some(s) if s.status == "confirmed" => Outcome::ok(OP, bytes),
            Some(s) => {
                let kind = format!("cancelled_{}", s.reason.as_deref().unwrap_or("unknown"));
                let message = format!("order {id} was cancelled ({:?})", s.reason);
                Outcome::err(OP, OpError::new(kind, message))
            }
            None => {
                let message = format!("order {id} not settled within {:?}", self.settle_timeout);
                Outcome::err(OP, OpError::new("unsettled", message))
            }
        };
        outcome.done = settled.map(|s| s.at);
        outcome.phases = vec![(CREATE_REPLY, replied)];
        outcome
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
    let client = connect(target, opts).await?;
    let products = seed_order_products(&client).await?;
    let run = run_id();
    let user = register_user(&client, &run).await?;
    let (tracker, watcher) = watch_orders(&client).await?;
    let op = Arc::new(PlaceOrder {
        client,
        tracker,
        products,
        user,
        run,
        timeout: opts.timeout,
        settle_timeout: opts.settle_timeout,
    });
    let sync = target.nats_sync.as_ref().map(|s| format!("sync-{s}"));
    let variant = opts.variant.clone().or(sync);
    let subjects = "order.create → events.order.*";
    let meta = Meta::new("order-place", variant.as_deref(), subjects);
    let measured = measure(op, target, opts, meta).await;
    watcher.abort();
    measured
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(status: &str) -> Settled {
        let (status, reason, at) = (status.to_string(), None, Instant::now());
        Settled { status, reason, at }
    }

    #[tokio::test]
    async fn orders_settle_whenever_their_event_comes() {
        let t = Arc::new(Tracker::default());
        // The event before the reply: kept for the waiter.
        t.settled("a".into(), settled("confirmed"));
        let s = t.wait("a", Duration::from_millis(10)).await.unwrap();
        assert_eq!(s.status, "confirmed");
        // The event after the reply: the waiter gets it.
        let t2 = t.clone();
        let waiter = tokio::spawn(async move { t2.wait("b", Duration::from_secs(5)).await });
        while t.slots.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        t.settled("b".into(), settled("cancelled"));
        assert_eq!(waiter.await.unwrap().unwrap().status, "cancelled");
        // No event: the wait times out and the order is forgotten.
        assert!(t.wait("c", Duration::from_millis(20)).await.is_none());
        assert!(t.slots.lock().unwrap().is_empty());
    }
}
