//! `product.get`: one product, from the local store.

use shop_actors::{HandlerResult, Request, RequestBody};
use shop_nats::ServiceError;

use super::Products;
use crate::domain::{validate_id, GetProduct};

impl RequestBody for GetProduct {
    fn validate(&self) -> Result<(), ServiceError> {
        validate_id("id", &self.id)
    }

    fn min_revision(&self) -> Option<u64> {
        self.min_revision
    }
}

pub fn get(products: &Products, request: &Request, get: GetProduct) -> HandlerResult {
    products.read_product(request, &get.id)
}
