//! `product.create`: a new product; with an `idempotency_key`, a retried create
//! names the same product and answers it instead of failing.

use std::sync::Arc;

use shop_actors::{HandlerResult, Request, RequestBody};

use super::Products;
use crate::domain::{self, CreateProduct};

impl RequestBody for CreateProduct {}

pub async fn create(
    products: Arc<Products>,
    request: Request,
    create: CreateProduct,
) -> HandlerResult {
    let idempotent = create.idempotency_key.is_some();
    let product = domain::validate_create(&create, || match &create.idempotency_key {
        // A retried create with the same key names the same product.
        Some(key) => uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes())
            .simple()
            .to_string(),
        None => uuid::Uuid::now_v7().simple().to_string(),
    })?;
    let id = product.id.clone();
    let msg_id = format!("product.create:{id}");
    let changed = products
        .write_product(&request.trace, &id, Some(msg_id), |current, _| {
            domain::decide_create(current, product.clone(), idempotent)
        })
        .await?;
    products.product_after(&request, &id, changed)
}
