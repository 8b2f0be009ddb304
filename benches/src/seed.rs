//! Benchmark products, created through `product.create` as the admin.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use async_nats::{Client, HeaderMap};
use futures::stream::{self, TryStreamExt};
use shop_nats::ServiceError;

/// Prefix of the products read by product-get, product-list, gateway-get and mixed.
pub const READ_PREFIX: &str = "bench-";
/// Stock of seeded products: enough that no benchmark runs out.
pub const DEFAULT_STOCK: i64 = 1_000_000;

/// Id of the `i`-th read product ([`READ_PREFIX`]), e.g. `bench-0042`.
pub fn read_id(i: usize) -> String {
    format!("{READ_PREFIX}{i:04}")
}

/// `ADMIN_EMAIL` / `ADMIN_PASSWORD`, or the admin the stack's user service creates.
pub fn admin_credentials() -> (String, String) {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or(default.to_string());
    let email = var("ADMIN_EMAIL", "bench-admin@shop.example");
    (email, var("ADMIN_PASSWORD", "bench-admin-password"))
}

/// Headers carrying an admin's token; retries while a fresh user service creates it.
pub async fn admin_headers(client: &Client) -> Result<HeaderMap> {
    let (email, password) = admin_credentials();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match shop_nats::login::login(client, &email, &password, Duration::from_secs(10)).await {
            Ok(token) => return Ok(shop_nats::auth::bearer_headers(&token)),
            Err(e) if Instant::now() < deadline && matches!(e.code, 401 | 503) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => bail!(
                "logging in as the admin {email} to seed products: {}",
                e.message
            ),
        }
    }
}

/// Creates products `<prefix>0000` .. with `stock` each unless they exist; their ids.
pub async fn ensure_products(
    client: &Client,
    prefix: &str,
    count: usize,
    stock: i64,
    concurrency: usize,
) -> Result<Vec<String>> {
    let ids: Vec<String> = (0..count).map(|i| format!("{prefix}{i:04}")).collect();
    let admin = &admin_headers(client).await?;
    stream::iter(ids.iter().enumerate().map(anyhow::Ok))
        .try_for_each_concurrent(concurrency.max(1), |(i, id)| {
            create(client, admin, id, i, stock)
        })
        .await?;
    Ok(ids)
}

/// Creates product `id` (the `i`-th of its kind) with `stock`; one that exists is fine.
pub async fn create(
    client: &Client,
    admin: &HeaderMap,
    id: &str,
    i: usize,
    stock: i64,
) -> Result<()> {
    let body = serde_json::json!({
        "id": id,
        "name": format!("Bench product {i}"),
        "description": format!(
            "Benchmark product number {i:04}; a plausible catalogue description sized like real data."
        ),
        "price_cents": 1999,
        "currency": "USD",
        "stock": stock,
    });
    let reply =
        client.request_with_headers("product.create", admin.clone(), body.to_string().into());
    let reply = reply.await.with_context(|| format!("creating {id}"))?;
    match ServiceError::from_reply(reply.headers.as_ref(), &reply.payload) {
        Some(e) if e.code != 409 => bail!("creating {id}: service error {e}"),
        _ => Ok(()),
    }
}
