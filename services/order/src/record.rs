//! Recording an order change: decide against the order as this instance has it,
//! append the event with that order's revision as the expected one.

use shop_actors::{eventlog::Written, Append, EventLog};
use shop_nats::{ServiceError, TraceContext};

use crate::{
    domain::{event_type, Order, OrderEvent},
    store,
};

pub fn event_subject(order_id: &str) -> String {
    format!("events.order.{order_id}")
}

/// Appends the order `decide` returns (given the current one, read once), or
/// nothing when it returns `None`. Returns the order as recorded, with its new
/// revision, or the current order when nothing was written.
pub async fn record<F>(
    events: &EventLog,
    trace: &TraceContext,
    id: &str,
    msg_id: Option<String>,
    mut decide: F,
) -> Result<Option<Order>, ServiceError>
where
    F: FnMut(Option<&Order>) -> Result<Option<Order>, ServiceError>,
{
    let mut decided = None;
    let written = events
        .write(id, trace, |state| {
            let current = store::order(state.tree(), id)?;
            let expected = current.as_ref().map(|o| o.revision).unwrap_or(0);
            let Some(next) = decide(current.as_ref())? else {
                return Ok(None);
            };
            let kind = event_type(next.status);
            let payload = serde_json::to_vec(&OrderEvent {
                kind: kind.to_string(),
                order: next.clone(),
            })
            .map_err(|e| ServiceError::internal(format!("encoding order event: {e}")))?;
            decided = Some(next);
            Ok(Some(Append {
                subject: event_subject(id),
                event_type: kind,
                payload: payload.into(),
                expected_revision: Some(expected),
                msg_id: msg_id.clone().unwrap_or_else(EventLog::new_msg_id),
            }))
        })
        .await?;
    match (written, decided) {
        (Written::Appended(appended), Some(mut order)) if !appended.duplicate => {
            order.revision = appended.revision;
            Ok(Some(order))
        }
        _ => store::order(events.state().tree(), id),
    }
}
