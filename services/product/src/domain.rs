//! Products, their requests and events, and every rule about them, as plain
//! functions: what is valid, and what a request turns into given current state.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use shop_nats::ServiceError;

pub const MAX_NAME_LEN: usize = 200;
pub const MAX_DESCRIPTION_LEN: usize = 5_000;
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000_000;
pub const MAX_QUANTITY: i64 = 1_000_000;
pub const MAX_STOCK: i64 = 1_000_000_000;
pub const DEFAULT_PAGE: u32 = 20;
pub const MAX_PAGE: u32 = 100;

/// A product as every reply shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Price in minor units of `currency` (cents for USD); always > 0.
    pub price_cents: i64,
    /// ISO 4217 code, upper case.
    pub currency: String,
    /// Units available to reserve; never negative.
    pub stock: i64,
    /// Stream sequence of the product's last change.
    pub revision: u64,
}

/// A reservation of stock, as the store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub quantity: i64,
    pub status: ReservationStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    Reserved,
    /// Released (or cancelled before it was ever made): it can never reserve again.
    Released,
}

// ---- requests ---------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub price_cents: i64,
    pub currency: String,
    pub stock: i64,
    /// Makes a retried create return the first one's product instead of a second product.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetProduct {
    pub id: String,
    /// Answer only from state that includes this revision (waits briefly for it).
    #[serde(default)]
    pub min_revision: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub price_cents: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub stock: Option<i64>,
    /// Fail with 409 unless the product is still at this revision.
    #[serde(default)]
    pub expected_revision: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListProducts {
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `product.stock.reserve` and `product.stock.release`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StockChange {
    pub product_id: String,
    pub quantity: i64,
    /// The caller's id for this reservation; repeating a request with it has no further effect.
    pub reservation_id: String,
}

// ---- replies ----------------------------------------------------------------

/// A `product.list` reply.
pub type ProductPage = shop_actors::page::Page<Product>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReply {
    pub product_id: String,
    pub reservation_id: String,
    pub quantity: i64,
    pub status: ReservationStatus,
    /// Units left available after this change.
    pub stock: i64,
    pub revision: u64,
}

// ---- events -----------------------------------------------------------------

/// A change to one product, as stored in the stream. Each event carries the
/// product as it is after the change (its `revision` is the one it replaced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ProductEvent {
    #[serde(rename = "product.created")]
    Created { product: Product },
    #[serde(rename = "product.updated")]
    Updated { product: Product },
    #[serde(rename = "product.stock_reserved")]
    StockReserved {
        product: Product,
        reservation_id: String,
        quantity: i64,
    },
    #[serde(rename = "product.stock_released")]
    StockReleased {
        product: Product,
        reservation_id: String,
        quantity: i64,
    },
    /// Several reservations decided together (group commit), in order.
    #[serde(rename = "product.stock_changed")]
    StockChanged {
        product: Product,
        reservations: Vec<ReservationChange>,
    },
}

/// One reservation of a `product.stock_changed` event, as it is after the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationChange {
    pub reservation_id: String,
    pub quantity: i64,
    pub status: ReservationStatus,
}

impl ProductEvent {
    pub fn product(&self) -> &Product {
        match self {
            ProductEvent::Created { product }
            | ProductEvent::Updated { product }
            | ProductEvent::StockReserved { product, .. }
            | ProductEvent::StockReleased { product, .. }
            | ProductEvent::StockChanged { product, .. } => product,
        }
    }

    /// The reservations this event records, in order (a later one of the same
    /// id supersedes an earlier one).
    pub fn reservations(&self) -> Vec<(&str, Reservation)> {
        match self {
            ProductEvent::StockChanged { reservations, .. } => reservations
                .iter()
                .map(|r| {
                    (
                        r.reservation_id.as_str(),
                        Reservation {
                            quantity: r.quantity,
                            status: r.status,
                        },
                    )
                })
                .collect(),
            _ => self.reservation().into_iter().collect(),
        }
    }

    /// The reservation a single-change event records, if any.
    fn reservation(&self) -> Option<(&str, Reservation)> {
        match self {
            ProductEvent::StockReserved {
                reservation_id,
                quantity,
                ..
            } => Some((
                reservation_id,
                Reservation {
                    quantity: *quantity,
                    status: ReservationStatus::Reserved,
                },
            )),
            ProductEvent::StockReleased {
                reservation_id,
                quantity,
                ..
            } => Some((
                reservation_id,
                Reservation {
                    quantity: *quantity,
                    status: ReservationStatus::Released,
                },
            )),
            _ => None,
        }
    }
}

