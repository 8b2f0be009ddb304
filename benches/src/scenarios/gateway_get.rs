//! `gateway-get`: HTTP `GET /api/products/{id}` of seeded products through an
//! HTTP gateway, over keep-alive connections (one per request in flight). The
//! same scenario measures the Rust gateway (cached and uncached) and the
//! Express baseline (`benches/baselines/express/`), so their ratio comes from
//! one harness.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use hyper::Uri;

use super::{measure, pick, reads::seed_reads, Options, Target};
use crate::http::Client;
use crate::load::{Operation, Outcome};
use crate::nats;
use crate::results::{Meta, ScenarioResult};
use crate::seed::read_id;
use crate::stats::OpError;

/// The gateway's product route; `{id}` is replaced per request.
pub const PRODUCT_PATH: &str = "/api/products/{id}";
const OP: &str = "GET product";

struct HttpGet {
    client: Client,
    uris: Vec<Uri>,
}

impl Operation for HttpGet {
    async fn call(&self, seq: u64) -> Outcome {
        let uri = pick(&self.uris, seq);
        match self.client.get(uri).await {
            Ok(r) if r.status == 200 => Outcome::ok(OP, r.body.len()),
            Ok(r) => {
                let body = String::from_utf8_lossy(&r.body[..r.body.len().min(200)]);
                let message = format!("GET {uri}: {} {body}", r.status);
                Outcome::err(OP, OpError::new(format!("http_{}", r.status), message))
            }
            Err(e) => Outcome::err(OP, e),
        }
    }

    fn label(&self, _seq: u64) -> &'static str {
        OP
    }
}

pub async fn run(target: &Target, opts: &Options) -> Result<ScenarioResult> {
    let Some(url) = &target.http_url else {
        bail!("gateway-get needs the gateway's URL (--url http://HOST:PORT{PRODUCT_PATH})");
    };
    if !url.starts_with("http://") || !url.contains("{id}") {
        bail!("{url}: expected an http:// URL with an {{id}} placeholder");
    }
    if opts.seed {
        let client = nats::connect(&target.nats_url, "shop-bench-seed", opts.timeout).await?;
        seed_reads(&client, opts.products).await?;
    }
    let rest = &url["http://".len()..];
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let uris = (0..opts.products.max(1))
        .map(|i| path.replace("{id}", &read_id(i)).parse::<Uri>())
        .collect::<Result<Vec<Uri>, _>>()
        .with_context(|| format!("{url}: not a URL"))?;
    let client = Client::new(authority, opts.timeout);
    let probe = client.get(&uris[0]).await.map_err(|e| anyhow!(e.message))?;
    let body: serde_json::Value = serde_json::from_slice(&probe.body).unwrap_or_default();
    if probe.status != 200 || body["id"].as_str() != Some(&read_id(0)) {
        let text = String::from_utf8_lossy(&probe.body[..probe.body.len().min(300)]);
        let (uri, status) = (&uris[0], probe.status);
        bail!("GET {uri} answered {status} {text}: expected the product");
    }
    let meta = Meta::new("gateway-get", opts.variant.as_deref(), url);
    measure(Arc::new(HttpGet { client, uris }), target, opts, meta).await
}
