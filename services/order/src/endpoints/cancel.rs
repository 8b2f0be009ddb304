//! `order.cancel`: a user cancels their order; the saga then compensates
//! (refunds, releases stock). Cancelling again changes nothing.

use std::sync::Arc;

use shop_actors::{HandlerResult, Request, RequestBody};
use shop_nats::{clock::now_ms, ServiceError};

use super::{change_order, Orders};
use crate::domain::{self, CancelOrder};

impl RequestBody for CancelOrder {
    fn validate(&self) -> Result<(), ServiceError> {
        domain::validate_id("id", &self.id)
    }
}

/// Moves the order to `cancelling`, if the caller may reach it.
pub async fn cancel(orders: Arc<Orders>, request: Request, cancel: CancelOrder) -> HandlerResult {
    let id = cancel.id.as_str();
    let caller = request.user()?;
    // An order created a moment ago through another instance may not be in
    // this one's state yet (seen in the chaos run: a user's cancel of their
    // acknowledged order answered 404): catch up before deciding it is unknown.
    if crate::store::order(orders.events.state().tree(), id)?.is_none() {
        orders.events.catch_up().await?;
    }
    let order = change_order(&orders.events, &request.trace, id, None, |current| {
        let current = current
            .filter(|order| domain::may_access(caller, order))
            .ok_or_else(|| domain::not_found(id))?;
        domain::decide_cancel(current, now_ms())
    })
    .await?
    .ok_or_else(|| domain::not_found(id))?;
    request.encode(&order)
}