impl shop_actors::Event for ProductEvent {
    fn type_name(&self) -> &'static str {
        match self {
            ProductEvent::Created { .. } => "product.created",
            ProductEvent::Updated { .. } => "product.updated",
            ProductEvent::StockReserved { .. } => "product.stock_reserved",
            ProductEvent::StockReleased { .. } => "product.stock_released",
            ProductEvent::StockChanged { .. } => "product.stock_changed",
        }
    }
}

/// What a write request decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Append this event.
    Append(ProductEvent),
    /// Nothing to write: the request was already applied; answer from current state.
    AlreadyDone,
}

// ---- validation -------------------------------------------------------------

/// Ids become subject tokens and store keys.
pub use shop_nats::subject::validate_token as validate_id;

/// Reservation ids are the caller's: 1-128 of `A-Z a-z 0-9 - _ . :`.
pub fn validate_reservation_id(id: &str) -> Result<(), ServiceError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(ServiceError::bad_request(
            "reservation_id must be 1-128 characters of letters, digits, '-', '_', '.' or ':'",
        ));
    }
    Ok(())
}

fn validate_name(name: &str) -> Result<String, ServiceError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ServiceError::bad_request("name must not be empty"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(ServiceError::bad_request(format!(
            "name must be at most {MAX_NAME_LEN} characters"
        )));
    }
    Ok(name.to_string())
}

fn validate_description(description: &str) -> Result<String, ServiceError> {
    if description.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(ServiceError::bad_request(format!(
            "description must be at most {MAX_DESCRIPTION_LEN} characters"
        )));
    }
    Ok(description.to_string())
}

fn validate_price(price_cents: i64) -> Result<i64, ServiceError> {
    if price_cents <= 0 || price_cents > MAX_PRICE_CENTS {
        return Err(ServiceError::bad_request(format!(
            "price_cents must be an integer from 1 to {MAX_PRICE_CENTS}, got {price_cents}"
        )));
    }
    Ok(price_cents)
}

fn validate_stock(stock: i64) -> Result<i64, ServiceError> {
    if !(0..=MAX_STOCK).contains(&stock) {
        return Err(ServiceError::bad_request(format!(
            "stock must be an integer from 0 to {MAX_STOCK}, got {stock}"
        )));
    }
    Ok(stock)
}

pub use shop_nats::money::validate_currency;

fn validate_quantity(quantity: i64) -> Result<(), ServiceError> {
    if quantity <= 0 || quantity > MAX_QUANTITY {
        return Err(ServiceError::bad_request(format!(
            "quantity must be an integer from 1 to {MAX_QUANTITY}, got {quantity}"
        )));
    }
    Ok(())
}

/// Checks a create request; `new_id` supplies the id when the request has none.
pub fn validate_create(
    request: &CreateProduct,
    new_id: impl FnOnce() -> String,
) -> Result<Product, ServiceError> {
    let id = match &request.id {
        Some(id) => {
            validate_id("id", id)?;
            id.clone()
        }
        None => new_id(),
    };
    if let Some(key) = &request.idempotency_key {
        if key.is_empty() || key.len() > 200 {
            return Err(ServiceError::bad_request(
                "idempotency_key must be 1-200 characters",
            ));
        }
    }
    Ok(Product {
        id,
        name: validate_name(&request.name)?,
        description: validate_description(request.description.as_deref().unwrap_or_default())?,
        price_cents: validate_price(request.price_cents)?,
        currency: validate_currency(&request.currency)?,
        stock: validate_stock(request.stock)?,
        revision: 0,
    })
}

/// A create against what exists under the same id.
pub fn decide_create(
    existing: Option<&Product>,
    product: Product,
    idempotent: bool,
) -> Result<Decision, ServiceError> {
    match existing {
        None => Ok(Decision::Append(ProductEvent::Created { product })),
        Some(_) if idempotent => Ok(Decision::AlreadyDone),
        Some(existing) => Err(ServiceError::conflict(format!(
            "product {} already exists",
            existing.id
        ))),
    }
}

/// Checks an update request on its own, before any state is read.
pub fn validate_update(request: &UpdateProduct) -> Result<(), ServiceError> {
    validate_id("id", &request.id)?;
    let UpdateProduct {
        name,
        description,
        price_cents,
        currency,
        stock,
        ..
    } = request;
    if name.is_none()
        && description.is_none()
        && price_cents.is_none()
        && currency.is_none()
        && stock.is_none()
    {
        return Err(ServiceError::bad_request(
            "nothing to update: give at least one of name, description, price_cents, currency, stock",
        ));
    }
    Ok(())
}

