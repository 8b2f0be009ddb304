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
//! final, plus the creates on their way to the worker pool. The endpoint
//! actor takes a provisional place for each create it lets through
//! ([`Admission::reserve`]), so a burst cannot pass the check all at once and
//! then be refused in the pool after queueing behind the creates it let
//! through. Nothing here is durable: a restarted instance starts at zero, and
//! the deadline sweep still ends every order.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use shop_nats::ServiceError;

use crate::store;

/// How often a full instance looks again at which of its orders are final.
const PRUNE_EVERY: Duration = Duration::from_millis(10);

/// A provisional place not taken up by its create within this long (it was
/// refused before its handler ran: bad input, a full pool) is given back.
const RESERVATION_TTL: Duration = Duration::from_secs(5);

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
    /// Provisional places of creates let through and not admitted yet, by
    /// when they were taken (oldest first).
    reserved: VecDeque<Instant>,
    last_prune: Option<Instant>,
}

impl Admission {
    /// At most `limit` unfinished orders at once; 0: no limit.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            inner: Mutex::new(Inner {
                orders: HashMap::new(),
                reserved: VecDeque::new(),
                last_prune: None,
            }),
        })
    }

    /// Orders counted now.
    pub fn in_flight(&self) -> usize {
        self.inner.lock().map(|i| i.orders.len()).unwrap_or(0)
    }

    /// Takes a provisional place for a create about to be handled, or
    /// refuses with a 503 when admitted orders and creates on their way fill
    /// every place (looking again at which orders are final at most every
    /// 10 ms). The endpoint actor calls it before the create waits in the
    /// worker pool, so a full instance refuses at once; the create's handler
    /// then holds the place as a [`Reservation`].
    pub fn reserve(&self, tree: &sled::Tree) -> Result<(), ServiceError> {
        if self.limit == 0 {
            return Ok(());
        }
        let mut inner = self.lock()?;
        let now = Instant::now();
        while inner
            .reserved
            .front()
            .is_some_and(|taken| now.duration_since(*taken) >= RESERVATION_TTL)
        {
            inner.reserved.pop_front();
        }
        inner.prune_if_full(self.limit, tree);
        let taken = inner.orders.len() + inner.reserved.len();
        if taken >= self.limit {
            return Err(at_capacity(taken));
        }
        inner.reserved.push_back(now);
        Ok(())
    }

    /// The provisional place [`Self::reserve`] took for the create now being
    /// handled: given back when dropped, unless [`Self::admit`] takes it up.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            admission: (self.limit > 0).then(|| self.clone()),
        }
    }

    /// Takes up `reservation` as the place of order `id`, or refuses with a
    /// 503 when every place is held by an order that is not final in `tree`
    /// yet. The place is given back when the returned [`Slot`] is dropped
    /// without [`Slot::keep`] (the create failed).
    pub fn admit(
        self: &Arc<Self>,
        mut reservation: Reservation,
        id: &str,
        tree: &sled::Tree,
    ) -> Result<Slot, ServiceError> {
        if self.limit == 0 {
            return Ok(Slot { admission: None });
        }
        let mut inner = self.lock()?;
        if reservation.admission.take().is_some() {
            inner.reserved.pop_front();
        }
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

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, ServiceError> {
        self.inner
            .lock()
            .map_err(|_| ServiceError::internal("admission state poisoned"))
    }

    fn unreserve(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.reserved.pop_front();
        }
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
        if self.orders.len() + self.reserved.len() < limit {
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

/// The provisional place of a create being handled (see [`Admission::reserve`]).
pub struct Reservation {
    admission: Option<Arc<Admission>>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            admission.unreserve();
        }
    }
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

    /// What the endpoint and the handler do for one create.
    fn create(
        admission: &Arc<Admission>,
        id: &str,
        tree: &sled::Tree,
    ) -> Result<Slot, ServiceError> {
        admission.reserve(tree)?;
        admission.admit(admission.reservation(), id, tree)
    }

    #[test]
    fn refuses_past_the_limit_until_an_order_is_final() {
        let tree = tree();
        let admission = Admission::new(2);
        create(&admission, "a", &tree).unwrap().keep();
        create(&admission, "b", &tree).unwrap().keep();
        let refused = create(&admission, "c", &tree).err().unwrap();
        assert_eq!(refused.code, 503);
        assert!(refused.message.contains("retry after 1 s"));
        store_order(&tree, "a", Status::Confirmed);
        store_order(&tree, "b", Status::Paid);
        std::thread::sleep(PRUNE_EVERY);
        admission.reserve(&tree).unwrap();
        admission
            .admit(admission.reservation(), "c", &tree)
            .unwrap()
            .keep();
        assert_eq!(admission.in_flight(), 2);
    }

    #[test]
    fn creates_let_through_hold_their_place_until_admitted_or_dropped() {
        let tree = tree();
        let admission = Admission::new(2);
        admission.reserve(&tree).unwrap();
        admission.reserve(&tree).unwrap();
        assert_eq!(
            admission.reserve(&tree).unwrap_err().code,
            503,
            "two creates on their way fill both places"
        );
        // One is refused by its handler (a 403, an existing order): its place comes back.
        drop(admission.reservation());
        admission.reserve(&tree).unwrap();
        admission
            .admit(admission.reservation(), "a", &tree)
            .unwrap()
            .keep();
        assert!(admission.reserve(&tree).is_err());
        drop(admission.reservation());
        assert_eq!(admission.in_flight(), 1);
        admission.reserve(&tree).unwrap();
    }

    #[test]
    fn a_racing_burst_lets_through_exactly_the_free_places() {
        let tree = tree();
        let admission = Admission::new(16);
        let passed = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..10 {
                        if admission.reserve(&tree).is_ok() {
                            passed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert_eq!(passed.into_inner(), 16, "80 racing creates, 16 places");
    }

    #[test]
    fn a_failed_create_gives_its_place_back() {
        let tree = tree();
        let admission = Admission::new(1);
        drop(create(&admission, "a", &tree).unwrap());
        assert_eq!(admission.in_flight(), 0);
        create(&admission, "b", &tree).unwrap().keep();
        assert!(create(&admission, "c", &tree).is_err());
    }

    #[test]
    fn zero_means_no_limit() {
        let tree = tree();
        let admission = Admission::new(0);
        for i in 0..100 {
            create(&admission, &i.to_string(), &tree).unwrap().keep();
        }
        assert_eq!(admission.in_flight(), 0);
    }
}
