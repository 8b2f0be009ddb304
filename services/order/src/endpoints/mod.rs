//! Where order requests are answered, one file per endpoint. Reads come from
//! this instance's sled store; writes decide against it and append to the
//! `ORDER` stream through [`change_order`], which the saga uses too.

pub mod cancel;
pub mod create;
pub mod get;
pub mod list;
pub mod redrive;

use std::sync::Arc;

use shop_actors::{Change, EventLog};
use shop_nats::{ServiceClient, ServiceError, TraceContext};

use crate::{
    admission::Admission,
    domain::{Order, OrderEvent},
    store,
    tokens::PaymentTokens,
};

/// The stream subject of one order's events.
pub fn event_subject(order_id: &str) -> String {
    format!("events.order.{order_id}")
}

/// The order service's state, shared by every handler.
pub struct Orders {
    events: EventLog,
    /// Calls to the product service (prices at creation).
    client: ServiceClient,
    tokens: PaymentTokens,
    /// Bounds the orders this instance has accepted and not finished.
    admission: Arc<Admission>,
}

impl Orders {
    /// The handlers' state: the event log, a client for other services, the
    /// token bucket, and the bound on unfinished orders.
    pub fn new(
        events: EventLog,
        client: ServiceClient,
        tokens: PaymentTokens,
        admission: Arc<Admission>,
    ) -> Self {
        Self {
            events,
            client,
            tokens,
            admission,
        }
    }

    fn tree(&self) -> &sled::Tree {
        self.events.state().tree()
    }
}

/// What became of a decision to change an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The decision's event is stored: the order as it is now, with its new revision.
    Appended(Order),
    /// Nothing was appended (the decision found nothing to do, or the same
    /// message id was stored before): the order as the local state has it.
    Unchanged(Option<Order>),
}

impl Recorded {
    /// The order after the change, whoever made it.
    pub fn order(self) -> Option<Order> {
        match self {
            Recorded::Appended(order) => Some(order),
            Recorded::Unchanged(order) => order,
        }
    }
}

/// Appends the event `decide` returns (given the current order, read once),
/// with the current order's revision as the expected one, or nothing when it
/// returns `None`.
pub async fn record_order<F>(
    events: &EventLog,
    trace: &TraceContext,
    id: &str,
    msg_id: Option<String>,
    mut decide: F,
) -> Result<Recorded, ServiceError>
where
    F: FnMut(Option<&Order>) -> Result<Option<OrderEvent>, ServiceError>,
{
    let changed = events
        .change(id, trace, msg_id, |tree| {
            let current = store::order(tree, id)?;
            let expected_revision = current.as_ref().map_or(0, |o| o.revision);
            Ok(decide(current.as_ref())?.map(|event| Change {
                subject: event_subject(id),
                expected_revision,
                event,
            }))
        })
        .await?;
    match changed.appended() {
        Some((event, revision)) => Ok(Recorded::Appended(Order {
            revision,
            ..event.order
        })),
        None => store::order(events.state().tree(), id).map(Recorded::Unchanged),
    }
}

/// Appends the order `decide` returns (given the current one, read once), with
/// the current order's revision as the expected one, or nothing when it
/// returns `None`. Returns the order as recorded, with its new revision, or
/// the current order when nothing was written.
pub async fn change_order<F>(
    events: &EventLog,
    trace: &TraceContext,
    id: &str,
    msg_id: Option<String>,
    mut decide: F,
) -> Result<Option<Order>, ServiceError>
where
    F: FnMut(Option<&Order>) -> Result<Option<Order>, ServiceError>,
{
    record_order(events, trace, id, msg_id, |current| {
        Ok(decide(current)?.map(OrderEvent::new))
    })
    .await
    .map(Recorded::order)
}
