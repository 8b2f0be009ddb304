//! What must hold after a chaos run, checked from the services' streams alone.
//!
//! [`check`] takes what the run saw from the outside (which creates were
//! acknowledged, which were retried with the same key) and every event of the
//! `ORDER`, `PRODUCT`, `PAYMENT` and `NOTIFICATION` streams, and says for each
//! invariant how many things it checked and what broke it. It is pure, so a
//! hand-made history can show that it catches each kind of violation.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

/// One stream message: its sequence and its JSON body (`Null` when it is not JSON).
#[derive(Debug, Clone)]
pub struct Event {
    pub seq: u64,
    pub body: Value,
}

impl Event {
    pub fn new(seq: u64, body: Value) -> Self {
        Self { seq, body }
    }

    fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }
}

/// A create that was sent twice with the same user and idempotency key.
#[derive(Debug, Clone, Serialize)]
pub struct Retried {
    pub key: String,
    pub first: String,
    pub second: String,
}

/// Everything the checks read.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Order ids whose `order.create` was answered with an order.
    pub acknowledged: Vec<String>,
    pub retried: Vec<Retried>,
    pub order: Vec<Event>,
    pub product: Vec<Event>,
    pub payment: Vec<Event>,
    pub notification: Vec<Event>,
}

/// How many violations of one invariant are listed (all are counted).
const LISTED: usize = 20;

/// One invariant's result.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub name: &'static str,
    /// What it was checked on (orders, products, events ...), for the summary.
    pub checked: usize,
    pub violations: usize,
    /// The first few, in words.
    pub examples: Vec<String>,
}

impl Outcome {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            checked: 0,
            violations: 0,
            examples: Vec::new(),
        }
    }

    fn violation(&mut self, what: String) {
        self.violations += 1;
        if self.examples.len() < LISTED {
            self.examples.push(what);
        }
    }

    pub fn held(&self) -> bool {
        self.violations == 0
    }
}

/// The names of the invariants, in the order [`check`] returns them.
pub const NAMES: [&str; 7] = [
    "acknowledged orders exist and are final",
    "every order is final",
    "stock conserved per product",
    "reservations held only by confirmed orders",
    "money: one capture per confirmed order, cancelled nets zero",
    "one notification per final event",
    "a retried create returns the same order",
];

/// An order as the `ORDER` stream last showed it.
#[derive(Debug, Clone)]
struct OrderState {
    status: String,
    total_cents: i64,
    /// Quantity per line, by index (0-based, as in reservation ids).
    lines: Vec<i64>,
}

fn is_final(status: &str) -> bool {
    matches!(status, "confirmed" | "cancelled")
}

