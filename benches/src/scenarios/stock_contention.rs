//! `stock-contention`: many clients reserving stock of a few fresh products, then checked.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use async_nats::{Client, Request};
use bytes::Bytes;
use serde::Deserialize;

use super::{connect, measure, run_id, Options, Target};
use crate::load::{Operation, Outcome};
use crate::nats;
use crate::results::{Check, Meta, ScenarioResult};
use crate::stats::OpError;

pub const SUBJECT: &str = "product.stock.reserve";

/// What the clients saw for one product, over the whole run (warm-up included).
#[derive(Default)]
struct Seen {
    ok: AtomicU64,
    conflicts: AtomicU64,
    /// Failures after which the reserve may or may not have been applied.
    unknown: AtomicU64,
    max_revision: AtomicU64,
}

struct Reserve {
    client: Client,
    products: Vec<String>,
    seen: Vec<Seen>,
    min_stock: AtomicI64,
    run: String,
    timeout: std::time::Duration,
}

/// The stock and revision a reserve reply carries.
#[derive(Deserialize)]
struct Reserved {
    stock: i64,
    revision: u64,
}

impl Operation for Reserve {
    async fn call(&self, seq: u64) -> Outcome {
        let k = (seq % self.products.len() as u64) as usize;
        let body = serde_json::json!({
            "product_id": self.products[k],
            "quantity": 1,
            "reservation_id": format!("sc-{}-{seq}", self.run),
        });
        let reserve = Request::new()
            .payload(Bytes::from(body.to_string()))
            .timeout(Some(self.timeout));
        let seen = &self.seen[k];
        let reply = match nats::reply_outcome(self.client.send_request(SUBJECT, reserve).await) {
            Ok(reply) => reply,
            Err(e) => {
                if e.kind == "service_409" {
                    seen.conflicts.fetch_add(1, Ordering::Relaxed);
                } else if !e.kind.starts_with("service_4") {
                    // Not certainly refused (as a 4xx is): it may have happened.
                    seen.unknown.fetch_add(1, Ordering::Relaxed);
                }
                return Outcome::err(SUBJECT, e);
            }
        };
        seen.ok.fetch_add(1, Ordering::Relaxed);
        let Ok(reserved) = serde_json::from_slice::<Reserved>(&reply.payload) else {
            let bad = OpError::new("bad_reply", "reserve reply without stock and revision");
            return Outcome::err(SUBJECT, bad);
        };
        self.min_stock.fetch_min(reserved.stock, Ordering::Relaxed);
        (seen.max_revision).fetch_max(reserved.revision, Ordering::Relaxed);
        Outcome::ok(SUBJECT, reply.payload.len())
    }

    fn label(&self, _seq: u64) -> &'static str {
        SUBJECT
    }
}

/// The product's stock once the local state includes `min_revision`.
async fn final_stock(client: &Client, id: &str, min_revision: u64) -> Result<i64> {
    let body = serde_json::json!({ "id": id, "min_revision": min_revision });
    let reply = client.request("product.get", body.to_string().into()).await;
    let reply =
        nats::reply_outcome(reply).map_err(|e| anyhow::anyhow!("reading {id}: {}", e.message))?;
    let product: serde_json::Value = serde_json::from_slice(&reply.payload)?;
    let stock = product["stock"].as_i64();
    stock.with_context(|| format!("{id}: reply without stock"))
}

/// Checks one product's final stock against `seen`: reserved, unknown, refused (409).
pub fn stock_check(id: &str, initial: i64, final_stock: i64, seen: [u64; 3]) -> Check {
    let [ok, unknown, conflicts] = seen;
    let (ok, unknown) = (ok as i64, unknown as i64);
    let highest = initial - ok;
    let lowest = highest - unknown;
    let mut problems = Vec::new();
    if final_stock < 0 {
        problems.push("negative".to_string());
    }
    if !(lowest..=highest).contains(&final_stock) {
        problems.push(format!("expected {lowest}..={highest}"));
    }
    if conflicts > 0 && final_stock != 0 {
        let left = format!("{conflicts} refusals for want of stock, yet stock is left");
        problems.push(left);
    }
    let problems = match problems.is_empty() {
        true => String::new(),
        false => format!(" ({})", problems.join("; ")),
    };
    Check {
        name: format!("stock {id}"),
        passed: problems.is_empty(),
        detail: format!(
            "initial {initial}, {ok} reserved, {unknown} unknown, {conflicts} refused (409): final {final_stock}{problems}"
        ),
    }
}

pub async fn run(target: &Target, opts: &Options) -> Result<ScenarioResult> {
    let client = connect(target, opts).await?;
    let run = run_id();
    let product = |k| format!("sc-{run}-{k}");
    let products: Vec<String> = (0..opts.contention_products.max(1)).map(product).collect();
    let admin = crate::seed::admin_headers(&client).await?;
    for id in &products {
        crate::seed::create(&client, &admin, id, 0, opts.contention_stock).await?;
    }
    let checker = client.clone();
    let op = Arc::new(Reserve {
        client,
        seen: products.iter().map(|_| Seen::default()).collect(),
        products,
        min_stock: AtomicI64::new(i64::MAX),
        run,
        timeout: opts.timeout,
    });
    let variant = (opts.variant.clone()).unwrap_or_else(|| format!("{}p", op.products.len()));
    let meta = Meta::new("stock-contention", Some(&variant), SUBJECT);
    let mut result = measure(op.clone(), target, opts, meta).await?;

    // [reserved, unknown, refused] of each product, then of all of them.
    let mut totals = [0; 3];
    for (id, seen) in op.products.iter().zip(&op.seen) {
        let counts = [&seen.ok, &seen.unknown, &seen.conflicts].map(|n| n.load(Ordering::Relaxed));
        (0..3).for_each(|i| totals[i] += counts[i]);
        let revision = seen.max_revision.load(Ordering::Relaxed);
        let stock = final_stock(&checker, id, revision).await?;
        let check = stock_check(id, opts.contention_stock, stock, counts);
        result.checks.push(check);
    }
    let min_stock = op.min_stock.load(Ordering::Relaxed);
    result.checks.push(Check {
        name: "no negative stock in replies".to_string(),
        passed: min_stock >= 0,
        detail: match min_stock {
            i64::MAX => "no successful reserve".to_string(),
            n => format!("lowest stock in a reply: {n}"),
        },
    });
    let in_window_409 = result.error_kinds.get("service_409").copied().unwrap_or(0);
    let [reserved, unknown, refused] = totals;
    for (name, n) in [
        ("conflicts_409", in_window_409),
        ("reserved_total", reserved),
        ("refused_409_total", refused),
        ("unknown_outcome_total", unknown),
    ] {
        result.extra.insert(name.to_string(), n as f64);
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_accounting() {
        // (initial, final, [reserved, unknown, refused]), passes, why
        let cases = [
            ((100, 60, [40, 0, 0]), true, "all accounted for"),
            ((100, 58, [40, 3, 0]), true, "3 timeouts may have reserved"),
            ((100, 61, [40, 0, 0]), false, "a lost reserve"),
            ((100, 59, [40, 0, 0]), false, "a phantom reserve"),
            ((10, 0, [10, 0, 5]), true, "refused once exhausted"),
            ((10, 1, [9, 0, 5]), false, "409 with stock left"),
            ((10, -1, [11, 0, 0]), false, "negative"),
        ];
        for ((initial, stock, seen), passes, why) in cases {
            let check = stock_check("p", initial, stock, seen);
            assert_eq!(check.passed, passes, "{why}");
        }
    }
}
