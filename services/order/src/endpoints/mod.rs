//! Where order requests are answered, one file per endpoint. Reads come from
//! this instance's sled store; writes decide against it and append to the
//! `ORDER` stream through [`change_order`], which the saga uses too.

pub mod cancel;
pub mod create;
pub mod get;
pub mod list;

use shop_actors::{Change, EventLog};
use shop_nats::{ServiceClient, ServiceError, TraceContext};

use crate::{
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
}

impl Orders {
    /// The handlers' state: the event log, a client for other services, the token bucket.
    pub fn new(events: EventLog, client: ServiceClient, tokens: PaymentTokens) -> Self {
        Self {
            events,
            client,
            tokens,
        }
    }

    fn tree(&self) -> &sled::Tree {
        self.events.state().tree()
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
    let changed = events
        .change(id, trace, msg_id, |tree| {
            let current = store::order(tree, id)?;
            let expected_revision = current.as_ref().map_or(0, |o| o.revision);
            Ok(decide(current.as_ref())?.map(|next| Change {
                subject: event_subject(id),
                expected_revision,
                event: OrderEvent::new(next),
            }))
        })
        .await?;
    match changed.appended() {
        Some((event, revision)) => Ok(Some(Order {
            revision,
            ..event.order
        })),
        None => store::order(events.state().tree(), id),
    }
}