/// The last state of every order in the `ORDER` stream, by id.
fn orders(history: &History) -> BTreeMap<String, OrderState> {
    let mut orders = BTreeMap::new();
    for event in &history.order {
        let order = &event.body["order"];
        let Some(id) = order["id"].as_str() else {
            continue;
        };
        let lines = order["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| i["quantity"].as_i64().unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default();
        orders.insert(
            id.to_string(),
            OrderState {
                status: order["status"].as_str().unwrap_or_default().to_string(),
                total_cents: order["total_cents"].as_i64().unwrap_or(0),
                lines,
            },
        );
    }
    orders
}

/// `order-<id>:line-<n>` → (`<id>`, `n`).
fn reservation_owner(reservation_id: &str) -> Option<(&str, usize)> {
    let rest = reservation_id.strip_prefix("order-")?;
    let (order, line) = rest.rsplit_once(":line-")?;
    Some((order, line.parse().ok()?))
}

/// Checks every invariant on `history`.
pub fn check(history: &History) -> Vec<Outcome> {
    let orders = orders(history);
    let mut out = Vec::new();

    // 1. Every acknowledged order exists and is final.
    let mut acked = Outcome::new(NAMES[0]);
    for id in &history.acknowledged {
        acked.checked += 1;
        match orders.get(id) {
            None => acked.violation(format!("order {id} was acknowledged but is not in ORDER")),
            Some(o) if !is_final(&o.status) => {
                acked.violation(format!("order {id} is still {}", o.status))
            }
            Some(_) => {}
        }
    }
    out.push(acked);

    // 2. Every order in the stream (acknowledged or not) is final.
    let mut all = Outcome::new(NAMES[1]);
    for (id, o) in &orders {
        all.checked += 1;
        if !is_final(&o.status) {
            all.violation(format!("order {id} is still {}", o.status));
        }
    }
    out.push(all);

    // 3 and 4: replay PRODUCT.
    let mut stock = Outcome::new(NAMES[2]);
    let mut held = Outcome::new(NAMES[3]);
    // Per product: stock it started with (adjusted by admin updates), last stock seen.
    let mut initial: BTreeMap<String, i64> = BTreeMap::new();
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    // Per reservation id: (product, quantity, still held).
    let mut reservations: HashMap<String, (String, i64, bool)> = HashMap::new();
    for event in &history.product {
        let product = &event.body["product"];
        let (Some(id), Some(after)) = (product["id"].as_str(), product["stock"].as_i64()) else {
            continue;
        };
        let before = last.get(id).copied();
        let quantity = event.body["quantity"].as_i64().unwrap_or(0);
        let reservation = event.body["reservation_id"].as_str().unwrap_or_default();
        match event.kind() {
            "product.created" => {
                initial.insert(id.to_string(), after);
            }
            "product.updated" => {
                *initial.entry(id.to_string()).or_default() += after - before.unwrap_or(0);
            }
            "product.stock_reserved" | "product.stock_released" | "product.stock_changed" => {
                let changes = match event.kind() {
                    "product.stock_changed" => event.body["reservations"]
                        .as_array()
                        .map(|list| {
                            list.iter()
                                .map(|r| {
                                    (
                                        r["reservation_id"].as_str().unwrap_or_default(),
                                        r["quantity"].as_i64().unwrap_or(0),
                                        r["status"].as_str() == Some("reserved"),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    kind => vec![(reservation, quantity, kind == "product.stock_reserved")],
                };
                let mut moved = 0;
                for (reservation, quantity, reserves) in changes {
                    if reserves {
                        moved -= quantity;
                        reservations
                            .insert(reservation.to_string(), (id.to_string(), quantity, true));
                        continue;
                    }
                    moved += quantity;
                    let entry = reservations
                        .entry(reservation.to_string())
                        .or_insert_with(|| (id.to_string(), 0, false));
                    if entry.2 && entry.1 != quantity {
                        stock.violation(format!(
                            "PRODUCT:{} releases {quantity} of {reservation}, which held {}",
                            event.seq, entry.1
                        ));
                    }
                    entry.2 = false;
                }
                if before.is_some_and(|b| b + moved != after) {
                    stock.violation(format!(
                        "PRODUCT:{} moves {moved} units of {id}: stock {before:?} -> {after}",
                        event.seq
                    ));
                }
            }
            _ => {}
        }
        if after < 0 {
            stock.violation(format!("PRODUCT:{}: {id} stock {after} < 0", event.seq));
        }
        last.insert(id.to_string(), after);
    }
    let mut held_by_product: BTreeMap<&str, i64> = BTreeMap::new();
    // Per confirmed order, the quantity each line holds.
    let mut held_lines: HashMap<&str, BTreeMap<usize, i64>> = HashMap::new();
    for (reservation, (product, quantity, is_held)) in &reservations {
        if !is_held {
            continue;
        }
        *held_by_product.entry(product).or_default() += quantity;
        let Some((order, line)) = reservation_owner(reservation) else {
            held.violation(format!(
                "{reservation} holds {quantity} of {product} for no order"
            ));
            continue;
        };
        match orders.get(order).map(|o| o.status.as_str()) {
            Some("confirmed") => {
                held_lines.entry(order).or_default().insert(line, *quantity);
            }
            status => held.violation(format!(
                "{reservation} holds {quantity} of {product}, its order is {}",
                status.unwrap_or("unknown")
            )),
        }
    }
    for (id, o) in &orders {
        if o.status != "confirmed" {
            continue;
        }
        held.checked += 1;
        let lines = held_lines.get(id.as_str());
        for (n, quantity) in o.lines.iter().enumerate() {
            let holds = lines.and_then(|l| l.get(&n)).copied();
            if holds != Some(*quantity) {
                held.violation(format!(
                    "confirmed order {id} line {n} wants {quantity}, holds {holds:?}"
                ));
            }
        }
    }
    for (product, start) in &initial {
        stock.checked += 1;
        let now = last.get(product).copied().unwrap_or(*start);
        let holds = held_by_product.get(product.as_str()).copied().unwrap_or(0);
        if start - holds != now {
            stock.violation(format!(
                "{product}: started {start}, reservations hold {holds}, stock is {now} (off by {})",
                start - holds - now
            ));
        }
    }
    out.push(stock);
    out.push(held);

    // 5. Money.
    let mut money = Outcome::new(NAMES[4]);
    // Per order: captures, captured cents, refunded cents.
    let mut paid: HashMap<&str, (usize, i64, i64)> = HashMap::new();
    for event in &history.payment {
        let body = &event.body;
        let order = body["payment"]["order_id"]
            .as_str()
            .or(body["order_id"].as_str())
            .unwrap_or_default();
        match event.kind() {
            "payment.captured" => {
                let entry = paid.entry(order).or_default();
                entry.0 += 1;
                entry.1 += body["payment"]["amount_cents"].as_i64().unwrap_or(0);
            }
            "payment.refunded" => {
                paid.entry(order).or_default().2 += body["refund"]["amount_cents"]
                    .as_i64()
                    .or(body["amount_cents"].as_i64())
                    .unwrap_or(0);
            }
            _ => {}
        }
    }
    for (id, o) in &orders {
        let (captures, captured, refunded) = paid.get(id.as_str()).copied().unwrap_or_default();
        if captures > 1 {
            money.violation(format!("order {id} captured {captures} times"));
        }
        match o.status.as_str() {
            "confirmed" => {
                money.checked += 1;
                if captures != 1 || captured != o.total_cents || refunded != 0 {
                    money.violation(format!(
                        "confirmed order {id} (total {}): {captures} captures of {captured}, refunded {refunded}",
                        o.total_cents
                    ));
                }
            }
            "cancelled" => {
                money.checked += 1;
                if captured != refunded {
                    money.violation(format!(
                        "cancelled order {id}: captured {captured}, refunded {refunded}"
                    ));
                }
            }
            _ => {}
        }
    }
    for order in paid.keys() {
        if !orders.contains_key(*order) {
            money.violation(format!(
                "payment for order {order:?}, which ORDER does not hold"
            ));
        }
    }
    out.push(money);

    // 6. One notification per final event.
    let mut notes = Outcome::new(NAMES[5]);
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    for event in &history.notification {
        if event.kind() != "notification.sent" {
            continue;
        }
        let n = &event.body["notification"];
        let source = n["source_event"].as_str().unwrap_or_default();
        if source.starts_with("ORDER:") {
            sent.entry(source.to_string())
                .or_default()
                .push(n["kind"].as_str().unwrap_or_default().to_string());
        }
    }
    for event in &history.order {
        let expected = match event.kind() {
            "order.confirmed" => "order_confirmed",
            "order.cancelled" => "order_cancelled",
            _ => continue,
        };
        notes.checked += 1;
        let source = format!("ORDER:{}", event.seq);
        match sent.remove(&source).as_deref() {
            Some([kind]) if kind == expected => {}
            got => notes.violation(format!(
                "{source} ({}, order {}): notifications {got:?}",
                event.kind(),
                event.body["order"]["id"].as_str().unwrap_or_default()
            )),
        }
    }
    for (source, kinds) in sent {
        notes.violation(format!(
            "{source} is not a final order event, yet notified {kinds:?}"
        ));
    }
    out.push(notes);

    // 7. Retried creates.
    let mut retried = Outcome::new(NAMES[6]);
    for r in &history.retried {
        retried.checked += 1;
        if r.first != r.second {
            retried.violation(format!(
                "key {}: first {}, retry {}",
                r.key, r.first, r.second
            ));
        }
    }
    out.push(retried);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order(seq: u64, kind: &str, id: &str, status: &str, lines: &[i64]) -> Event {
        let items: Vec<Value> = lines
            .iter()
            .map(|q| json!({"product_id": "p", "quantity": q, "price_cents": 100}))
            .collect();
        let total: i64 = lines.iter().sum::<i64>() * 100;
        Event::new(
            seq,
            json!({"type": kind, "order": {"id": id, "status": status, "items": items, "total_cents": total}}),
        )
    }

    fn product(seq: u64, kind: &str, stock: i64, reservation: &str, quantity: i64) -> Event {
        Event::new(
            seq,
            json!({"type": kind, "product": {"id": "p", "stock": stock}, "reservation_id": reservation, "quantity": quantity}),
        )
    }

    fn payment(seq: u64, kind: &str, order: &str, cents: i64) -> Event {
        Event::new(
            seq,
            json!({"type": kind, "payment": {"order_id": order, "amount_cents": cents}, "refund": {"amount_cents": cents}}),
        )
    }

    fn sent(seq: u64, source: u64, kind: &str) -> Event {
        Event::new(
            seq,
            json!({"type": "notification.sent", "notification": {"source_event": format!("ORDER:{source}"), "kind": kind}}),
        )
    }

    /// Order a (2 units) confirmed; order b (1 unit) paid, then cancelled by its user.
    fn good() -> History {
        History {
            acknowledged: vec!["a".into(), "b".into()],
            retried: vec![Retried {
                key: "k".into(),
                first: "a".into(),
                second: "a".into(),
            }],
            order: vec![
                order(1, "order.created", "a", "pending", &[2]),
                order(2, "order.created", "b", "pending", &[1]),
                order(3, "order.confirmed", "a", "confirmed", &[2]),
                order(4, "order.confirmed", "b", "confirmed", &[1]),
                order(5, "order.cancelling", "b", "cancelling", &[1]),
                order(6, "order.cancelled", "b", "cancelled", &[1]),
            ],
            product: vec![
                product(1, "product.created", 10, "", 0),
                product(2, "product.stock_reserved", 8, "order-a:line-0", 2),
                product(3, "product.stock_reserved", 7, "order-b:line-0", 1),
                product(4, "product.stock_released", 8, "order-b:line-0", 1),
                // A tombstone: released before it was ever reserved.
                product(5, "product.stock_released", 8, "order-c:line-0", 0),
            ],
            payment: vec![
                payment(1, "payment.captured", "a", 200),
                payment(2, "payment.captured", "b", 100),
                payment(3, "payment.refunded", "b", 100),
            ],
            notification: vec![
                sent(1, 3, "order_confirmed"),
                sent(2, 4, "order_confirmed"),
                sent(3, 6, "order_cancelled"),
            ],
        }
    }

    fn violated(history: &History) -> Vec<&'static str> {
        check(history)
            .into_iter()
            .filter(|o| !o.held())
            .map(|o| o.name)
            .collect()
    }

    #[test]
    fn a_clean_history_holds() {
        let outcomes = check(&good());
        assert!(outcomes.iter().all(Outcome::held), "{outcomes:#?}");
        assert_eq!(outcomes.len(), NAMES.len());
    }

    #[test]
    fn a_lost_or_unfinished_order_is_caught() {
        let mut h = good();
        h.acknowledged.push("lost".into());
        assert_eq!(violated(&h), vec![NAMES[0]]);
        let mut h = good();
        h.order.pop();
        h.notification.pop();
        // b is cancelling and holds nothing, yet is not final.
        assert_eq!(violated(&h), vec![NAMES[0], NAMES[1]]);
    }

    #[test]
    fn stock_short_or_held_by_a_cancelled_order_is_caught() {
        let mut h = good();
        // b's release is lost: b is cancelled and still holds a unit.
        h.product.remove(3);
        h.product.pop();
        assert_eq!(violated(&h), vec![NAMES[3]]);
        let mut h = good();
        // The stock moved without a reservation.
        h.product.push(product(6, "product.updated", 8, "", 0));
        h.product
            .push(product(7, "product.stock_released", 9, "", 0));
        assert_eq!(violated(&h), vec![NAMES[2]]);
    }

    /// b's reserve and release recorded together in one grouped event.
    fn grouped(stock_after: i64) -> Event {
        Event::new(
            3,
            json!({"type": "product.stock_changed", "product": {"id": "p", "stock": stock_after},
                   "reservations": [
                       {"reservation_id": "order-b:line-0", "quantity": 1, "status": "reserved"},
                       {"reservation_id": "order-b:line-0", "quantity": 1, "status": "released"}]}),
        )
    }

    #[test]
    fn grouped_stock_changes_are_checked_like_single_ones() {
        let mut h = good();
        h.product.splice(2..4, [grouped(8)]);
        assert!(violated(&h).is_empty(), "{:#?}", check(&h));
        // The grouped event's stock does not match its reservations.
        let mut h = good();
        h.product.splice(2..4, [grouped(7)]);
        assert_eq!(violated(&h), vec![NAMES[2]]);
    }

    #[test]
    fn a_double_charge_or_a_kept_refund_is_caught() {
        let mut h = good();
        h.payment.push(payment(4, "payment.captured", "a", 200));
        assert_eq!(violated(&h), vec![NAMES[4]]);
        let mut h = good();
        h.payment.pop();
        assert_eq!(violated(&h), vec![NAMES[4]]);
    }

    #[test]
    fn a_missing_or_doubled_notification_is_caught() {
        let mut h = good();
        h.notification.pop();
        assert_eq!(violated(&h), vec![NAMES[5]]);
        let mut h = good();
        h.notification.push(sent(4, 3, "order_confirmed"));
        assert_eq!(violated(&h), vec![NAMES[5]]);
    }

    #[test]
    fn a_retry_answered_with_another_order_is_caught() {
        let mut h = good();
        h.retried[0].second = "b".into();
        assert_eq!(violated(&h), vec![NAMES[6]]);
    }
}
