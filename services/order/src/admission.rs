//! Admission control for `order.create`: an instance accepts at most
//! `ORDER_MAX_IN_FLIGHT` orders that are not final yet, and refuses the next
//! one at once (503, "retry after 1 s") instead of letting the saga's queue
//! grow until orders time out.
//!
//! Past saturation, every order accepted beyond what the saga can finish in
//! time only adds latency to all the others; refusing it within a few
//! milliseconds lets the caller back off (the gateway turns the 503 into
//! `Retry-After: 1`) while the orders already accepted keep their latency.
//!
//! The count is per instance: the orders this instance created, until its
//! local state (fed by the `ORDER` stream, whoever ran the saga) shows them
//! final. Nothing here is durable: a restarted instance starts at zero, and
//! the deadline sweep still ends every order.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use shop_nats::ServiceError;

use crate::store;

/// How often a full instance looks again at which of its orders are final.
const PRUNE_EVERY: Duration = Duration::from_millis(10);

/// What a refused create is told about when to come back.
pub const RETRY_AFTER: &str = "retry after 1 s";

/// The orders this instance accepted and that are not final yet.
pub struct Admission {
    limit: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Order id → when it was admitted.
    orders: HashMap<String, Instant>,
    last_prune: Option<Instant>,
}

impl Admission {
    /// At most `limit` unfinished orders at once; 0: no limit.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            inner: Mutex::new(Inner {
                orders: HashMap::new(),
                last_prune: None,
            }),
        })
    }

    /// Orders counted now.
    pub fn in_flight(&self) -> usize {
        self.inner.lock().map(|i| i.orders.len()).unwrap_or(0)
    }

    /// Whether a new order would find a place now (looking again at which
    /// orders are final at most every 10 ms). The endpoint checks it before a
    /// create waits in the worker pool, so a full instance refuses at once;
    /// [`Self::admit`] still takes the place itself.
    pub fn check(&self, tree: &sled::Tree) -> Result<(), ServiceError> {
        if self.limit == 0 {
            return Ok(());
        }
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| ServiceError::internal("admission state poisoned"))?;
        inner.prune_if_full(self.limit, tree);
        if inner.orders.len() >= self.limit {
            return Err(at_capacity(inner.orders.len()));
        }
        Ok(())
    }

    /// Takes a place for order `id`, or refuses with a 503 when every place
    /// is held by an order that is not final in `tree` yet. The place is
    /// given back when the returned [`Slot`] is dropped without
    /// [`Slot::keep`] (the create failed).
    pub fn admit(self: &Arc<Self>, id: &str, tree: &sled::Tree) -> Result<Slot, ServiceError> {
        if self.limit == 0 {
            return Ok(Slot { admission: None });
        }
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| ServiceError::internal("admission state poisoned"))?;
        if inner.orders.contains_key(id) {
            // A retried create of an order still being created: no second place.
            return Ok(Slot { admission: None });
        }
        inner.prune_if_full(self.limit, tree);
        if inner.orders.len() >= self.limit {
            return Err(at_capacity(inner.orders.len()));
        }
        inner.orders.insert(id.to_string(), Instant::now());
        Ok(Slot {
            admission: Some((self.clone(), id.to_string())),
        })
    }

    fn release(&self, id: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.orders.remove(id);
        }
    }
}

impl Inner {
    /// At the limit, forgets the orders `tree` shows final (at most every 10 ms).
    fn prune_if_full(&mut self, limit: usize, tree: &sled::Tree) {
        if self.orders.len() < limit {
            return;
        }
        let now = Instant::now();
        if self
            .last_prune
            .is_none_or(|at| now.duration_since(at) >= PRUNE_EVERY)
        {
            self.last_prune = Some(now);
            self.orders.retain(|id, _| !finished(tree, id));
        }
    }
}

fn at_capacity(in_progress: usize) -> ServiceError {
    ServiceError::unavailable(format!(
        "order service at capacity: {in_progress} orders in progress on this instance; {RETRY_AFTER}"
    ))
}

/// Whether the local state shows order `id` final. An order not there yet is
/// still in progress; a store error counts as in progress too (the place is
/// freed on a later look).
fn finished(tree: &sled::Tree, id: &str) -> bool {
    matches!(store::order(tree, id), Ok(Some(order)) if order.status.is_final())
}

/// A place taken by [`Admission::admit`].
pub struct Slot {
    admission: Option<(Arc<Admission>, String)>,
}

impl Slot {
    /// The order is recorded: it holds its place until it is final.
    pub fn keep(mut self) {
        self.admission = None;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((admission, id)) = self.admission.take() {
            admission.release(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Order, Status};

    fn tree() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("orders").unwrap()
    }

    fn store_order(tree: &sled::Tree, id: &str, status: Status) {
        let order = Order {
            id: id.into(),
            user_id: "u".into(),
            items: vec![],
            total_cents: 0,
            currency: "USD".into(),
            status,
            reason: None,
            payment_id: None,
            cancelled_from: None,
            created_at_ms: 1,
            updated_at_ms: 1,
            revision: 1,
        };
        let value = shop_actors::store::encode_versioned(store::FORMAT_VERSION, &order).unwrap();
        tree.insert(store::order_key(id), value).unwrap();
    }

    #[test]
    fn refuses_past_the_limit_until_an_order_is_final() {
        let tree = tree();
        let admission = Admission::new(2);
        admission.admit("a", &tree).unwrap().keep();
        admission.admit("b", &tree).unwrap().keep();
        let refused = admission.admit("c", &tree).err().unwrap();
        assert_eq!(refused.code, 503);
        assert_eq!(admission.check(&tree).unwrap_err(), refused);
        assert!(refused.message.contains("retry after 1 s"));
        store_order(&tree, "a", Status::Confirmed);
        store_order(&tree, "b", Status::Paid);
        std::thread::sleep(PRUNE_EVERY);
        admission.check(&tree).unwrap();
        admission.admit("c", &tree).unwrap().keep();
        assert_eq!(admission.in_flight(), 2);
    }

    #[test]
    fn a_failed_create_gives_its_place_back() {
        let tree = tree();
        let admission = Admission::new(1);
        drop(admission.admit("a", &tree).unwrap());
        assert_eq!(admission.in_flight(), 0);
        admission.admit("b", &tree).unwrap().keep();
        assert!(admission.admit("c", &tree).is_err());
    }

    #[test]
    fn zero_means_no_limit() {
        let tree = tree();
        let admission = Admission::new(0);
        for i in 0..100 {
            admission.admit(&i.to_string(), &tree).unwrap().keep();
        }
        assert_eq!(admission.in_flight(), 0);
    }
}
