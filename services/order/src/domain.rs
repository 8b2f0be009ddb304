//! Orders and the rules of the order-placement saga, as plain functions.
//!
//! ```text
//! pending ──reserve all lines, charge──▶ confirmed
//!    │                                      │ (user)
//!    ▼                                      ▼
//! cancelling(reason) ── void or refund the charge, release ──▶ cancelled(reason)
//! ```
//!
//! Orders recorded by earlier versions may also be at `stock_reserved` (next:
//! charge) or `paid` (next: confirm), and move on from there.
//!
//! Status only moves forward along these arrows. Every step's outcome is an event
//! on the order's stream subject before the next step starts.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use shop_nats::{auth::Caller, ServiceError};

pub const MAX_LINES: usize = 50;
pub const MAX_QUANTITY: i64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    StockReserved,
    Paid,
    Confirmed,
    /// Compensating: refunding and releasing before `cancelled`.
    Cancelling,
    Cancelled,
}

impl Status {
    pub fn is_final(self) -> bool {
        matches!(self, Status::Confirmed | Status::Cancelled)
    }
}

/// Why an order was cancelled.
pub mod reason {
    pub const OUT_OF_STOCK: &str = "out_of_stock";
    pub const PRODUCT_UNAVAILABLE: &str = "product_unavailable";
    pub const PAYMENT_DECLINED: &str = "payment_declined";
    pub const PAYMENT_FAILED: &str = "payment_failed";
    /// The payment token was lost before the charge (its bucket, in memory,
    /// restarted with every server holding it); nothing was charged.
    pub const PAYMENT_TOKEN_LOST: &str = "payment_token_lost";
    pub const CANCELLED_BY_USER: &str = "cancelled_by_user";
    pub const TIMED_OUT: &str = "timed_out";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub product_id: String,
    pub quantity: i64,
    /// Unit price fixed at creation, in minor units of the order's currency.
    pub price_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub user_id: String,
    pub items: Vec<Line>,
    pub total_cents: i64,
    pub currency: String,
    pub status: Status,
    /// Set when cancelling or cancelled.
    pub reason: Option<String>,
    /// Set once the charge is captured.
    pub payment_id: Option<String>,
    /// When cancelling or cancelled: the status the order was in when its
    /// cancellation was recorded, which tells compensation whether a charge
    /// may exist (see [`payment_check`]). Absent on orders cancelled before
    /// this was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_from: Option<Status>,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// Stream sequence of the order's last change.
    pub revision: u64,
}

impl Order {
    /// The reservation id of line `index`: stable, so reserving and releasing
    /// again is idempotent in the product service.
    pub fn reservation_id(&self, index: usize) -> String {
        format!("order-{}:line-{index}", self.id)
    }

    /// The payment idempotency key: one charge per order, whatever retries.
    pub fn charge_key(&self) -> String {
        format!("order-{}:charge", self.id)
    }

    pub fn refund_key(&self) -> String {
        format!("order-{}:refund", self.id)
    }
}

// ---- requests ---------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLine {
    pub product_id: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    pub user_id: String,
    pub items: Vec<CreateLine>,
    /// Passed to the payment service; never stored in events or logged.
    pub payment_token: String,
    pub idempotency_key: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetOrder {
    pub id: String,
    #[serde(default)]
    pub min_revision: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListOrders {
    pub user_id: String,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelOrder {
    pub id: String,
}

/// `order.redrive`: run the order's current saga step again (an operator's
/// replay of a dead-lettered saga event, `shop dlq replay`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveOrder {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPage {
    pub items: Vec<Order>,
    pub next_cursor: Option<String>,
}

// ---- events -----------------------------------------------------------------

/// A change of one order; carries the order as it is after the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub order: Order,
}

/// The type of the event that asks the saga to run an order's current step
/// again; the order in it is unchanged but for `updated_at_ms`.
pub const REDRIVEN: &str = "order.redriven";

