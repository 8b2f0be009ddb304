//! `product.stock.reserve` and `product.stock.release`: a reservation moves
//! stock, once per `reservation_id` however often it is repeated.

use std::sync::Arc;

use shop_actors::{HandlerResult, Request, RequestBody};
use shop_nats::ServiceError;

use super::Products;
use crate::{
    domain::{self, ReservationStatus, StockChange, StockReply},
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
    stock(&products, &request, change, true).await
}

pub async fn release(
    products: Arc<Products>,
    request: Request,
    change: StockChange,
) -> HandlerResult {
    stock(&products, &request, change, false).await
}

async fn stock(
    products: &Products,
    request: &Request,
    change: StockChange,
    reserve: bool,
) -> HandlerResult {
    let verb = if reserve { "reserve" } else { "release" };
    let msg_id = format!(
        "product.stock.{verb}:{}:{}",
        change.product_id, change.reservation_id
    );
    let changed = products
        .write_product(
            &request.trace,
            &change.product_id,
            Some(msg_id),
            |product, tree| {
                // Read after the product: reservations only change with it, so this is at least as new.
                let reservation =
                    store::reservation(tree, &change.product_id, &change.reservation_id)?;
                if reserve {
                    domain::decide_reserve(product, reservation, &change)
                } else {
                    domain::decide_release(product, reservation, &change)
                }
            },
        )
        .await?;
    let reply = match changed.appended() {
        Some((event, revision)) => {
            let (_, reservation) = event
                .reservation()
                .ok_or_else(|| ServiceError::internal("stock event without reservation"))?;
            StockReply {
                product_id: change.product_id,
                reservation_id: change.reservation_id,
                quantity: reservation.quantity,
                status: reservation.status,
                stock: event.product().stock,
                revision,
            }
        }
        // A repeat: the first request's effect is in the local state.
        None => {
            let tree = products.tree();
            let product = store::product(tree, &change.product_id)?
                .ok_or_else(|| domain::not_found(&change.product_id))?;
            let reservation = store::reservation(tree, &change.product_id, &change.reservation_id)?;
            let (quantity, status) = reservation
                .map(|r| (r.quantity, r.status))
                .unwrap_or((0, ReservationStatus::Released));
            StockReply {
                product_id: change.product_id,
                reservation_id: change.reservation_id,
                quantity,
                status,
                stock: product.stock,
                revision: product.revision,
            }
        }
    };
    request.encode(&reply)
}
