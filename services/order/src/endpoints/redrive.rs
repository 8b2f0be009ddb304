//! `order.redrive`: runs an order's current saga step again, for an operator
//! replaying a dead-lettered saga event (`shop dlq replay`). It records an
//! `order.redriven` event carrying the order unchanged; the saga's consumer
//! receives it like any other and runs the step the order's status calls for.
//! An order whose saga has ended is answered as it is.

use std::sync::Arc;

use shop_actors::{HandlerResult, Request, RequestBody};
use shop_nats::{clock::now_ms, ServiceError};

use super::{record_order, Orders, Recorded};
use crate::domain::{self, OrderEvent, RedriveOrder};

impl RequestBody for RedriveOrder {
    fn validate(&self) -> Result<(), ServiceError> {
        domain::validate_id("id", &self.id)
    }
}

/// Records the re-drive, or answers the order as it is when its saga has ended.
pub async fn redrive(orders: Arc<Orders>, request: Request, body: RedriveOrder) -> HandlerResult {
    let id = body.id.as_str();
    let recorded = record_order(&orders.events, &request.trace, id, None, |current| {
        Ok(domain::decide_redrive(current, id, now_ms())?.map(OrderEvent::redriven))
    })
    .await?;
    let order = match recorded {
        Recorded::Appended(order) => {
            tracing::info!(order_id = %id, status = ?order.status, "order re-driven: its saga runs its current step again");
            order
        }
        Recorded::Unchanged(order) => order.ok_or_else(|| domain::not_found(id))?,
    };
    request.encode(&order)
}
