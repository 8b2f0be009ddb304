//! Where order data lands locally, filled from the `ORDER` stream.
//!
//! | key                                   | value                          |
//! |---------------------------------------|--------------------------------|
//! | `o/<order_id>`                        | format byte + order JSON       |
//! | `u/<user_id>/<!created_ms>/<order_id>`| order id (a user's orders, newest first) |
//! | `a/<created_ms>/<order_id>`           | order id, while the saga is still running (for the deadline sweeper) |

use shop_actors::{ApplyError, Projection, StoredEvent};
use shop_nats::ServiceError;

use crate::domain::{Order, OrderEvent, Status};

pub const FORMAT_VERSION: u8 = 1;

pub fn order_key(id: &str) -> Vec<u8> {
    format!("o/{id}").into_bytes()
}

fn user_key(order: &Order) -> Vec<u8> {
    format!(
        "u/{}/{:016x}/{}",
        order.user_id,
        u64::MAX - order.created_at_ms,
        order.id
    )
    .into_bytes()
}

fn active_key(order: &Order) -> Vec<u8> {
    format!("a/{:016x}/{}", order.created_at_ms, order.id).into_bytes()
}

pub fn order(tree: &sled::Tree, id: &str) -> Result<Option<Order>, ServiceError> {
    let Some(value) = tree
        .get(order_key(id))
        .map_err(|e| ServiceError::internal(format!("reading local store: {e}")))?
    else {
        return Ok(None);
    };
    serde_json::from_slice(shop_actors::store::versioned_body(FORMAT_VERSION, &value)?)
        .map(Some)
        .map_err(|e| ServiceError::internal(format!("corrupt stored order {id}: {e}")))
}

/// A user's orders, newest first, after `cursor` (an opaque key suffix).
pub fn user_orders(
    tree: &sled::Tree,
    user_id: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<(Vec<Order>, Option<String>), ServiceError> {
    let prefix = format!("u/{user_id}/");
    let start = match cursor {
        Some(c) => format!("{prefix}{c}\u{0}"),
        None => prefix.clone(),
    };
    let mut out = Vec::new();
    let mut last = None;
    for entry in tree.range(start.into_bytes()..) {
        let (key, id) =
            entry.map_err(|e| ServiceError::internal(format!("reading local store: {e}")))?;
        if !key.starts_with(prefix.as_bytes()) {
            return Ok((out, None));
        }
        if out.len() == limit {
            return Ok((out, last));
        }
        let id = String::from_utf8_lossy(&id).into_owned();
        if let Some(order) = order(tree, &id)? {
            out.push(order);
        }
        last = Some(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
    }
    Ok((out, None))
}

/// Orders whose saga is still running and that were created before `before_ms`.
pub fn active_before(tree: &sled::Tree, before_ms: u64) -> Result<Vec<Order>, ServiceError> {
    let end = format!("a/{before_ms:016x}");
    let mut out = Vec::new();
    for entry in tree.range(b"a/".to_vec()..end.into_bytes()) {
        let (_, id) =
            entry.map_err(|e| ServiceError::internal(format!("reading local store: {e}")))?;
        if let Some(order) = order(tree, &String::from_utf8_lossy(&id))? {
            out.push(order);
        }
    }
    Ok(out)
}

/// Applies `ORDER` stream events to the local store.
pub struct OrderProjection;

impl Projection for OrderProjection {
    fn apply(&self, event: &StoredEvent<'_>, batch: &mut sled::Batch) -> Result<(), ApplyError> {
        let decoded: OrderEvent = event.decode()?;
        let mut order = decoded.order;
        event.check_aggregate(&order.id)?;
        order.revision = event.sequence;
        batch.insert(
            order_key(&order.id),
            shop_actors::store::encode_versioned(FORMAT_VERSION, &order)
                .map_err(ApplyError::Invalid)?,
        );
        batch.insert(user_key(&order), order.id.as_bytes());
        if order.status.is_final() || order.status == Status::Cancelling {
            batch.remove(active_key(&order));
        } else {
            batch.insert(active_key(&order), order.id.as_bytes());
        }
        Ok(())
    }
}
