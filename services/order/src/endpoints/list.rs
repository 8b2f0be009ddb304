//! `order.list`: a page of one user's orders, newest first.

use shop_actors::{HandlerResult, Request, RequestBody};
use shop_nats::ServiceError;

use super::Orders;
use crate::{
    domain::{self, ListOrders, OrderPage},
    store,
};

impl RequestBody for ListOrders {
    fn validate(&self) -> Result<(), ServiceError> {
        domain::validate_id("user_id", &self.user_id)?;
        domain::page_limit(self.limit).map(|_| ())
    }
}

/// Answers with the page, if the caller may list that user's orders.
pub fn list(orders: &Orders, request: &Request, list: ListOrders) -> HandlerResult {
    domain::check_list(request.user()?, &list.user_id)?;
    let limit = domain::page_limit(list.limit)?;
    let (items, next_cursor) =
        store::user_orders(orders.tree(), &list.user_id, list.cursor.as_deref(), limit)?;
    request.encode(&OrderPage { items, next_cursor })
}