/// A partial update of `current`.
pub fn decide_update(
    current: Option<&Product>,
    request: &UpdateProduct,
) -> Result<Decision, ServiceError> {
    let current = current.ok_or_else(|| not_found(&request.id))?;
    shop_actors::eventlog::check_expected_revision(
        "product",
        &current.id,
        current.revision,
        request.expected_revision,
    )?;
    let mut product = current.clone();
    if let Some(name) = &request.name {
        product.name = validate_name(name)?;
    }
    if let Some(description) = &request.description {
        product.description = validate_description(description)?;
    }
    if let Some(price) = request.price_cents {
        product.price_cents = validate_price(price)?;
    }
    if let Some(currency) = &request.currency {
        product.currency = validate_currency(currency)?;
    }
    if let Some(stock) = request.stock {
        product.stock = validate_stock(stock)?;
    }
    if product == *current {
        return Ok(Decision::AlreadyDone);
    }
    Ok(Decision::Append(ProductEvent::Updated { product }))
}

/// Checks a reserve or release request on its own.
pub fn validate_stock_change(request: &StockChange) -> Result<(), ServiceError> {
    validate_id("product_id", &request.product_id)?;
    validate_reservation_id(&request.reservation_id)?;
    validate_quantity(request.quantity)
}

/// Reserving stock: never below zero, once per reservation id.
pub fn decide_reserve(
    product: Option<&Product>,
    reservation: Option<Reservation>,
    request: &StockChange,
) -> Result<Decision, ServiceError> {
    let product = product.ok_or_else(|| not_found(&request.product_id))?;
    match reservation {
        Some(Reservation {
            status: ReservationStatus::Reserved,
            quantity,
        }) if quantity == request.quantity => return Ok(Decision::AlreadyDone),
        Some(Reservation {
            status: ReservationStatus::Reserved,
            quantity,
        }) => {
            return Err(ServiceError::conflict(format!(
                "reservation {} already holds {quantity} units of {}, not {}",
                request.reservation_id, product.id, request.quantity
            )))
        }
        Some(Reservation {
            status: ReservationStatus::Released,
            ..
        }) => {
            return Err(ServiceError::conflict(format!(
                "reservation {} was released and cannot be reserved again",
                request.reservation_id
            )))
        }
        None => {}
    }
    if product.stock < request.quantity {
        return Err(ServiceError::conflict(format!(
            "insufficient stock for {}: {} available, {} requested",
            product.id, product.stock, request.quantity
        )));
    }
    let mut after = product.clone();
    after.stock -= request.quantity;
    Ok(Decision::Append(ProductEvent::StockReserved {
        product: after,
        reservation_id: request.reservation_id.clone(),
        quantity: request.quantity,
    }))
}

/// Releasing a reservation: returns its units once. Releasing an id that was
/// never reserved records it as released (quantity 0), so a reserve arriving
/// late for it is refused instead of holding stock that nobody will release.
pub fn decide_release(
    product: Option<&Product>,
    reservation: Option<Reservation>,
    request: &StockChange,
) -> Result<Decision, ServiceError> {
    let product = product.ok_or_else(|| not_found(&request.product_id))?;
    let quantity = match reservation {
        Some(Reservation {
            status: ReservationStatus::Released,
            ..
        }) => return Ok(Decision::AlreadyDone),
        Some(Reservation {
            status: ReservationStatus::Reserved,
            quantity,
        }) if quantity != request.quantity => {
            return Err(ServiceError::conflict(format!(
                "reservation {} holds {quantity} units, not {}",
                request.reservation_id, request.quantity
            )))
        }
        Some(Reservation { quantity, .. }) => quantity,
        None => 0,
    };
    let mut after = product.clone();
    after.stock += quantity;
    Ok(Decision::Append(ProductEvent::StockReleased {
        product: after,
        reservation_id: request.reservation_id.clone(),
        quantity,
    }))
}

/// Which way a stock change goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockOp {
    Reserve,
    Release,
}

/// What a group of stock changes comes to: the event to append (if any) and
/// each request's reply or refusal, in order.
pub type StockGroup = (Option<ProductEvent>, Vec<Result<StockReply, ServiceError>>);

