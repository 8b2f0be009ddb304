//! The request-reply reads: `echo` (the ceiling), `product-get` and `product-list`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_nats::{Client, HeaderMap, Request};
use bytes::Bytes;
use product_service::domain::{GetProduct, Product};
use serde_json::json;
use shop_nats::codec::CONTENT_TYPE_HEADER;
use shop_nats::Encoding;

use super::{connect, measure, NatsRequest, Options, Target};
use crate::nats;
use crate::results::{Meta, ScenarioResult};
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
    seed::ensure_products(client, READ_PREFIX, products, seed::DEFAULT_STOCK, 32).await?;
    Ok(())
}

/// `{"id":"<id>"}` payloads of the read products `0..count`.
pub fn id_payloads(count: usize) -> Vec<Bytes> {
    let ids = (0..count.max(1)).map(read_id);
    ids.map(|id| Bytes::from(json!({ "id": id }).to_string()))
        .collect()
}

/// Page requests: one from the start, then from cursors every `limit` products.
pub fn list_payloads(products: usize, limit: u32) -> Vec<Bytes> {
    let step = (limit as usize).max(1);
    let cursors = (step..products).step_by(step).map(|i| read_id(i - 1));
    let pages = cursors.map(|cursor| json!({ "limit": limit, "cursor": cursor }));
    let pages = std::iter::once(json!({ "limit": limit })).chain(pages);
    pages.map(|page| Bytes::from(page.to_string())).collect()
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
    let payload = encoding.encode(&get)?;
    let mut request = Request::new().payload(payload).timeout(Some(timeout));
    if encoding == Encoding::Bincode {
        request = request.headers(bincode_headers());
    }
    let reply = nats::reply_outcome(client.send_request(GET, request).await)
        .map_err(|e| anyhow::anyhow!("{GET} {id}: {}", e.message))?;
    let product: Product = encoding
        .decode(&reply.payload)
        .with_context(|| format!("decoding the {} reply to {GET}", encoding_name(encoding)))?;
    if product.id != id {
        bail!("{GET} {id} answered product {}", product.id);
    }
    Ok(reply.payload.len())
}

/// Measures requests to `subject` with `payloads` and `headers`: `scenario`/`variant`.
async fn requests(
    target: &Target,
    opts: &Options,
    (scenario, variant): (&str, Option<&str>),
    subject: &'static str,
    (payloads, headers): (Vec<Bytes>, Option<HeaderMap>),
) -> Result<ScenarioResult> {
    let client = connect(target, opts).await?;
    let timeout = opts.timeout;
    let op = NatsRequest {
        name: subject,
        client,
        payloads,
        headers,
        timeout,
    };
    let meta = Meta::new(scenario, variant, subject);
    measure(Arc::new(op), target, opts, meta).await
}

pub async fn echo(target: &Target, opts: &Options) -> Result<ScenarioResult> {
    let payloads = (id_payloads(opts.products), None);
    let point = ("echo", opts.variant.as_deref());
    requests(target, opts, point, ECHO_SUBJECT, payloads).await
}

/// A connection for seeding (and checking) the read products, seeded.
pub async fn seeded(target: &Target, opts: &Options) -> Result<Client> {
    let client = nats::connect(&target.nats_url, "shop-bench-seed", opts.timeout).await?;
    seed_reads(&client, opts.products).await?;
    Ok(client)
}

pub async fn product_get(target: &Target, opts: &Options) -> Result<ScenarioResult> {
    let client = seeded(target, opts).await?;
    probe(&client, &read_id(0), opts.encoding, opts.timeout).await?;
    let payloads = match opts.encoding {
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
    let variant = (opts.variant.as_deref()).unwrap_or(encoding_name(opts.encoding));
    requests(target, opts, ("product-get", Some(variant)), GET, payloads).await
}

pub async fn product_list(target: &Target, opts: &Options) -> Result<ScenarioResult> {
    let client = seeded(target, opts).await?;
    let first_page = json!({ "limit": opts.list_limit }).to_string();
    let first = nats::reply_outcome(client.request(LIST, first_page.into()).await)
        .map_err(|e| anyhow::anyhow!("{LIST}: {}", e.message))?;
    let page: serde_json::Value = serde_json::from_slice(&first.payload)?;
    let items = page["items"].as_array().map_or(0, Vec::len);
    if items < (opts.list_limit as usize).min(opts.products) {
        let limit = opts.list_limit;
        bail!("{LIST} returned {items} items, expected {limit} (are the products seeded?)");
    }
    let payloads = (list_payloads(opts.products, opts.list_limit), None);
    let variant = (opts.variant.clone()).unwrap_or_else(|| format!("limit{}", opts.list_limit));
    let point = ("product-list", Some(variant.as_str()));
    requests(target, opts, point, LIST, payloads).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_step_through_the_catalogue() {
        let pages = list_payloads(60, 20).into_iter();
        let pages = pages.map(|b| serde_json::from_slice(&b).unwrap());
        let expected = json!([
            {"limit": 20},
            {"limit": 20, "cursor": "bench-0019"},
            {"limit": 20, "cursor": "bench-0039"},
        ]);
        assert_eq!(serde_json::Value::Array(pages.collect()), expected);
    }
}
