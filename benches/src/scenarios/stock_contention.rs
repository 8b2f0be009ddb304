//! `stock-contention`: many clients reserving one unit at a time of a few fresh
//! products, each with a unique reservation id. Every reserve is a JetStream
//! append with an expected-revision check on the product, so writes to one
//! product serialise: this measures the write path under contention.
//!
//! Afterwards the invariants are checked against what the clients saw: no
//! reply ever showed negative stock; each product's final stock equals its
//! initial stock minus the reserves that succeeded (a reserve whose outcome is
//! unknown, e.g. a timeout, may or may not have happened); a product that
//! refused a reserve with 409 is exhausted.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use async_nats::{Client, Request};
use bytes::Bytes;

use super::{connect_clients, measure, run_id, Options, Target};
use crate::load::{Operation, Outcome};
use crate::results::{Check, ScenarioResult};
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
    clients: Vec<Client>,
    products: Vec<String>,
    seen: Vec<Seen>,
    min_stock: AtomicI64,
    run: String,
    timeout: std::time::Duration,
}

/// A refusal that certainly changed nothing (bad request, not found, conflict).
fn certainly_refused(kind: &str) -> bool {
    kind.strip_prefix("service_4").is_some()
}

impl Operation for Reserve {
    async fn call(&self, seq: u64) -> Outcome {
        let k = (seq % self.products.len() as u64) as usize;
        let client = &self.clients[(seq % self.clients.len() as u64) as usize];
        let body = serde_json::json!({
            "product_id": self.products[k],
            "quantity": 1,
            "reservation_id": format!("sc-{}-{seq}", self.run),
        });
        let reserve = Request::new()
            .payload(Bytes::from(body.to_string()))
            .timeout(Some(self.timeout));
        let seen = &self.seen[k];
        match crate::nats::reply_outcome(client.send_request(SUBJECT, reserve).await) {
            Ok(reply) => {
                seen.ok.fetch_add(1, Ordering::Relaxed);
                let parsed: Option<(i64, u64)> =
                    serde_json::from_slice::<serde_json::Value>(&reply.payload)
                        .ok()
                        .and_then(|v| Some((v["stock"].as_i64()?, v["revision"].as_u64()?)));
                match parsed {
                    Some((stock, revision)) => {
                        self.min_stock.fetch_min(stock, Ordering::Relaxed);
                        seen.max_revision.fetch_max(revision, Ordering::Relaxed);
                        Outcome::ok(SUBJECT, reply.payload.len())
                    }
                    None => Outcome::err(
                        SUBJECT,
                        OpError::new("bad_reply", "reserve reply without stock and revision"),
                    ),
                }
            }
            Err(e) => {
                if e.kind == "service_409" {
                    seen.conflicts.fetch_add(1, Ordering::Relaxed);
                } else if !certainly_refused(&e.kind) {
                    seen.unknown.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::err(SUBJECT, e)
            }
        }
    }

    fn label(&self, _seq: u64) -> &'static str {
        SUBJECT
    }
}

/// The product's stock once the local state includes `min_revision`.
async fn final_stock(client: &Client, id: &str, min_revision: u64) -> Result<i64> {
    let body = serde_json::json!({ "id": id, "min_revision": min_revision });
    let reply = client.request("product.get", body.to_string().into()).await;
    let reply = crate::nats::reply_outcome(reply)
        .map_err(|e| anyhow::anyhow!("reading {id}: {}", e.message))?;
    let product: serde_json::Value = serde_json::from_slice(&reply.payload)?;
    product["stock"]
        .as_i64()
        .with_context(|| format!("{id}: reply without stock"))
}

