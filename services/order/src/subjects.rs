//! Where order events land on the `ORDER` stream.
//!
//! Each event has its type in its subject, `events.order.<type>.<order_id>`
//! (`<type>`: `created`, `stock_reserved`, `confirmed`, `cancelling`,
//! `cancelled`, `redriven`), so a consumer is sent only the events it acts on:
//! the saga takes the steps' triggers, the notifier the final events. An
//! order's revision is the last sequence over all its subjects,
//! `events.order.*.<order_id>`, which every append expects.
//!
//! Orders created by an earlier version have every event on one subject,
//! `events.order.<order_id>`, and keep it to the end: the revision check then
//! sees all their events (a wildcard over the new subjects would not).

/// The stream subject of an event of type `event_type` (`order.created`…).
pub fn event_subject(event_type: &str, order_id: &str) -> String {
    let kind = event_type.strip_prefix("order.").unwrap_or(event_type);
    format!("events.order.{kind}.{order_id}")
}

/// Every event subject of one order: what its revision is checked against.
pub fn order_subjects(order_id: &str) -> String {
    format!("events.order.*.{order_id}")
}

/// The one subject of every event of an order from an earlier version.
pub fn legacy_subject(order_id: &str) -> String {
    format!("events.order.{order_id}")
}

/// Whether `subject` is an earlier version's `events.order.<order_id>`.
pub fn is_legacy(subject: &str) -> bool {
    subject.split('.').count() == 3
}

/// Where the next event of an order goes: its subject, and the subjects its
/// revision is checked against (`None`: that subject alone).
pub fn next_event_subjects(
    event_type: &str,
    order_id: &str,
    legacy: bool,
) -> (String, Option<String>) {
    if legacy {
        (legacy_subject(order_id), None)
    } else {
        (
            event_subject(event_type, order_id),
            Some(order_subjects(order_id)),
        )
    }
}

/// The events the saga runs a step for: each triggers the order's next step.
/// `confirmed` and `cancelled` end the saga, so it is not sent them. The last
/// filter takes every event of an earlier version's orders.
pub const SAGA_FILTERS: &[&str] = &[
    "events.order.created.*",
    "events.order.stock_reserved.*",
    "events.order.paid.*",
    "events.order.cancelling.*",
    "events.order.redriven.*",
    "events.order.*",
];

/// The subjects this service appends to: the typed subjects, and an earlier
/// version's single subject for the orders still on it.
pub const PUBLISHES: &[&str] = &["events.order.*.*", "events.order.*"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_subjects_and_the_legacy_one() {
        assert_eq!(
            event_subject("order.stock_reserved", "o1"),
            "events.order.stock_reserved.o1"
        );
        assert_eq!(
            next_event_subjects("order.created", "o1", false),
            (
                "events.order.created.o1".to_string(),
                Some("events.order.*.o1".to_string())
            )
        );
        assert_eq!(
            next_event_subjects("order.confirmed", "o1", true),
            ("events.order.o1".to_string(), None)
        );
        assert!(is_legacy("events.order.o1"));
        assert!(!is_legacy("events.order.created.o1"));
        let matches = |pattern: &str, subject: &str| shop_nats::subject::matches(pattern, subject);
        for kind in [
            "created",
            "stock_reserved",
            "paid",
            "cancelling",
            "redriven",
        ] {
            let subject = event_subject(&format!("order.{kind}"), "o1");
            assert!(
                SAGA_FILTERS.iter().any(|f| matches(f, &subject)),
                "{subject}"
            );
        }
        for kind in ["confirmed", "cancelled"] {
            let subject = event_subject(&format!("order.{kind}"), "o1");
            assert!(
                !SAGA_FILTERS.iter().any(|f| matches(f, &subject)),
                "{subject}"
            );
            assert!(PUBLISHES.iter().any(|p| matches(p, &subject)));
        }
        assert!(SAGA_FILTERS.iter().any(|f| matches(f, "events.order.o1")));
    }
}
