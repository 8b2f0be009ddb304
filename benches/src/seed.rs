//! Seeds benchmark products through the product service's create endpoint.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use async_nats::Client;
use bytes::Bytes;
use futures::stream::{self, StreamExt};

use crate::nats;

#[derive(Debug, Clone)]
pub struct SeedConfig {
    pub nats_url: String,
    pub subject: String,
    pub count: usize,
    pub prefix: String,
    pub concurrency: usize,
    pub timeout: Duration,
    pub ids_out: Option<PathBuf>,
}

enum Outcome {
    Created,
    AlreadyExists,
}

/// Id of the `i`-th benchmark product, e.g. `bench-0042`.
pub fn product_id(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:04}")
}

/// JSON body of the `i`-th benchmark product (description ~100 characters).
pub fn product_json(id: &str, i: usize) -> serde_json::Value {
    product_json_with_stock(id, i, DEFAULT_STOCK)
}

/// Stock of seeded products: enough that no benchmark runs out.
pub const DEFAULT_STOCK: i64 = 1_000_000;

/// [`product_json`] with a chosen stock.
pub fn product_json_with_stock(id: &str, i: usize, stock: i64) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "name": format!("Bench product {i}"),
        "description": format!(
            "Benchmark product number {i:04}; a plausible catalogue description sized like real data."
        ),
        "price_cents": 1999,
        "currency": "USD",
        "stock": stock,
    })
}

/// What [`ensure_products`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeded {
    pub created: usize,
    pub existing: usize,
}

/// Creates products `<prefix>0000` .. with `stock` each unless they exist
/// (409 counts as present); returns their ids.
pub async fn ensure_products(
    client: &Client,
    subject: &str,
    prefix: &str,
    count: usize,
    stock: i64,
    concurrency: usize,
) -> Result<(Vec<String>, Seeded)> {
    if concurrency == 0 {
        bail!("seeding concurrency must be at least 1");
    }
    let ids: Vec<String> = (0..count).map(|i| product_id(prefix, i)).collect();
    let results: Vec<(String, Result<Outcome>)> = stream::iter(ids.iter().enumerate())
        .map(|(i, id)| {
            let client = client.clone();
            async move {
                let outcome = create_one(&client, subject, id, i, stock).await;
                (id.clone(), outcome)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;

    let mut seeded = Seeded {
        created: 0,
        existing: 0,
    };
    let mut failures: Vec<String> = Vec::new();
    for (id, outcome) in results {
        match outcome {
            Ok(Outcome::Created) => seeded.created += 1,
            Ok(Outcome::AlreadyExists) => seeded.existing += 1,
            Err(e) => failures.push(format!("{id}: {e:#}")),
        }
    }
    if !failures.is_empty() {
        let shown: Vec<&str> = failures.iter().take(5).map(String::as_str).collect();
        bail!(
            "{} of {count} product creations failed; first: {}",
            failures.len(),
            shown.join("; ")
        );
    }
    Ok((ids, seeded))
}

/// The `seed-products` command.
pub async fn run(config: &SeedConfig) -> Result<()> {
    let client = nats::connect(&config.nats_url, "shop-bench-seed", config.timeout).await?;
    let start = Instant::now();
    let (ids, seeded) = ensure_products(
        &client,
        &config.subject,
        &config.prefix,
        config.count,
        DEFAULT_STOCK,
        config.concurrency,
    )
    .await?;
    eprintln!(
        "seed-products: {} created, {} already existed, in {:.2}s",
        seeded.created,
        seeded.existing,
        start.elapsed().as_secs_f64()
    );

    if let Some(path) = &config.ids_out {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut out = String::with_capacity(ids.len() * 24);
        for id in &ids {
            out.push_str(&serde_json::json!({ "id": id }).to_string());
            out.push('\n');
        }
        std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "seed-products: wrote {} ids to {}",
            ids.len(),
            path.display()
        );
    }
    Ok(())
}

async fn create_one(
    client: &Client,
    subject: &str,
    id: &str,
    i: usize,
    stock: i64,
) -> Result<Outcome> {
    let body = Bytes::from(product_json_with_stock(id, i, stock).to_string());
    let reply = client
        .request(subject.to_owned(), body)
        .await
        .with_context(|| format!("request to {subject}"))?;
    match nats::service_error(reply.headers.as_ref()) {
        None => Ok(Outcome::Created),
        Some((code, _)) if code == "409" => Ok(Outcome::AlreadyExists),
        Some((code, description)) => bail!("service error {code}: {description}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_shape() {
        assert_eq!(product_id("bench-", 7), "bench-0007");
        let p = product_json("bench-0007", 7);
        assert_eq!(p["id"], "bench-0007");
        assert_eq!(p["name"], "Bench product 7");
        assert_eq!(p["price_cents"], 1999);
        assert_eq!(p["stock"], 1_000_000);
        let len = p["description"].as_str().map_or(0, str::len);
        assert!((80..=120).contains(&len), "description length {len}");
    }
}
