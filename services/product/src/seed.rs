//! `product-service seed FILE`: creates the products listed in a JSON file
//! (an array of `product.create` requests with fixed ids); ones that already
//! exist are left as they are, so seeding twice is harmless. Creating
//! products is for admins: the seed connects with the operator's credentials
//! (`NATS_CREDS=<auth dir>/operator.creds`, as `shop up` does), logs in as the
//! admin (`user.login`) and sends its token.

use std::{path::Path, time::Duration};

use anyhow::Context;
use shop_nats::{connect::OPERATOR_IDENTITY, CallOptions, NatsConfig, ServiceClient};

use crate::domain::CreateProduct;

pub async fn seed(
    nats: &NatsConfig,
    file: &Path,
    admin_email: &str,
    admin_password: &str,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let products: Vec<CreateProduct> = serde_json::from_str(&text)
        .with_context(|| format!("parsing {} as a list of products", file.display()))?;
    let connection = shop_nats::connect(nats, OPERATOR_IDENTITY, "product-seed").await?;
    let token = shop_nats::login::login(
        &connection.client,
        admin_email,
        admin_password,
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let admin = shop_nats::auth::bearer_headers(&token);
    let client = ServiceClient::new(connection.client);
    let options = CallOptions::default()
        .idempotent()
        .retries(5)
        .timeout(Duration::from_secs(5));
    let (mut created, mut existing) = (0, 0);
    for product in &products {
        let id = product.id.clone().unwrap_or_default();
        let payload = bytes::Bytes::from(serde_json::to_vec(product)?);
        match client
            .call_raw_with_headers("product.create", payload, options, None, &admin)
            .await
        {
            Ok(_) => created += 1,
            Err(e) if e.code == 409 => existing += 1,
            Err(e) => anyhow::bail!("creating product {id}: {e}"),
        }
    }
    println!(
        "seeded {} products: {created} created, {existing} already present",
        products.len()
    );
    Ok(())
}
