//! The request-reply reads:
//!
//! - `echo`: the same `{"id":...}` requests as product-get, answered by a raw
//!   async-nats responder (`shop-bench echo-server`) with a reply of a
//!   product's size. It does no work, so its rate is the ceiling of this
//!   machine, NATS server and load generator: every other request-reply
//!   figure is read as a share of it.
//! - `product-get`: `product.get` of seeded products, JSON or bincode
//!   (`Content-Type: application/bincode`, the reply mirrors it).
//! - `product-list`: `product.list` pages of seeded products, starting at
//!   cursors spread over the catalogue.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_nats::{Client, HeaderMap, Request};
use bytes::Bytes;
use product_service::domain::{GetProduct, Product};
use shop_nats::codec::CONTENT_TYPE_HEADER;
use shop_nats::Encoding;

use super::{connect_clients, measure, NatsRequest, Options, Target};
use crate::results::ScenarioResult;
use crate::seed::{self, read_id, READ_PREFIX};

/// Subject the echo responder serves.
pub const ECHO_SUBJECT: &str = "bench.echo";
pub const GET: &str = "product.get";
pub const LIST: &str = "product.list";

/// `json` or `bincode`.
pub fn encoding_name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Json => "json",
        Encoding::Bincode => "bincode",
    }
}

/// Creates the read products unless they exist.
pub async fn seed_reads(client: &Client, products: usize) -> Result<()> {
    seed::ensure_products(client, READ_PREFIX, products, seed::DEFAULT_STOCK, 32)
        .await
        .map(|_| ())
}

/// `{"id":"<id>"}` payloads of the read products `0..count`.
pub fn id_payloads(count: usize) -> Vec<Bytes> {
    let ids = (0..count.max(1)).map(read_id);
    ids.map(|id| Bytes::from(serde_json::json!({ "id": id }).to_string()))
        .collect()
}

/// Page requests: one from the start, then from cursors every `limit` products.
pub fn list_payloads(products: usize, limit: u32) -> Vec<Bytes> {
    let step = (limit as usize).max(1);
    let cursors = (step..products).step_by(step).map(|i| Some(read_id(i - 1)));
    std::iter::once(None)
        .chain(cursors)
        .map(|cursor| {
            let page = match cursor {
                Some(cursor) => serde_json::json!({ "limit": limit, "cursor": cursor }),
                None => serde_json::json!({ "limit": limit }),
            };
            Bytes::from(page.to_string())
        })
        .collect()
}

fn bincode_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE_HEADER, shop_nats::codec::BINCODE);
    headers
}

/// Asks for `id` once and checks the reply is that product; returns the reply size.
pub async fn probe(
    client: &Client,
    id: &str,
    encoding: Encoding,
    timeout: Duration,
) -> Result<usize> {
    let get = GetProduct {
        id: id.to_string(),
        min_revision: None,
    };
    let mut request = Request::new()
        .payload(encoding.encode(&get)?)
        .timeout(Some(timeout));
    if encoding == Encoding::Bincode {
        request = request.headers(bincode_headers());
    }
    let reply = crate::nats::reply_outcome(client.send_request(GET, request).await)
        .map_err(|e| anyhow::anyhow!("{GET} {id}: {}", e.message))?;
    let product: Product = encoding
        .decode(&reply.payload)
        .with_context(|| format!("decoding the {} reply to {GET}", encoding_name(encoding)))?;
    if product.id != id {
        bail!("{GET} {id} answered product {}", product.id);
    }
    Ok(reply.payload.len())
}

/// Measures `name` (its subject too) with `payloads` and `headers` on a fresh
/// set of connections.
async fn requests(
    target: &Target,
    opts: &Options,
    clients: Vec<Client>,
    name: &'static str,
    payloads: Vec<Bytes>,
    headers: Option<HeaderMap>,
) -> Result<(Vec<crate::load::RunStats>, Vec<crate::cpu::CpuUse>)> {
    let op = NatsRequest {
        name,
        clients,
        payloads,
        headers,
        timeout: opts.timeout,
    };
    measure(Arc::new(op), target, opts).await
}

pub async fn echo(target: &Target, opts: &Options) -> Result<ScenarioResult> {
    let clients = connect_clients(&target.nats_url, opts.connections, opts.timeout).await?;
    let payloads = id_payloads(opts.products);
    let (runs, cpu) = requests(target, opts, clients, ECHO_SUBJECT, payloads, None).await?;
    let variant = opts.variant.as_deref();
    target.result("echo", variant, ECHO_SUBJECT, &runs, cpu)
}

pub async fn product_get(target: &Target, opts: &Options) -> Result<ScenarioResult> {
    let clients = connect_clients(&target.nats_url, opts.connections, opts.timeout).await?;
    seed_reads(&clients[0], opts.products).await?;
    probe(&clients[0], &read_id(0), opts.encoding, opts.timeout).await?;
    let (payloads, headers) = match opts.encoding {
        Encoding::Json => (id_payloads(opts.products), None),
        Encoding::Bincode => {
            let gets = (0..opts.products.max(1)).map(|i| GetProduct {
                id: read_id(i),
                min_revision: None,
            });
            let payloads = gets.map(|get| Encoding::Bincode.encode(&get));
            let payloads = payloads.collect::<Result<Vec<Bytes>, _>>()?;
            (payloads, Some(bincode_headers()))
        }
    };
    let (runs, cpu) = requests(target, opts, clients, GET, payloads, headers).await?;
    let variant = opts
        .variant
        .as_deref()
        .unwrap_or(encoding_name(opts.encoding));
    target.result("product-get", Some(variant), GET, &runs, cpu)
}

pub async fn product_list(target: &Target, opts: &Options) -> Result<ScenarioResult> {
    let clients = connect_clients(&target.nats_url, opts.connections, opts.timeout).await?;
    seed_reads(&clients[0], opts.products).await?;
    let first_page = serde_json::json!({ "limit": opts.list_limit }).to_string();
    let first = crate::nats::reply_outcome(clients[0].request(LIST, first_page.into()).await)
        .map_err(|e| anyhow::anyhow!("{LIST}: {}", e.message))?;
    let page: serde_json::Value = serde_json::from_slice(&first.payload)?;
    let items = page["items"].as_array().map_or(0, Vec::len);
    if items < (opts.list_limit as usize).min(opts.products) {
        bail!(
            "{LIST} returned {items} items, expected {} (are the products seeded?)",
            opts.list_limit
        );
    }
    let payloads = list_payloads(opts.products, opts.list_limit);
    let (runs, cpu) = requests(target, opts, clients, LIST, payloads, None).await?;
    let variant = (opts.variant.clone()).unwrap_or_else(|| format!("limit{}", opts.list_limit));
    target.result("product-list", Some(&variant), LIST, &runs, cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_step_through_the_catalogue() {
        let p: Vec<serde_json::Value> = list_payloads(60, 20)
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