/// A group of stock changes to one product, decided in order (group commit):
/// the one event recording every change that happened, and each request's
/// reply (its `revision` is filled in once the event is stored). `stored`
/// reads a reservation as the store has it; earlier changes of the group
/// supersede it. One change is recorded as `stock_reserved`/`stock_released`,
/// several as one `stock_changed`.
pub fn decide_stock_group(
    product: Option<&Product>,
    mut stored: impl FnMut(&str) -> Result<Option<Reservation>, ServiceError>,
    requests: &[(StockOp, StockChange)],
) -> Result<StockGroup, ServiceError> {
    let mut current = product.cloned();
    let mut decided: std::collections::HashMap<&str, Reservation> = Default::default();
    let mut events = Vec::new();
    let mut replies = Vec::with_capacity(requests.len());
    for (op, change) in requests {
        let reservation = match decided.get(change.reservation_id.as_str()) {
            Some(r) => Some(*r),
            None => stored(&change.reservation_id)?,
        };
        let decision = match op {
            StockOp::Reserve => decide_reserve(current.as_ref(), reservation, change),
            StockOp::Release => decide_release(current.as_ref(), reservation, change),
        };
        let reply = |quantity, status, stock| StockReply {
            product_id: change.product_id.clone(),
            reservation_id: change.reservation_id.clone(),
            quantity,
            status,
            stock,
            revision: 0,
        };
        replies.push(match decision {
            Err(e) => Err(e),
            Ok(Decision::AlreadyDone) => {
                let stock = current.as_ref().map_or(0, |p| p.stock);
                let (quantity, status) = reservation
                    .map(|r| (r.quantity, r.status))
                    .unwrap_or((0, ReservationStatus::Released));
                Ok(reply(quantity, status, stock))
            }
            Ok(Decision::Append(event)) => {
                let after = event.product().clone();
                let Some((_, made)) = event.reservation() else {
                    return Err(ServiceError::internal("stock decision without reservation"));
                };
                decided.insert(&change.reservation_id, made);
                let answer = reply(made.quantity, made.status, after.stock);
                current = Some(after);
                events.push(event);
                Ok(answer)
            }
        });
    }
    let event = match (events.len(), current) {
        (0, _) | (_, None) => None,
        (1, _) => events.pop(),
        (_, Some(product)) => Some(ProductEvent::StockChanged {
            product,
            reservations: events
                .iter()
                .flat_map(|e| e.reservations())
                .map(|(id, r)| ReservationChange {
                    reservation_id: id.to_string(),
                    quantity: r.quantity,
                    status: r.status,
                })
                .collect(),
        }),
    };
    Ok((event, replies))
}

/// A page size from a list request.
pub fn page_limit(request: &ListProducts) -> Result<usize, ServiceError> {
    match request.limit {
        None => Ok(DEFAULT_PAGE as usize),
        Some(limit) if (1..=MAX_PAGE).contains(&limit) => Ok(limit as usize),
        Some(limit) => Err(ServiceError::bad_request(format!(
            "limit must be from 1 to {MAX_PAGE}, got {limit}"
        ))),
    }
}

