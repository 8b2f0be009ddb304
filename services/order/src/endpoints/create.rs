//! `order.create`: prices the order with the product service, keeps the
//! payment token aside, and records the order as `pending`; the saga takes it
//! from there. The same idempotency key from the same user names the same
//! order, on any instance.

use std::{sync::Arc, time::Duration};

use shop_actors::{HandlerResult, Request, RequestBody};
use shop_nats::{clock::now_ms, CallOptions, ServiceError};

use super::{change_order, Orders};
use crate::{
    domain::{self, CreateOrder, PricedProduct},
    store,
};

impl RequestBody for CreateOrder {
    fn validate(&self) -> Result<(), ServiceError> {
        domain::validate_create(self)
    }
}

/// Takes a place for the create if this instance has one: on the endpoint
/// actor, before the create waits in the worker pool, so a full instance
/// refuses at once.
pub fn has_room(orders: &Orders) -> Result<(), ServiceError> {
    orders.admission.reserve(orders.tree())
}

/// Records the new order, or answers the one this key already created.
pub async fn create(orders: Arc<Orders>, request: Request, create: CreateOrder) -> HandlerResult {
    // The place `has_room` took for this create; given back on an early return.
    let reservation = orders.admission.reservation();
    domain::check_create(request.user()?, &create.user_id)?;
    // The same key from the same user names the same order, on any instance.
    let id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("{}\u{0}{}", create.user_id, create.idempotency_key).as_bytes(),
    )
    .simple()
    .to_string();
    if let Some(existing) = store::order(orders.tree(), &id)? {
        return request.encode(&existing);
    }
    // Refused at once when this instance already has all the unfinished
    // orders it can see through in time (before any call or append).
    let slot = orders.admission.admit(reservation, &id, orders.tree())?;
    let products = futures::future::try_join_all(
        create
            .items
            .iter()
            .map(|line| price(&orders, &request, &line.product_id)),
    )
    .await?;
    let order = domain::price_order(id.clone(), &create, &products, now_ms())?;
    orders.tokens.put(&id, &create.payment_token).await?;
    let recorded = change_order(
        &orders.events,
        &request.trace,
        &id,
        Some(format!("order.create:{id}")),
        |current| match current {
            Some(_) => Ok(None),
            None => Ok(Some(order.clone())),
        },
    )
    .await?
    .ok_or_else(|| ServiceError::internal("order vanished after being created"))?;
    slot.keep();
    tracing::info!(order_id = %id, user_id = %create.user_id, total_cents = recorded.total_cents, "order created");
    request.encode(&recorded)
}

/// A product's current price, from the product service (`product.get`).
async fn price(
    orders: &Orders,
    request: &Request,
    product_id: &str,
) -> Result<PricedProduct, ServiceError> {
    let options = CallOptions::default()
        .idempotent()
        .timeout(Duration::from_secs(2));
    orders
        .client
        .call::<_, PricedProduct>(
            "product.get",
            &serde_json::json!({"id": product_id}),
            options,
            Some(&request.trace),
        )
        .await
        .map_err(|e| match e.code {
            404 => ServiceError::bad_request(format!("product {product_id} does not exist")),
            _ => ServiceError::new(
                if e.is_transient() { 503 } else { e.code },
                format!("pricing {product_id}: {}", e.message),
            ),
        })
}
