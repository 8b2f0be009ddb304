//! `product.list`: a page of products in id order.

use shop_actors::{page::StoredPage, HandlerResult, Request, RequestBody};
use shop_nats::ServiceError;

use super::Products;
use crate::{
    domain::{self, ListProducts, Product},
    store,
};

impl RequestBody for ListProducts {
    fn validate(&self) -> Result<(), ServiceError> {
        domain::page_limit(self)?;
        match &self.cursor {
            Some(cursor) => domain::validate_id("cursor", cursor),
            None => Ok(()),
        }
    }
}

pub fn list(products: &Products, request: &Request, list: ListProducts) -> HandlerResult {
    let limit = domain::page_limit(&list)?;
    let (items, next_cursor) = store::product_page(products.tree(), list.cursor.as_deref(), limit)?;
    StoredPage { items, next_cursor }.encode::<Product>(request, "product")
}
