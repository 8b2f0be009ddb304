//! `gateway-get`: HTTP `GET /api/products/{id}` of seeded products through an
//! HTTP gateway, over keep-alive connections (one per request in flight). The
//! same scenario measures the Rust gateway (cached and uncached) and the
//! Express baseline (`benches/baselines/express/`), so their ratio comes from
//! one harness.

use std::sync::Arc;

use anyhow::{bail, Result};

use super::{
    connect_clients, measure, product_get::seed_reads, spread, Options, Target, READ_PREFIX,
};
use crate::http::{Pool, Url};
use crate::load::{Operation, Outcome};
use crate::results::{Meta, ScenarioResult};
use crate::seed;
use crate::stats::OpError;

/// The gateway's product route; `{id}` is replaced per request.
pub const PRODUCT_PATH: &str = "/api/products/{id}";

struct HttpGet {
    pool: Pool,
    paths: Vec<String>,
}

impl Operation for HttpGet {
    async fn call(&self, seq: u64) -> Outcome {
        let path = &self.paths[(spread(seq) % self.paths.len() as u64) as usize];
        match self.pool.get(path).await {
            Ok(r) if r.status == 200 => Outcome::ok("GET product", r.body.len()),
            Ok(r) => Outcome::err(
                "GET product",
                OpError::new(
                    format!("http_{}", r.status),
                    format!(
                        "GET {path}: {} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
                    ),
                ),
            ),
            Err(e) => Outcome::err("GET product", e),
        }
    }

    fn label(&self, _seq: u64) -> &'static str {
        "GET product"
    }
}

pub async fn run(target: &Target, opts: &Options) -> Result<ScenarioResult> {
    let Some(url) = &target.http_url else {
        bail!("gateway-get needs the gateway's URL (--url http://HOST:PORT{PRODUCT_PATH})");
    };
    let url = Url::parse(url)?;
    if !url.path.contains("{id}") {
        bail!("{}: the URL path needs an {{id}} placeholder", url.path);
    }
    if opts.seed {
        let clients = connect_clients(&target.nats_url, 1, opts.timeout).await?;
        seed_reads(&clients[0], opts.products).await?;
    }
    let paths: Vec<String> = (0..opts.products.max(1))
        .map(|i| url.path_for(&seed::product_id(READ_PREFIX, i)))
        .collect();
    let pool = Pool::new(url.clone(), opts.timeout);
    let probe = pool
        .get(&paths[0])
        .await
        .map_err(|e| anyhow::anyhow!("GET {}: {}", paths[0], e.message))?;
    let body: serde_json::Value = serde_json::from_slice(&probe.body).unwrap_or_default();
    if probe.status != 200 || body["id"].as_str() != Some(&seed::product_id(READ_PREFIX, 0)) {
        bail!(
            "GET {} answered {} {}: expected the product",
            paths[0],
            probe.status,
            String::from_utf8_lossy(&probe.body[..probe.body.len().min(300)])
        );
    }
    let op = Arc::new(HttpGet { pool, paths });
    let (runs, cpu) = measure(op, target, opts).await?;
    let meta = Meta {
        instances: target.instances,
        nats_sync: target.nats_sync.clone(),
        ..Meta::new(
            "gateway-get",
            opts.variant.as_deref(),
            format!("http://{}{}", url.addr(), url.path),
        )
    };
    ScenarioResult::from_runs(meta, &runs, cpu)
}