pub fn not_found(id: &str) -> ServiceError {
    ServiceError::not_found(format!("product {id} not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(stock: i64) -> Product {
        Product {
            id: "p1".into(),
            name: "Keyboard".into(),
            description: String::new(),
            price_cents: 4999,
            currency: "USD".into(),
            stock,
            revision: 7,
        }
    }

    fn create(price: i64, stock: i64, currency: &str) -> CreateProduct {
        CreateProduct {
            id: None,
            name: " Keyboard ".into(),
            description: None,
            price_cents: price,
            currency: currency.into(),
            stock,
            idempotency_key: None,
        }
    }

    fn change(quantity: i64, reservation_id: &str) -> StockChange {
        StockChange {
            product_id: "p1".into(),
            quantity,
            reservation_id: reservation_id.into(),
        }
    }

    #[test]
    fn create_normalises_and_generates_id() {
        let p = validate_create(&create(100, 0, "usd"), || "gen".into()).unwrap();
        assert_eq!(
            (p.id.as_str(), p.name.as_str(), p.currency.as_str()),
            ("gen", "Keyboard", "USD")
        );
    }

    #[test]
    fn create_rejects_bad_values() {
        for (req, needle) in [
            (create(0, 1, "USD"), "price_cents"),
            (create(-5, 1, "USD"), "price_cents"),
            (create(100, -1, "USD"), "stock"),
            (create(100, 1, "US"), "currency"),
            (create(100, 1, "ABC"), "currency"),
            (
                CreateProduct {
                    name: "  ".into(),
                    ..create(100, 1, "USD")
                },
                "name",
            ),
            (
                CreateProduct {
                    id: Some("a.b".into()),
                    ..create(100, 1, "USD")
                },
                "id",
            ),
        ] {
            let err = validate_create(&req, || "x".into()).unwrap_err();
            assert_eq!(err.code, 400);
            assert!(
                err.message.contains(needle),
                "{} should mention {needle}",
                err.message
            );
        }
    }

    #[test]
    fn create_conflicts_unless_idempotent() {
        let existing = product(1);
        assert_eq!(
            decide_create(Some(&existing), product(1), false)
                .unwrap_err()
                .code,
            409
        );
        assert_eq!(
            decide_create(Some(&existing), product(1), true).unwrap(),
            Decision::AlreadyDone
        );
        assert!(matches!(
            decide_create(None, product(1), false).unwrap(),
            Decision::Append(ProductEvent::Created { .. })
        ));
    }

    #[test]
    fn update_is_partial_and_checks_revision() {
        let current = product(5);
        let req = UpdateProduct {
            id: "p1".into(),
            price_cents: Some(5999),
            ..Default::default()
        };
        let Decision::Append(ProductEvent::Updated { product }) =
            decide_update(Some(&current), &req).unwrap()
        else {
            panic!("expected an update")
        };
        assert_eq!(
            (product.price_cents, product.name.as_str(), product.stock),
            (5999, "Keyboard", 5)
        );
        let stale = UpdateProduct {
            expected_revision: Some(6),
            ..req.clone()
        };
        assert_eq!(decide_update(Some(&current), &stale).unwrap_err().code, 409);
        let fresh = UpdateProduct {
            expected_revision: Some(7),
            ..req.clone()
        };
        assert!(decide_update(Some(&current), &fresh).is_ok());
        assert_eq!(decide_update(None, &req).unwrap_err().code, 404);
        let same = UpdateProduct {
            id: "p1".into(),
            stock: Some(5),
            ..Default::default()
        };
        assert_eq!(
            decide_update(Some(&current), &same).unwrap(),
            Decision::AlreadyDone
        );
        assert_eq!(
            validate_update(&UpdateProduct {
                id: "p1".into(),
                ..Default::default()
            })
            .unwrap_err()
            .code,
            400
        );
        let negative = UpdateProduct {
            id: "p1".into(),
            price_cents: Some(-1),
            ..Default::default()
        };
        assert_eq!(
            decide_update(Some(&current), &negative).unwrap_err().code,
            400
        );
    }

    #[test]
    fn a_stock_group_decides_in_order_and_records_one_event() {
        let p = product(3);
        let stored = |id: &str| {
            Ok((id == "old").then_some(Reservation {
                quantity: 1,
                status: ReservationStatus::Reserved,
            }))
        };
        let group = [
            (StockOp::Reserve, change(2, "r1")),
            (StockOp::Reserve, change(2, "r2")), // only 1 left: refused
            (StockOp::Reserve, change(2, "r1")), // a repeat within the group
            (StockOp::Release, change(1, "old")),
            (StockOp::Reserve, change(2, "r3")), // 2 left after the release
        ];
        let (event, replies) = decide_stock_group(Some(&p), stored, &group).unwrap();
        let stocks: Vec<_> = replies
            .iter()
            .map(|r| r.as_ref().map(|r| r.stock).map_err(|e| e.code))
            .collect();
        assert_eq!(stocks, [Ok(1), Err(409), Ok(1), Ok(2), Ok(0)]);
        let Some(ProductEvent::StockChanged {
            product,
            reservations,
        }) = event
        else {
            panic!("expected one stock_changed event, got {event:?}")
        };
        assert_eq!((product.stock, product.revision), (0, 7));
        let recorded: Vec<_> = reservations
            .iter()
            .map(|r| (r.reservation_id.as_str(), r.quantity, r.status))
            .collect();
        assert_eq!(
            recorded,
            [
                ("r1", 2, ReservationStatus::Reserved),
                ("old", 1, ReservationStatus::Released),
                ("r3", 2, ReservationStatus::Reserved),
            ]
        );

        // One change keeps its own event type; none appends nothing.
        let (one, _) = decide_stock_group(
            Some(&p),
            |_| Ok(None),
            &[(StockOp::Reserve, change(1, "a"))],
        )
        .unwrap();
        assert!(matches!(one, Some(ProductEvent::StockReserved { .. })));
        let (none, replies) =
            decide_stock_group(None, |_| Ok(None), &[(StockOp::Reserve, change(1, "a"))]).unwrap();
        assert!(none.is_none());
        assert_eq!(replies[0].as_ref().unwrap_err().code, 404);
    }

    #[test]
    fn reserve_never_oversells_and_is_idempotent() {
        let p = product(3);
        let Decision::Append(event) = decide_reserve(Some(&p), None, &change(2, "r1")).unwrap()
        else {
            panic!("expected a reservation")
        };
        assert_eq!(event.product().stock, 1);
        assert_eq!(
            event.reservation(),
            Some((
                "r1",
                Reservation {
                    quantity: 2,
                    status: ReservationStatus::Reserved
                }
            ))
        );
        let err = decide_reserve(Some(&p), None, &change(4, "r2")).unwrap_err();
        assert_eq!(err.code, 409);
        assert!(err.message.contains("insufficient stock"));
        let held = Some(Reservation {
            quantity: 2,
            status: ReservationStatus::Reserved,
        });
        assert_eq!(
            decide_reserve(Some(&p), held, &change(2, "r1")).unwrap(),
            Decision::AlreadyDone
        );
        assert_eq!(
            decide_reserve(Some(&p), held, &change(1, "r1"))
                .unwrap_err()
                .code,
            409
        );
        let released = Some(Reservation {
            quantity: 2,
            status: ReservationStatus::Released,
        });
        assert_eq!(
            decide_reserve(Some(&p), released, &change(2, "r1"))
                .unwrap_err()
                .code,
            409
        );
        assert_eq!(
            decide_reserve(None, None, &change(1, "r1"))
                .unwrap_err()
                .code,
            404
        );
    }

    #[test]
    fn release_returns_units_once() {
        let p = product(1);
        let held = Some(Reservation {
            quantity: 2,
            status: ReservationStatus::Reserved,
        });
        let Decision::Append(event) = decide_release(Some(&p), held, &change(2, "r1")).unwrap()
        else {
            panic!("expected a release")
        };
        assert_eq!(event.product().stock, 3);
        let released = Some(Reservation {
            quantity: 2,
            status: ReservationStatus::Released,
        });
        assert_eq!(
            decide_release(Some(&p), released, &change(2, "r1")).unwrap(),
            Decision::AlreadyDone
        );
        assert_eq!(
            decide_release(Some(&p), held, &change(1, "r1"))
                .unwrap_err()
                .code,
            409
        );
        let Decision::Append(tombstone) = decide_release(Some(&p), None, &change(2, "r9")).unwrap()
        else {
            panic!("expected a tombstone")
        };
        assert_eq!(
            tombstone.product().stock,
            1,
            "releasing an unknown reservation returns nothing"
        );
        assert_eq!(
            tombstone.reservation().map(|(_, r)| r.status),
            Some(ReservationStatus::Released)
        );
    }

    #[test]
    fn stock_change_validation() {
        assert_eq!(
            validate_stock_change(&change(-1, "r1")).unwrap_err().code,
            400
        );
        assert_eq!(
            validate_stock_change(&change(0, "r1")).unwrap_err().code,
            400
        );
        assert_eq!(validate_stock_change(&change(1, "")).unwrap_err().code, 400);
        assert_eq!(
            validate_stock_change(&change(1, "has space"))
                .unwrap_err()
                .code,
            400
        );
        assert!(validate_stock_change(&change(1, "order-1:line-0")).is_ok());
    }

    #[test]
    fn page_limits() {
        assert_eq!(page_limit(&ListProducts::default()).unwrap(), 20);
        assert_eq!(
            page_limit(&ListProducts {
                limit: Some(100),
                ..Default::default()
            })
            .unwrap(),
            100
        );
        assert_eq!(
            page_limit(&ListProducts {
                limit: Some(101),
                ..Default::default()
            })
            .unwrap_err()
            .code,
            400
        );
        assert_eq!(
            page_limit(&ListProducts {
                limit: Some(0),
                ..Default::default()
            })
            .unwrap_err()
            .code,
            400
        );
    }

    #[test]
    fn events_are_tagged_json() {
        let event = ProductEvent::Created {
            product: product(1),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "product.created");
        assert_eq!(json["product"]["id"], "p1");
        assert_eq!(serde_json::from_value::<ProductEvent>(json).unwrap(), event);
    }
}
