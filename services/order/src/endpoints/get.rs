//! `order.get`: one order, from the local store, if the caller may see it.

use shop_actors::{HandlerResult, Request, RequestBody};
use shop_nats::ServiceError;

use super::Orders;
use crate::{
    domain::{self, GetOrder},
    store,
};

impl RequestBody for GetOrder {
    fn validate(&self) -> Result<(), ServiceError> {
        domain::validate_id("id", &self.id)
    }

    fn min_revision(&self) -> Option<u64> {
        self.min_revision
    }
}

/// Answers with the order, or the same 404 for an unknown id and for another
/// user's order.
pub fn get(orders: &Orders, request: &Request, get: GetOrder) -> HandlerResult {
    let order = store::order(orders.tree(), &get.id)?.ok_or_else(|| domain::not_found(&get.id))?;
    let order = domain::visible_to(request.user()?, order)?;
    request.encode(&order)
}
