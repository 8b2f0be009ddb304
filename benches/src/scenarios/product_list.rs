//! `product-list`: `product.list` pages of seeded products, starting at cursors
//! spread over the catalogue.

use std::sync::Arc;

use anyhow::{bail, Result};
use async_nats::Subject;
use bytes::Bytes;

use super::{
    connect_clients, measure, product_get::seed_reads, NatsRequest, Options, Target, READ_PREFIX,
};
use crate::results::{Meta, ScenarioResult};
use crate::seed;

pub const SUBJECT: &str = "product.list";

/// Page requests: one from the start, then from cursors every `limit` products.
pub fn payloads(products: usize, limit: u32) -> Vec<Bytes> {
    let mut out = vec![Bytes::from(
        serde_json::json!({ "limit": limit }).to_string(),
    )];
    let step = (limit as usize).max(1);
    for i in (step..products).step_by(step) {
        let cursor = seed::product_id(READ_PREFIX, i - 1);
        out.push(Bytes::from(
            serde_json::json!({ "limit": limit, "cursor": cursor }).to_string(),
        ));
    }
    out
}

pub async fn run(target: &Target, opts: &Options) -> Result<ScenarioResult> {
    let clients = connect_clients(&target.nats_url, opts.connections, opts.timeout).await?;
    seed_reads(&clients[0], opts.products).await?;
    let first = crate::nats::reply_outcome(
        clients[0]
            .request(
                SUBJECT,
                Bytes::from(serde_json::json!({ "limit": opts.list_limit }).to_string()),
            )
            .await,
    )
    .map_err(|e| anyhow::anyhow!("{SUBJECT}: {}", e.message))?;
    let page: serde_json::Value = serde_json::from_slice(&first.payload)?;
    let items = page["items"].as_array().map_or(0, Vec::len);
    if items < (opts.list_limit as usize).min(opts.products) {
        bail!(
            "{SUBJECT} returned {items} items, expected {} (are the products seeded?)",
            opts.list_limit
        );
    }
    let op = Arc::new(NatsRequest {
        name: SUBJECT,
        clients,
        subject: Subject::from(SUBJECT),
        payloads: payloads(opts.products, opts.list_limit),
        headers: None,
        timeout: opts.timeout,
    });
    let (runs, cpu) = measure(op, target, opts).await?;
    let variant = opts
        .variant
        .clone()
        .unwrap_or_else(|| format!("limit{}", opts.list_limit));
    let meta = Meta {
        instances: target.instances,
        nats_sync: target.nats_sync.clone(),
        ..Meta::new("product-list", Some(&variant), SUBJECT)
    };
    ScenarioResult::from_runs(meta, &runs, cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_step_through_the_catalogue() {
        let p: Vec<serde_json::Value> = payloads(60, 20)
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect();
        assert_eq!(
            p,
            vec![
                serde_json::json!({"limit": 20}),
                serde_json::json!({"limit": 20, "cursor": "bench-0019"}),
                serde_json::json!({"limit": 20, "cursor": "bench-0039"}),
            ]
        );
    }
}
