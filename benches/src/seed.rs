//! Benchmark products, created through the product service's create endpoint
//! as the admin (`product.create` is for admins: [`admin_headers`]).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures::stream::{self, TryStreamExt};
use shop_nats::ServiceError;

/// Prefix of the products read by product-get, product-list, gateway-get and mixed.
pub const READ_PREFIX: &str = "bench-";
/// Stock of seeded products: enough that no benchmark runs out.
pub const DEFAULT_STOCK: i64 = 1_000_000;

/// Id of the `i`-th benchmark product, e.g. `bench-0042`.
pub fn product_id(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:04}")
}

/// Id of the `i`-th read product ([`READ_PREFIX`]).
pub fn read_id(i: usize) -> String {
    product_id(READ_PREFIX, i)
}

/// JSON body of the `i`-th benchmark product (description ~100 characters).
pub fn product_json(id: &str, i: usize, stock: i64) -> serde_json::Value {
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

/// The admin account the stack's user service creates, when `ADMIN_EMAIL` /
/// `ADMIN_PASSWORD` do not name another.
pub const BENCH_ADMIN_EMAIL: &str = "bench-admin@shop.example";
/// Its password.
pub const BENCH_ADMIN_PASSWORD: &str = "bench-admin-password";

/// The admin credentials: `ADMIN_EMAIL` / `ADMIN_PASSWORD`, or the bench's.
pub fn admin_credentials() -> (String, String) {
    (
        std::env::var("ADMIN_EMAIL").unwrap_or_else(|_| BENCH_ADMIN_EMAIL.to_string()),
        std::env::var("ADMIN_PASSWORD").unwrap_or_else(|_| BENCH_ADMIN_PASSWORD.to_string()),
    )
}

/// Headers carrying an admin's token: logs in with [`admin_credentials`],
/// retrying for a while (a user service that just started creates the
/// account a moment after it is ready).
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

/// Creates products `<prefix>0000` .. with `stock` each unless they exist,
/// `concurrency` at a time; returns their ids (or the first failure).
pub async fn ensure_products(
    client: &Client,
    prefix: &str,
    count: usize,
    stock: i64,
    concurrency: usize,
) -> Result<Vec<String>> {
    let ids: Vec<String> = (0..count).map(|i| product_id(prefix, i)).collect();
    let admin = &admin_headers(client).await?;
    stream::iter(ids.iter().enumerate().map(anyhow::Ok))
        .try_for_each_concurrent(concurrency.max(1), |(i, id)| {
            create(client, admin, id, i, stock)
        })
        .await?;
    Ok(ids)
}

/// Creates product `id` (the `i`-th of its kind) with `stock`, as the admin
/// whose token `admin` carries; one that exists already (409) counts as created.
pub async fn create(
    client: &Client,
    admin: &HeaderMap,
    id: &str,
    i: usize,
    stock: i64,
) -> Result<()> {
    let body = Bytes::from(product_json(id, i, stock).to_string());
    let reply = client.request_with_headers("product.create", admin.clone(), body);
    let reply = reply.await;
    let reply = reply.with_context(|| format!("creating {id}"))?;
    match ServiceError::from_reply(reply.headers.as_ref(), &reply.payload) {
        Some(e) if e.code != 409 => bail!("creating {id}: service error {e}"),
        _ => Ok(()),
    }
}