impl OrderEvent {
    /// The event recording `order` as it is now; its type follows the status.
    pub fn new(order: Order) -> Self {
        Self {
            kind: event_type(order.status).to_string(),
            order,
        }
    }

    /// The event that re-drives `order`'s saga from its current status.
    pub fn redriven(order: Order) -> Self {
        Self {
            kind: REDRIVEN.to_string(),
            order,
        }
    }
}

impl shop_actors::Event for OrderEvent {
    fn type_name(&self) -> &'static str {
        match self.kind.as_str() {
            REDRIVEN => REDRIVEN,
            _ => event_type(self.order.status),
        }
    }
}

/// The event type recording an order's move to `status`.
pub fn event_type(status: Status) -> &'static str {
    match status {
        Status::Pending => "order.created",
        Status::StockReserved => "order.stock_reserved",
        Status::Paid => "order.paid",
        Status::Confirmed => "order.confirmed",
        Status::Cancelling => "order.cancelling",
        Status::Cancelled => "order.cancelled",
    }
}

// ---- validation -------------------------------------------------------------

/// Ids become subject tokens and store keys.
pub use shop_nats::subject::validate_token as validate_id;

/// Checks a create request before any other service is asked anything.
pub fn validate_create(request: &CreateOrder) -> Result<(), ServiceError> {
    validate_id("user_id", &request.user_id)?;
    if request.items.is_empty() || request.items.len() > MAX_LINES {
        return Err(ServiceError::bad_request(format!(
            "items must have 1 to {MAX_LINES} lines"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for line in &request.items {
        validate_id("product_id", &line.product_id)?;
        if !seen.insert(&line.product_id) {
            return Err(ServiceError::bad_request(format!(
                "product {} appears on two lines; use one line with the total quantity",
                line.product_id
            )));
        }
        if line.quantity <= 0 || line.quantity > MAX_QUANTITY {
            return Err(ServiceError::bad_request(format!(
                "quantity must be from 1 to {MAX_QUANTITY}, got {}",
                line.quantity
            )));
        }
    }
    if request.payment_token.is_empty() || request.payment_token.len() > 200 {
        return Err(ServiceError::bad_request(
            "payment_token must be 1-200 characters",
        ));
    }
    if request.idempotency_key.is_empty() || request.idempotency_key.len() > 200 {
        return Err(ServiceError::bad_request(
            "idempotency_key must be 1-200 characters",
        ));
    }
    Ok(())
}

/// A product as the order needs it: its price and currency at creation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PricedProduct {
    pub id: String,
    pub price_cents: i64,
    pub currency: String,
}

/// Builds the pending order from the request and the products' current prices.
pub fn price_order(
    id: String,
    request: &CreateOrder,
    products: &[PricedProduct],
    now_ms: u64,
) -> Result<Order, ServiceError> {
    let mut items = Vec::with_capacity(request.items.len());
    let mut total: i64 = 0;
    let mut currency: Option<&str> = None;
    for line in &request.items {
        let product = products
            .iter()
            .find(|p| p.id == line.product_id)
            .ok_or_else(|| {
                ServiceError::bad_request(format!("product {} does not exist", line.product_id))
            })?;
        match currency {
            None => currency = Some(&product.currency),
            Some(c) if c != product.currency => {
                return Err(ServiceError::bad_request(format!(
                    "all lines of an order must share one currency: {} is in {}, not {c}",
                    product.id, product.currency
                )))
            }
            Some(_) => {}
        }
        let line_total = product
            .price_cents
            .checked_mul(line.quantity)
            .ok_or_else(|| ServiceError::bad_request("order total too large"))?;
        total = total
            .checked_add(line_total)
            .ok_or_else(|| ServiceError::bad_request("order total too large"))?;
        items.push(Line {
            product_id: line.product_id.clone(),
            quantity: line.quantity,
            price_cents: product.price_cents,
        });
    }
    Ok(Order {
        id,
        user_id: request.user_id.clone(),
        items,
        total_cents: total,
        currency: currency.unwrap_or_default().to_string(),
        status: Status::Pending,
        reason: None,
        payment_id: None,
        cancelled_from: None,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        revision: 0,
    })
}

// ---- the state machine ----------------------------------------------------------

/// Is `from → to` one of the arrows of the diagram above?
pub fn can_move(from: Status, to: Status) -> bool {
    use Status::*;
    matches!(
        (from, to),
        (Pending, StockReserved)
            | (StockReserved, Paid)
            | (Paid, Confirmed)
            // The charge step records `confirmed` with the capture at once;
            // `paid` is only read on orders recorded by earlier versions.
            | (StockReserved, Confirmed)
            // The reserve step goes straight on to the charge: `stock_reserved`
            // is only read on orders recorded by earlier versions.
            | (Pending, Confirmed)
            | (Pending | StockReserved | Paid | Confirmed, Cancelling)
            | (Cancelling, Cancelled)
    )
}

/// The order after moving to `to`, or a 409 when the state machine forbids it.
pub fn advance(order: &Order, to: Status, now_ms: u64) -> Result<Order, ServiceError> {
    if !can_move(order.status, to) {
        return Err(ServiceError::conflict(format!(
            "order {} is {:?}; it cannot become {:?}",
            order.id, order.status, to
        )));
    }
    let mut next = order.clone();
    next.status = to;
    next.updated_at_ms = now_ms;
    Ok(next)
}

/// Starts compensation with `reason`, remembering the status it starts from.
pub fn start_cancelling(order: &Order, reason: &str, now_ms: u64) -> Result<Order, ServiceError> {
    let mut next = advance(order, Status::Cancelling, now_ms)?;
    next.reason = Some(reason.to_string());
    next.cancelled_from = Some(order.status);
    Ok(next)
}

/// What a user's cancel request does: confirmed (or in-flight) orders are
/// compensated; a cancelled one stays cancelled (idempotent).
pub fn decide_cancel(order: &Order, now_ms: u64) -> Result<Option<Order>, ServiceError> {
    match order.status {
        Status::Cancelling | Status::Cancelled => Ok(None),
        _ => start_cancelling(order, reason::CANCELLED_BY_USER, now_ms).map(Some),
    }
}

/// The saga's next step for an order in `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Reserve every line, then charge and record `confirmed` with the capture.
    ReserveAndCharge,
    /// Charge and record `confirmed` (orders an earlier version left at `stock_reserved`).
    Charge,
    Confirm,
    /// Refund (when a payment was captured) and release every line, then `cancelled`.
    Compensate,
    Done,
}

pub fn next_step(order: &Order) -> Step {
    match order.status {
        Status::Pending => Step::ReserveAndCharge,
        Status::StockReserved => Step::Charge,
        Status::Paid => Step::Confirm,
        Status::Cancelling => Step::Compensate,
        Status::Confirmed | Status::Cancelled => Step::Done,
    }
}

/// How compensation finds the money to give back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentCheck {
    /// The order's charge was declined: a final outcome for its key, nothing
    /// was captured.
    Nothing,
    /// The order recorded this captured payment: refund it.
    Refund(String),
    /// The order has no capture recorded: its charge may have been captured
    /// without being recorded, may still be on its way (another instance is
    /// charging right now), or may never have been sent. `payment.void` with
    /// the order's key settles it: the payment service answers the outcome the
    /// key already has, or the provider's (a charge in flight and the void
    /// meet there one after the other), which is `voided` when nothing was
    /// charged; after that answer no charge can land under the key. Then
    /// refund what it answered as captured.
    Void,
}

/// What compensation does about payment for a `cancelling` order. The
/// revision check on every append makes the order's fields what they really
/// were when the cancellation was recorded; only a recorded capture or a
/// declined charge tell for certain what the key holds.
pub fn payment_check(order: &Order) -> PaymentCheck {
    if let Some(payment_id) = &order.payment_id {
        return PaymentCheck::Refund(payment_id.clone());
    }
    if order.reason.as_deref() == Some(reason::PAYMENT_DECLINED) {
        // Declined is only recorded by the charge step on a declined reply.
        return PaymentCheck::Nothing;
    }
    PaymentCheck::Void
}

/// Whether the capture `payment_id` is one `order` (as recorded now) will
/// never record: the order is cancelling or cancelled without it, so the
/// charge step that captured it refunds it. (An order still at `pending`
/// or `stock_reserved`, re-driven meanwhile, records the same capture in its
/// next charge step: the key is the same.)
pub fn capture_orphaned(order: &Order, payment_id: &str) -> bool {
    matches!(order.status, Status::Cancelling | Status::Cancelled)
        && order.payment_id.as_deref() != Some(payment_id)
}

/// What `order.redrive` records: the order unchanged but for its update time,
/// so the saga runs its current step again; nothing when its saga has ended.
pub fn decide_redrive(
    order: Option<&Order>,
    id: &str,
    now_ms: u64,
) -> Result<Option<Order>, ServiceError> {
    let order = order.ok_or_else(|| not_found(id))?;
    if order.status.is_final() {
        return Ok(None);
    }
    let mut next = order.clone();
    next.updated_at_ms = now_ms;
    Ok(Some(next))
}

/// Whether a `cancelling` order's compensation has been failing for at least
/// `threshold_ms` (counted from when the cancellation, or its re-drive, was recorded).
pub fn compensation_stalled(order: &Order, now_ms: u64, threshold_ms: u64) -> bool {
    order.status == Status::Cancelling && now_ms.saturating_sub(order.updated_at_ms) >= threshold_ms
}

/// Whether a non-final order has been stuck past its deadline.
pub fn is_overdue(order: &Order, now_ms: u64, deadline_ms: u64) -> bool {
    !order.status.is_final()
        && order.status != Status::Cancelling
        && now_ms.saturating_sub(order.created_at_ms) > deadline_ms
}

// ---- who may do what ------------------------------------------------------------

/// Whether `caller` (the user a verified token proves) may see or cancel
/// `order`: its owner or an admin.
pub fn may_access(caller: &Caller, order: &Order) -> bool {
    caller.may_act_for(&order.user_id)
}

/// `order` if `caller` may see it; otherwise the same 404 as an unknown id, so
/// nobody learns which ids belong to other users.
pub fn visible_to(caller: &Caller, order: Order) -> Result<Order, ServiceError> {
    if may_access(caller, &order) {
        Ok(order)
    } else {
        Err(not_found(&order.id))
    }
}

/// The 404 of an order that does not exist, or that the caller may not see.
pub fn not_found(id: &str) -> ServiceError {
    ServiceError::not_found(format!("order {id} not found"))
}

/// A caller places orders only for themselves (admins too: the order is paid
/// with the caller's payment token).
pub fn check_create(caller: &Caller, user_id: &str) -> Result<(), ServiceError> {
    if caller.user_id != user_id {
        return Err(ServiceError::forbidden(
            "an order can only be placed for the calling user",
        ));
    }
    Ok(())
}

/// A caller lists only their own orders; an admin anyone's.
pub fn check_list(caller: &Caller, user_id: &str) -> Result<(), ServiceError> {
    if !caller.may_act_for(user_id) {
        return Err(ServiceError::forbidden(
            "only your own orders can be listed",
        ));
    }
    Ok(())
}

pub fn page_limit(limit: Option<u32>) -> Result<usize, ServiceError> {
    match limit {
        None => Ok(20),
        Some(l) if (1..=100).contains(&l) => Ok(l as usize),
        Some(l) => Err(ServiceError::bad_request(format!(
            "limit must be from 1 to 100, got {l}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(lines: &[(&str, i64)]) -> CreateOrder {
        CreateOrder {
            user_id: "u1".into(),
            items: lines
                .iter()
                .map(|(p, q)| CreateLine {
                    product_id: p.to_string(),
                    quantity: *q,
                })
                .collect(),
            payment_token: "tok_ok".into(),
            idempotency_key: "k1".into(),
        }
    }

    fn product(id: &str, price: i64, currency: &str) -> PricedProduct {
        PricedProduct {
            id: id.into(),
            price_cents: price,
            currency: currency.into(),
        }
    }

    fn order(status: Status) -> Order {
        let mut o = price_order(
            "o1".into(),
            &request(&[("a", 2)]),
            &[product("a", 500, "USD")],
            1_000,
        )
        .unwrap();
        o.status = status;
        o
    }

    #[test]
    fn only_the_owner_or_an_admin_reaches_an_order() {
        let o = order(Status::Confirmed);
        let owner = Caller {
            user_id: "u1".into(),
            roles: vec!["customer".into()],
        };
        let other = Caller {
            user_id: "u2".into(),
            roles: vec!["customer".into()],
        };
        let admin = Caller {
            user_id: "a1".into(),
            roles: vec!["customer".into(), "admin".into()],
        };
        assert!(may_access(&owner, &o));
        assert!(may_access(&admin, &o));
        assert!(!may_access(&other, &o));
        let hidden = visible_to(&other, o.clone()).unwrap_err();
        assert_eq!(hidden.code, 404);
        assert_eq!(hidden.message, "order o1 not found");
        assert_eq!(visible_to(&owner, o.clone()), Ok(o));

        assert!(check_create(&owner, "u1").is_ok());
        assert_eq!(check_create(&other, "u1").unwrap_err().code, 403);
        assert_eq!(check_create(&admin, "u1").unwrap_err().code, 403);

        assert!(check_list(&owner, "u1").is_ok());
        assert!(check_list(&admin, "u1").is_ok());
        assert_eq!(check_list(&other, "u1").unwrap_err().code, 403);
    }

    #[test]
    fn prices_are_fixed_and_totals_exact() {
        let o = price_order(
            "o1".into(),
            &request(&[("a", 2), ("b", 3)]),
            &[product("a", 500, "USD"), product("b", 199, "USD")],
            7,
        )
        .unwrap();
        assert_eq!(o.total_cents, 2 * 500 + 3 * 199);
        assert_eq!(o.currency, "USD");
        assert_eq!(o.status, Status::Pending);
        assert_eq!(o.items[1].price_cents, 199);
    }

    #[test]
    fn one_currency_per_order() {
        let err = price_order(
            "o1".into(),
            &request(&[("a", 1), ("b", 1)]),
            &[product("a", 1, "USD"), product("b", 1, "EUR")],
            0,
        )
        .unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.message.contains("one currency"));
    }

    #[test]
    fn create_validation() {
        assert!(validate_create(&request(&[("a", 1)])).is_ok());
        for (req, needle) in [
            (request(&[]), "items"),
            (request(&[("a", 0)]), "quantity"),
            (request(&[("a", -1)]), "quantity"),
            (request(&[("a", 1), ("a", 2)]), "two lines"),
            (request(&[("bad id", 1)]), "product_id"),
            (
                CreateOrder {
                    payment_token: String::new(),
                    ..request(&[("a", 1)])
                },
                "payment_token",
            ),
            (
                CreateOrder {
                    user_id: "x.y".into(),
                    ..request(&[("a", 1)])
                },
                "user_id",
            ),
        ] {
            let err = validate_create(&req).unwrap_err();
            assert_eq!(err.code, 400);
            assert!(
                err.message.contains(needle),
                "{} lacks {needle}",
                err.message
            );
        }
    }

    #[test]
    fn status_only_moves_forward() {
        use Status::*;
        let all = [
            Pending,
            StockReserved,
            Paid,
            Confirmed,
            Cancelling,
            Cancelled,
        ];
        let allowed = [
            (Pending, StockReserved),
            (StockReserved, Paid),
            (Paid, Confirmed),
            (StockReserved, Confirmed),
            (Pending, Confirmed),
            (Pending, Cancelling),
            (StockReserved, Cancelling),
            (Paid, Cancelling),
            (Confirmed, Cancelling),
            (Cancelling, Cancelled),
        ];
        for from in all {
            for to in all {
                assert_eq!(
                    can_move(from, to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
        assert_eq!(advance(&order(Confirmed), Paid, 0).unwrap_err().code, 409);
        assert_eq!(
            advance(&order(Cancelled), Cancelling, 0).unwrap_err().code,
            409
        );
    }

    #[test]
    fn steps_follow_status() {
        assert_eq!(next_step(&order(Status::Pending)), Step::ReserveAndCharge);
        assert_eq!(next_step(&order(Status::StockReserved)), Step::Charge);
        assert_eq!(next_step(&order(Status::Paid)), Step::Confirm);
        assert_eq!(next_step(&order(Status::Cancelling)), Step::Compensate);
        assert_eq!(next_step(&order(Status::Confirmed)), Step::Done);
        assert_eq!(next_step(&order(Status::Cancelled)), Step::Done);
    }

    #[test]
    fn cancel_is_idempotent_and_keeps_reason() {
        let cancelling = decide_cancel(&order(Status::Confirmed), 5)
            .unwrap()
            .unwrap();
        assert_eq!(cancelling.status, Status::Cancelling);
        assert_eq!(
            cancelling.reason.as_deref(),
            Some(reason::CANCELLED_BY_USER)
        );
        assert_eq!(decide_cancel(&cancelling, 6).unwrap(), None);
        assert_eq!(decide_cancel(&order(Status::Cancelled), 6).unwrap(), None);
    }

    #[test]
    fn overdue_orders() {
        let o = order(Status::StockReserved);
        assert!(!is_overdue(&o, 1_000 + 500, 1_000));
        assert!(is_overdue(&o, 1_000 + 1_001, 1_000));
        assert!(!is_overdue(&order(Status::Confirmed), u64::MAX, 1_000));
        assert!(
            !is_overdue(&order(Status::Cancelling), u64::MAX, 1_000),
            "already compensating"
        );
    }

    fn cancelling(from: Status, why: &str) -> Order {
        start_cancelling(&order(from), why, 9).unwrap()
    }

    #[test]
    fn cancelling_remembers_where_it_started() {
        for from in [
            Status::Pending,
            Status::StockReserved,
            Status::Paid,
            Status::Confirmed,
        ] {
            let o = cancelling(from, reason::CANCELLED_BY_USER);
            assert_eq!(o.cancelled_from, Some(from));
            let json = serde_json::to_value(&o).unwrap();
            assert_eq!(json["cancelled_from"], serde_json::to_value(from).unwrap());
        }
        let fresh = serde_json::to_value(order(Status::Pending)).unwrap();
        assert!(
            fresh.get("cancelled_from").is_none(),
            "absent until cancelling"
        );
        let old: Order = serde_json::from_value(fresh).unwrap();
        assert_eq!(
            old.cancelled_from, None,
            "orders stored before it read back"
        );
    }

    #[test]
    fn compensation_voids_any_charge_that_may_exist() {
        use PaymentCheck::*;
        let by_user = reason::CANCELLED_BY_USER;
        for (from, why) in [
            (Status::Pending, by_user),
            (Status::Pending, reason::OUT_OF_STOCK),
            (Status::Pending, reason::TIMED_OUT),
            (Status::StockReserved, by_user),
            (Status::StockReserved, reason::TIMED_OUT),
            (Status::StockReserved, reason::PAYMENT_FAILED),
        ] {
            assert_eq!(
                payment_check(&cancelling(from, why)),
                Void,
                "{from:?} {why}: a charge may be captured, or on its way"
            );
        }
        for from in [Status::Pending, Status::StockReserved] {
            assert_eq!(
                payment_check(&cancelling(from, reason::PAYMENT_DECLINED)),
                Nothing,
                "a declined charge is final"
            );
        }
        let mut paid = order(Status::Paid);
        paid.payment_id = Some("p1".into());
        for from in [paid.clone(), {
            let mut c = paid.clone();
            c.status = Status::Confirmed;
            c
        }] {
            let o = start_cancelling(&from, by_user, 9).unwrap();
            assert_eq!(payment_check(&o), Refund("p1".into()));
        }
        // Cancelled before `cancelled_from` was recorded.
        let mut legacy = cancelling(Status::StockReserved, by_user);
        legacy.cancelled_from = None;
        assert_eq!(payment_check(&legacy), Void);
        legacy.reason = Some(reason::PAYMENT_DECLINED.into());
        assert_eq!(payment_check(&legacy), Nothing);
    }

    #[test]
    fn a_capture_the_order_will_never_record_is_orphaned() {
        let cancelled = cancelling(Status::StockReserved, reason::CANCELLED_BY_USER);
        assert!(capture_orphaned(&cancelled, "p1"));
        let mut done = advance(&cancelled, Status::Cancelled, 10).unwrap();
        assert!(capture_orphaned(&done, "p1"));
        done.payment_id = Some("p1".into());
        assert!(
            !capture_orphaned(&done, "p1"),
            "recorded: compensation refunds it"
        );
        let mut paid = order(Status::Paid);
        paid.payment_id = Some("p1".into());
        assert!(!capture_orphaned(&paid, "p1"), "recorded");
        assert!(
            !capture_orphaned(&order(Status::StockReserved), "p1"),
            "re-driven: its next charge step records the same capture"
        );
    }

    #[test]
    fn redrive_runs_an_unfinished_saga_again() {
        let o = cancelling(Status::Confirmed, reason::CANCELLED_BY_USER);
        let again = decide_redrive(Some(&o), "o1", 77).unwrap().unwrap();
        assert_eq!(again.updated_at_ms, 77);
        assert_eq!(
            Order {
                updated_at_ms: o.updated_at_ms,
                ..again.clone()
            },
            o,
            "nothing else changes"
        );
        assert_eq!(next_step(&again), Step::Compensate);
        let event = OrderEvent::redriven(again);
        assert_eq!(event.kind, REDRIVEN);
        assert_eq!(shop_actors::Event::type_name(&event), REDRIVEN);
        assert_eq!(
            shop_actors::Event::type_name(&OrderEvent::new(o.clone())),
            "order.cancelling"
        );
        assert_eq!(
            decide_redrive(Some(&order(Status::StockReserved)), "o1", 1)
                .unwrap()
                .map(|o| o.status),
            Some(Status::StockReserved)
        );
        for done in [Status::Cancelled, Status::Confirmed] {
            assert_eq!(decide_redrive(Some(&order(done)), "o1", 1).unwrap(), None);
        }
        assert_eq!(decide_redrive(None, "o9", 1).unwrap_err().code, 404);
    }

    #[test]
    fn stalled_compensation() {
        let o = cancelling(Status::Paid, reason::CANCELLED_BY_USER); // updated at 9
        assert!(!compensation_stalled(&o, 9 + 29_999, 30_000));
        assert!(compensation_stalled(&o, 9 + 30_000, 30_000));
        assert!(!compensation_stalled(
            &order(Status::Paid),
            u64::MAX,
            30_000
        ));
    }

    #[test]
    fn derived_keys_are_stable() {
        let o = order(Status::Pending);
        assert_eq!(o.reservation_id(1), "order-o1:line-1");
        assert_eq!(o.charge_key(), "order-o1:charge");
    }
}
