//! `order-place`: orders at a fixed arrival rate (open loop), each timed from
//! its *intended* send time to the `order.confirmed` event, so a server that
//! falls behind shows up as latency instead of silently lowering the rate.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};

use crate::report::{new_histogram, write_json, Latency};

pub struct OrderPlaceConfig {
    pub url: String,
    pub rate: f64,
    pub duration: Duration,
    pub products: Vec<String>,
    pub user_id: String,
    pub settle_timeout: Duration,
    pub label: String,
}

#[derive(Debug, Serialize)]
pub struct OrderPlaceSummary {
    pub label: String,
    pub target_rate: f64,
    pub duration_s: f64,
    pub sent: usize,
    pub create_errors: usize,
    pub confirmed: usize,
    pub cancelled: usize,
    pub unsettled: usize,
    /// Orders confirmed per second over the sending window.
    pub confirmed_per_s: f64,
    /// From intended send time to the `order.confirmed` event, in ms.
    pub time_to_confirmed: Option<Latency>,
    /// From intended send time to the `order.create` reply, in ms.
    pub create_reply: Option<Latency>,
}

#[derive(Default)]
struct Tracking {
    /// order id → intended send instant
    intended: HashMap<String, Instant>,
    /// order id → (final status, arrival instant), possibly before the reply was seen
    finished: HashMap<String, (String, Instant)>,
}

pub async fn run(config: &OrderPlaceConfig) -> Result<OrderPlaceSummary> {
    let client = async_nats::connect(&config.url)
        .await
        .with_context(|| format!("connecting to {}", config.url))?;
    let tracking = Arc::new(Mutex::new(Tracking::default()));
    let mut events = client
        .subscribe("events.order.>")
        .await
        .context("subscribing to order events")?;
    client.flush().await?;
    let watcher = {
        let tracking = tracking.clone();
        tokio::spawn(async move {
            while let Some(message) = events.next().await {
                let arrived = Instant::now();
                let Ok(event) = serde_json::from_slice::<Value>(&message.payload) else {
                    continue;
                };
                let status = event["order"]["status"].as_str().unwrap_or_default();
                if status == "confirmed" || status == "cancelled" {
                    let id = event["order"]["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if let Ok(mut t) = tracking.lock() {
                        t.finished
                            .entry(id)
                            .or_insert((status.to_string(), arrived));
                    }
                }
            }
        })
    };

    let total = (config.rate * config.duration.as_secs_f64()).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / config.rate.max(0.001));
    let start = Instant::now();
    let run_id = format!(
        "{:x}",
        start.elapsed().as_nanos() ^ u128::from(std::process::id())
    );
    let replies = Arc::new(Mutex::new(new_histogram()?));
    let errors = Arc::new(Mutex::new(0usize));
    let mut sends = Vec::with_capacity(total);
    for i in 0..total {
        let intended = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(intended.into()).await;
        let (client, tracking, replies, errors) = (
            client.clone(),
            tracking.clone(),
            replies.clone(),
            errors.clone(),
        );
        let product = config.products[i % config.products.len()].clone();
        let body = json!({
            "user_id": config.user_id,
            "items": [{"product_id": product, "quantity": 1}],
            "payment_token": "tok_ok",
            "idempotency_key": format!("bench-{run_id}-{i}"),
        });
        sends.push(tokio::spawn(async move {
            let reply = tokio::time::timeout(
                Duration::from_secs(10),
                client.request("order.create", body.to_string().into()),
            )
            .await;
            let ok = match reply {
                Ok(Ok(message)) if message.headers.is_none() => {
                    serde_json::from_slice::<Value>(&message.payload)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_string))
                }
                _ => None,
            };
            match ok {
                Some(id) => {
                    if let Ok(mut h) = replies.lock() {
                        let _ = h.record(intended.elapsed().as_micros() as u64);
                    }
                    if let Ok(mut t) = tracking.lock() {
                        t.intended.insert(id, intended);
                    }
                }
                None => {
                    if let Ok(mut e) = errors.lock() {
                        *e += 1;
                    }
                }
            }
        }));
    }
    for send in sends {
        let _ = send.await;
    }
    let window = start.elapsed();
    let settle_deadline = Instant::now() + config.settle_timeout;
    loop {
        let settled = {
            let t = tracking
                .lock()
                .map_err(|_| anyhow::anyhow!("tracking lock poisoned"))?;
            t.intended.keys().all(|id| t.finished.contains_key(id))
        };
        if settled || Instant::now() > settle_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watcher.abort();

    let t = tracking
        .lock()
        .map_err(|_| anyhow::anyhow!("tracking lock poisoned"))?;
    let mut confirmed_latency = new_histogram()?;
    let (mut confirmed, mut cancelled, mut unsettled, mut confirmed_in_window) = (0, 0, 0, 0);
    for (id, intended) in &t.intended {
        match t.finished.get(id) {
            Some((status, at)) if status == "confirmed" => {
                confirmed += 1;
                let _ = confirmed_latency
                    .record(at.saturating_duration_since(*intended).as_micros() as u64);
                if at.saturating_duration_since(start) <= window {
                    confirmed_in_window += 1;
                }
            }
            Some(_) => cancelled += 1,
            None => unsettled += 1,
        }
    }
    let create_errors = *errors
        .lock()
        .map_err(|_| anyhow::anyhow!("lock poisoned"))?;
    let replies = replies
        .lock()
        .map_err(|_| anyhow::anyhow!("lock poisoned"))?;
    Ok(OrderPlaceSummary {
        label: config.label.clone(),
        target_rate: config.rate,
        duration_s: config.duration.as_secs_f64(),
        sent: total,
        create_errors,
        confirmed,
        cancelled,
        unsettled,
        confirmed_per_s: confirmed_in_window as f64 / window.as_secs_f64(),
        time_to_confirmed: Latency::from_histogram_us(&confirmed_latency),
        create_reply: Latency::from_histogram_us(&replies),
    })
}

impl OrderPlaceSummary {
    pub fn one_line(&self) -> String {
        let lat = |l: &Option<Latency>| match l {
            Some(l) => format!(
                "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                l.p50, l.p90, l.p99, l.max
            ),
            None => "no data".to_string(),
        };
        format!(
            "{}: target {:.0}/s for {:.0}s: sent {}, confirmed {} ({:.1}/s in window), cancelled {}, unsettled {}, create errors {}; time to confirmed {}; create reply {}",
            self.label,
            self.target_rate,
            self.duration_s,
            self.sent,
            self.confirmed,
            self.confirmed_per_s,
            self.cancelled,
            self.unsettled,
            self.create_errors,
            lat(&self.time_to_confirmed),
            lat(&self.create_reply)
        )
    }

    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        write_json(path, self)
    }
}
