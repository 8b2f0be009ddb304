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
    serde_json::json!({
        "id": id,
        "name": format!("Bench product {i}"),
        "description": format!(
            "Benchmark product number {i:04}; a plausible catalogue description sized like real data."
        ),
        "price_cents": 1999,
        "currency": "USD",
        "stock": 1_000_000,
    })
}

pub async fn run(config: &SeedConfig) -> Result<()> {
    if config.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let client = nats::connect(&config.nats_url, "shop-bench-seed", config.timeout).await?;
    let ids: Vec<String> = (0..config.count)
        .map(|i| product_id(&config.prefix, i))
        .collect();
    let start = Instant::now();

    let results: Vec<(String, Result<Outcome>)> = stream::iter(ids.iter().enumerate())
        .map(|(i, id)| {
            let client = client.clone();
            async move {
                let outcome = create_one(&client, &config.subject, id, i).await;
                (id.clone(), outcome)
            }
        })
        .buffer_unordered(config.concurrency)
        .collect()
        .await;

    let (mut created, mut existing) = (0usize, 0usize);
    let mut failures: Vec<String> = Vec::new();
    for (id, outcome) in results {
        match outcome {
            Ok(Outcome::Created) => created += 1,
            Ok(Outcome::AlreadyExists) => existing += 1,
            Err(e) => failures.push(format!("{id}: {e:#}")),
        }
    }
    if !failures.is_empty() {
        let shown: Vec<&str> = failures.iter().take(5).map(String::as_str).collect();
        bail!(
            "{} of {} product creations failed; first: {}",
            failures.len(),
            config.count,
            shown.join("; ")
        );
    }
    eprintln!(
        "seed-products: {created} created, {existing} already existed, in {:.2}s",
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

async fn create_one(client: &Client, subject: &str, id: &str, i: usize) -> Result<Outcome> {
    let body = Bytes::from(product_json(id, i).to_string());
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