/// Checks one product's final stock against what the clients saw.
pub fn stock_check(
    id: &str,
    initial: i64,
    final_stock: i64,
    ok: u64,
    unknown: u64,
    conflicts: u64,
) -> Check {
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
        problems.push(format!(
            "{conflicts} refusals for want of stock, yet stock is left"
        ));
    }
    Check {
        name: format!("stock {id}"),
        passed: problems.is_empty(),
        detail: format!(
            "initial {initial}, {ok} reserved, {unknown} unknown, {conflicts} refused (409): final {final_stock}{}",
            if problems.is_empty() {
                String::new()
            } else {
                format!(" ({})", problems.join("; "))
            }
        ),
    }
}

pub async fn run(target: &Target, opts: &Options) -> Result<ScenarioResult> {
    let clients = connect_clients(&target.nats_url, opts.connections, opts.timeout).await?;
    let run = run_id();
    let products: Vec<String> = (0..opts.contention_products.max(1))
        .map(|k| format!("sc-{run}-{k}"))
        .collect();
    let admin = crate::seed::admin_headers(&clients[0]).await?;
    for id in &products {
        crate::seed::create(&clients[0], &admin, id, 0, opts.contention_stock).await?;
    }
    let checker = clients[0].clone();
    let op = Arc::new(Reserve {
        clients,
        seen: products.iter().map(|_| Seen::default()).collect(),
        products,
        min_stock: AtomicI64::new(i64::MAX),
        run,
        timeout: opts.timeout,
    });
    let (runs, cpu) = measure(op.clone(), target, opts).await?;

    let mut checks = Vec::new();
    let (mut total_ok, mut total_conflicts, mut total_unknown) = (0, 0, 0);
    for (id, seen) in op.products.iter().zip(&op.seen) {
        let (ok, conflicts, unknown) = (
            seen.ok.load(Ordering::Relaxed),
            seen.conflicts.load(Ordering::Relaxed),
            seen.unknown.load(Ordering::Relaxed),
        );
        total_ok += ok;
        total_conflicts += conflicts;
        total_unknown += unknown;
        let stock = final_stock(&checker, id, seen.max_revision.load(Ordering::Relaxed)).await?;
        checks.push(stock_check(
            id,
            opts.contention_stock,
            stock,
            ok,
            unknown,
            conflicts,
        ));
    }
    let min_stock = op.min_stock.load(Ordering::Relaxed);
    checks.push(Check {
        name: "no negative stock in replies".to_string(),
        passed: min_stock >= 0,
        detail: if min_stock == i64::MAX {
            "no successful reserve".to_string()
        } else {
            format!("lowest stock in a reply: {min_stock}")
        },
    });

    let variant = (opts.variant.clone()).unwrap_or_else(|| format!("{}p", op.products.len()));
    let mut result = target.result("stock-contention", Some(&variant), SUBJECT, &runs, cpu)?;
    result.checks = checks;
    let in_window_409 = result.error_kinds.get("service_409").copied().unwrap_or(0);
    for (name, n) in [
        ("conflicts_409", in_window_409),
        ("reserved_total", total_ok),
        ("refused_409_total", total_conflicts),
        ("unknown_outcome_total", total_unknown),
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
        assert!(stock_check("p", 100, 60, 40, 0, 0).passed);
        assert!(
            stock_check("p", 100, 58, 40, 3, 0).passed,
            "3 timeouts may have reserved"
        );
        assert!(
            !stock_check("p", 100, 61, 40, 0, 0).passed,
            "a lost reserve"
        );
        assert!(
            !stock_check("p", 100, 59, 40, 0, 0).passed,
            "a phantom reserve"
        );
        assert!(stock_check("p", 10, 0, 10, 0, 5).passed);
        assert!(
            !stock_check("p", 10, 1, 9, 0, 5).passed,
            "409 with stock left"
        );
        assert!(!stock_check("p", 10, -1, 11, 0, 0).passed, "negative");
    }

    #[test]
    fn only_4xx_is_certainly_refused() {
        assert!(certainly_refused("service_409"));
        assert!(certainly_refused("service_400"));
        assert!(!certainly_refused("service_503"));
        assert!(!certainly_refused("timeout"));
    }
}
