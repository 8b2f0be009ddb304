//! `product.stock.reserve` and `product.stock.release`: a reservation moves
//! stock, once per `reservation_id` however often it is repeated.
//!
//! Changes to one product that arrive while its last change is being stored
//! are decided together and stored as one event ([`StockWrites`], through the
//! runtime's group commit): a hot product costs one fsync per group, not one
//! per reservation.

use std::sync::Arc;

use shop_actors::{Change, Decided, GroupWrite, HandlerResult, Request, RequestBody};
use shop_nats::ServiceError;

use super::{event_subject, Products};
use crate::{
    domain::{self, ProductEvent, StockChange, StockOp, StockReply},
    store,
};

impl RequestBody for StockChange {
    fn validate(&self) -> Result<(), ServiceError> {
        domain::validate_stock_change(self)
    }
}

pub async fn reserve(
    products: Arc<Products>,
    request: Request,
    change: StockChange,
) -> HandlerResult {
    stock(&products, &request, StockOp::Reserve, change).await
}

pub async fn release(
    products: Arc<Products>,
    request: Request,
    change: StockChange,
) -> HandlerResult {
    stock(&products, &request, StockOp::Release, change).await
}

async fn stock(
    products: &Products,
    request: &Request,
    op: StockOp,
    change: StockChange,
) -> HandlerResult {
    let product_id = change.product_id.clone();
    let committed = products
        .stock
        .submit(&product_id, &request.trace, (op, change))
        .await?;
    let reply = StockReply {
        revision: committed.revision,
        ..committed.outcome
    };
    request.encode(&reply)
}

/// How a group of stock changes to one product is decided against the store.
pub struct StockWrites;

impl GroupWrite for StockWrites {
    type Item = (StockOp, StockChange);
    type Event = ProductEvent;
    type Outcome = StockReply;

    fn decide(
        &self,
        tree: &sled::Tree,
        product_id: &str,
        items: &[Self::Item],
    ) -> Result<Decided<ProductEvent, StockReply>, ServiceError> {
        let product = store::product(tree, product_id)?;
        let revision = product.as_ref().map_or(0, |p| p.revision);
        let (event, outcomes) = domain::decide_stock_group(
            product.as_ref(),
            |reservation_id| store::reservation(tree, product_id, reservation_id),
            items,
        )?;
        // A single request keeps its own deduplication id, as before grouping.
        let msg_id = match items {
            [(op, change)] => Some(format!(
                "product.stock.{}:{product_id}:{}",
                match op {
                    StockOp::Reserve => "reserve",
                    StockOp::Release => "release",
                },
                change.reservation_id
            )),
            _ => None,
        };
        Ok(Decided {
            change: event.map(|event| Change {
                subject: event_subject(product_id),
                expected_revision: revision,
                event,
            }),
            revision,
            msg_id,
            outcomes,
        })
    }

    fn needs_catch_up(&self, tree: &sled::Tree, product_id: &str) -> bool {
        // Perhaps created a moment ago through another instance.
        !matches!(store::product(tree, product_id), Ok(Some(_)))
    }
}
