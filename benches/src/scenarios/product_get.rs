//! `product-get`: `product.get` of seeded products, JSON or bincode
//! (`Content-Type: application/bincode`, the reply mirrors it).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_nats::{Client, HeaderMap, Request, Subject};
use bytes::Bytes;
use product_service::domain::{GetProduct, Product};
use shop_nats::codec::CONTENT_TYPE_HEADER;
use shop_nats::Encoding;

use super::{connect_clients, id_payloads, measure, NatsRequest, Options, Target, READ_PREFIX};
use crate::results::{Meta, ScenarioResult};
use crate::seed;

pub const SUBJECT: &str = "product.get";

/// `json` or `bincode`.
pub fn encoding_name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Json => "json",
        Encoding::Bincode => "bincode",
    }
}

/// Creates the read products unless they exist.
pub async fn seed_reads(client: &Client, products: usize) -> Result<()> {
    seed::ensure_products(
        client,
        "product.create",
        READ_PREFIX,
        products,
        seed::DEFAULT_STOCK,
        32,
    )
    .await
    .map(|_| ())
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
    let reply = crate::nats::reply_outcome(client.send_request(SUBJECT, request).await)
        .map_err(|e| anyhow::anyhow!("{SUBJECT} {id}: {}", e.message))?;
    let product: Product = encoding.decode(&reply.payload).with_context(|| {
        format!(
            "decoding the {} reply to {SUBJECT}",
            encoding_name(encoding)
        )
    })?;
    if product.id != id {
        bail!("{SUBJECT} {id} answered product {}", product.id);
    }
    Ok(reply.payload.len())
}

fn bincode_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE_HEADER, shop_nats::codec::BINCODE);
    headers
}

pub async fn run(target: &Target, opts: &Options) -> Result<ScenarioResult> {
    let clients = connect_clients(&target.nats_url, opts.connections, opts.timeout).await?;
    seed_reads(&clients[0], opts.products).await?;
    let first = seed::product_id(READ_PREFIX, 0);
    probe(&clients[0], &first, opts.encoding, opts.timeout).await?;
    let (payloads, headers) = match opts.encoding {
        Encoding::Json => (id_payloads(READ_PREFIX, opts.products), None),
        Encoding::Bincode => (
            (0..opts.products.max(1))
                .map(|i| {
                    Encoding::Bincode.encode(&GetProduct {
                        id: seed::product_id(READ_PREFIX, i),
                        min_revision: None,
                    })
                })
                .collect::<Result<Vec<Bytes>, _>>()?,
            Some(bincode_headers()),
        ),
    };
    let op = Arc::new(NatsRequest {
        name: SUBJECT,
        clients,
        subject: Subject::from(SUBJECT),
        payloads,
        headers,
        timeout: opts.timeout,
    });
    let (runs, cpu) = measure(op, target, opts).await?;
    let variant = opts
        .variant
        .clone()
        .unwrap_or_else(|| encoding_name(opts.encoding).to_string());
    let meta = Meta {
        instances: target.instances,
        nats_sync: target.nats_sync.clone(),
        ..Meta::new("product-get", Some(&variant), SUBJECT)
    };
    ScenarioResult::from_runs(meta, &runs, cpu)
}
