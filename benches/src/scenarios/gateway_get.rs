//! `gateway-get`: HTTP `GET /api/products/{id}` through the Rust or the Express gateway.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{ACCEPT, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use super::{measure, pick, reads, Options, Target};
use crate::load::{Operation, Outcome};
use crate::results::{Meta, ScenarioResult};
use crate::seed::read_id;
use crate::stats::OpError;

/// The gateway's product route; `{id}` is replaced per request.
pub const PRODUCT_PATH: &str = "/api/products/{id}";
const OP: &str = "GET product";

struct HttpGet {
    /// hyper's pooled client: keep-alive connections, reused.
    client: Client<HttpConnector, Empty<Bytes>>,
    uris: Vec<Uri>,
    timeout: Duration,
}

impl HttpGet {
    /// GET `uri`: its status and whole body; failures as `connect`, `http_io`, `timeout`.
    async fn get(&self, uri: &Uri) -> Result<(u16, Bytes), OpError> {
        let io = |e: &dyn std::fmt::Display| OpError::new("http_io", format!("GET {uri}: {e}"));
        let attempt = async {
            let request = Request::get(uri)
                .header(USER_AGENT, "shop-bench")
                .header(ACCEPT, "application/json")
                .body(Empty::new())
                .map_err(|e| io(&e))?;
            let response = self.client.request(request).await;
            let response = response.map_err(|e| match e.is_connect() {
                true => OpError::new("connect", format!("GET {uri}: {e:?}")),
                false => io(&e),
            })?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.map_err(|e| io(&e))?;
            Ok((status, body.to_bytes()))
        };
        let timeout = tokio::time::timeout(self.timeout, attempt).await;
        timeout.unwrap_or_else(|_| {
            let message = format!("GET {uri}: no response within {:?}", self.timeout);
            Err(OpError::new("timeout", message))
        })
    }
}

impl Operation for HttpGet {
    async fn call(&self, seq: u64) -> Outcome {
        let uri = pick(&self.uris, seq);
        match self.get(uri).await {
            Ok((200, body)) => Outcome::ok(OP, body.len()),
            Ok((status, body)) => {
                let body = String::from_utf8_lossy(&body[..body.len().min(200)]);
                let message = format!("GET {uri}: {status} {body}");
                Outcome::err(OP, OpError::new(format!("http_{status}"), message))
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
        reads::seeded(target, opts).await?;
    }
    let uri = |i| url.replace("{id}", &read_id(i)).parse::<Uri>();
    let uris: Result<Vec<Uri>, _> = (0..opts.products.max(1)).map(uri).collect();
    let uris = uris.with_context(|| format!("{url}: not a URL"))?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let op = HttpGet {
        client,
        uris,
        timeout: opts.timeout,
    };
    let first = &op.uris[0];
    let (status, body) = op.get(first).await.map_err(|e| anyhow!(e.message))?;
    let product: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if status != 200 || product["id"].as_str() != Some(&read_id(0)) {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
        bail!("GET {first} answered {status} {text}: expected the product");
    }
    let meta = Meta::new("gateway-get", opts.variant.as_deref(), url);
    measure(Arc::new(op), target, opts, meta).await
}
