//! `product.update`: change some of a product's fields, optionally only if it
//! is still at an `expected_revision`.

use std::sync::Arc;

use shop_actors::{HandlerResult, Request, RequestBody};
use shop_nats::ServiceError;

use super::Products;
use crate::domain::{self, UpdateProduct};

impl RequestBody for UpdateProduct {
    fn validate(&self) -> Result<(), ServiceError> {
        domain::validate_update(self)
    }
}

pub async fn update(
    products: Arc<Products>,
    request: Request,
    update: UpdateProduct,
) -> HandlerResult {
    let changed = products
        .write_product(&request.trace, &update.id, None, |current, _| {
            domain::decide_update(current, &update)
        })
        .await?;
    products.product_after(&request, &update.id, changed)
}
