//! What the notification service reacts to, what it records, and the rules
//! about both, as plain functions: which events become which message, how a
//! message is identified, and what a list request may ask for.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use shop_nats::ServiceError;

pub const DEFAULT_PAGE: u32 = 20;
pub const MAX_PAGE: u32 = 100;
/// Longest display name carried into a message; longer names are cut.
pub const MAX_NAME_CHARS: usize = 100;

// ---- events consumed --------------------------------------------------------

/// A user as the user service's events describe it; other fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UserInfo {
    pub id: String,
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// Events of the `USER` stream this service understands; any other type is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type")]
pub enum UserEvent {
    #[serde(rename = "user.registered")]
    Registered { user: UserInfo },
    #[serde(other)]
    Other,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OrderItem {
    pub product_id: String,
    pub quantity: i64,
    pub price_cents: i64,
    #[serde(default)]
    pub name: Option<String>,
}

/// An order as the order service's events describe it; other fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Order {
    pub id: String,
    pub user_id: String,
    /// When present the message goes here; otherwise to the user's registered address.
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub items: Vec<OrderItem>,
    pub total_cents: i64,
    pub currency: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Events of the `ORDER` stream this service understands; any other type is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type")]
pub enum OrderEvent {
    #[serde(rename = "order.confirmed")]
    Confirmed { order: Order },
    #[serde(rename = "order.cancelled")]
    Cancelled {
        order: Order,
        #[serde(default)]
        reason: Option<String>,
    },
    #[serde(other)]
    Other,
}

// ---- what this service records ----------------------------------------------

/// Which message a notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Welcome,
    OrderConfirmed,
    OrderCancelled,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Welcome => "welcome",
            Kind::OrderConfirmed => "order_confirmed",
            Kind::OrderCancelled => "order_cancelled",
        }
    }
}

/// Where a user's messages go, learnt from `user.registered`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub user_id: String,
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Stream sequence of the recipient's last change (set by the projection).
    #[serde(default)]
    pub revision: u64,
}

/// A message that was delivered, as `notification.list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Derived from the source event (see [`notification_id`]); also the spool file name.
    pub id: String,
    pub user_id: String,
    pub kind: Kind,
    pub to: String,
    pub subject: String,
    /// RFC 3339, UTC: when it was delivered.
    pub created_at: String,
    /// `<stream>:<sequence>` of the event that caused it.
    pub source_event: String,
    /// The `Message-ID` header it was sent with.
    pub message_id: String,
}

/// The `NOTIFICATION` stream's events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum NotificationEvent {
    /// A message was delivered for `notification.source_event`.
    #[serde(rename = "notification.sent")]
    Sent { notification: Notification },
    /// The address of a user, so order messages can reach them on any instance.
    #[serde(rename = "notification.recipient_recorded")]
    RecipientRecorded { recipient: Recipient },
}

impl shop_actors::Event for NotificationEvent {
    fn type_name(&self) -> &'static str {
        match self {
            NotificationEvent::Sent { .. } => "notification.sent",
            NotificationEvent::RecipientRecorded { .. } => "notification.recipient_recorded",
        }
    }
}

// ---- requests and replies -----------------------------------------------------

/// `notification.list`: a page of one user's notifications, newest first.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListNotifications {
    pub user_id: String,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
    /// Answer only from state that includes this revision (waits briefly for it).
    #[serde(default)]
    pub min_revision: Option<u64>,
}

/// A `notification.list` reply.
pub type NotificationPage = shop_actors::page::Page<Notification>;

// ---- rules ------------------------------------------------------------------

/// User ids become subject tokens and store keys: 1-64 of `A-Z a-z 0-9 - _`.
pub fn validate_user_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "user_id must be 1-64 characters of letters, digits, '-' or '_', got {:?}",
            truncate(id, 80)
        ));
    }
    Ok(())
}

/// Checks a list request; returns the page size and the sequence to start after.
pub fn validate_list(request: &ListNotifications) -> Result<(usize, Option<u64>), ServiceError> {
    validate_user_id(&request.user_id).map_err(ServiceError::bad_request)?;
    let limit = match request.limit {
        None => DEFAULT_PAGE as usize,
        Some(limit) if (1..=MAX_PAGE).contains(&limit) => limit as usize,
        Some(limit) => {
            return Err(ServiceError::bad_request(format!(
                "limit must be from 1 to {MAX_PAGE}, got {limit}"
            )))
        }
    };
    let cursor = match &request.cursor {
        None => None,
        Some(cursor) => match cursor.parse::<u64>() {
            Ok(sequence) if sequence > 0 && !cursor.starts_with('+') => Some(sequence),
            _ => {
                return Err(ServiceError::bad_request(format!(
                    "cursor must be a next_cursor from an earlier page, got {:?}",
                    truncate(cursor, 80)
                )))
            }
        },
    };
    Ok((limit, cursor))
}

/// The notification id for the message `kind` caused by `source_event`: the
/// same on every delivery of that event, on every instance, so a repeat names
/// the same spool file, `Message-ID` and stream subject.
pub fn notification_id(source_event: &str, kind: Kind) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("shop.notification/{source_event}/{}", kind.as_str()).as_bytes(),
    )
    .simple()
    .to_string()
}

/// The `Message-ID` of a notification: `<id@domain-of-sender>`.
pub fn message_id(id: &str, from: &str) -> String {
    let domain = from
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('>').trim())
        .filter(|d| !d.is_empty())
        .unwrap_or("localhost");
    format!("<{id}@{domain}>")
}

/// A name fit for a header: one line, no control characters, at most
/// [`MAX_NAME_CHARS`]; `None` when nothing is left.
pub fn clean_name(name: Option<&str>) -> Option<String> {
    let cleaned: String = name?
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let cleaned: String = cleaned.chars().take(MAX_NAME_CHARS).collect();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// Whether a user event changes what is recorded about the recipient.
pub fn recipient_changed(stored: Option<&Recipient>, user: &UserInfo) -> bool {
    match stored {
        None => true,
        Some(r) => r.email != user.email.trim() || r.name != clean_name(user.name.as_deref()),
    }
}

/// The address an order message goes to: the order's own, else the recorded one.
pub fn order_address<'a>(order: &'a Order, recipient: Option<&'a Recipient>) -> Option<&'a str> {
    order
        .email
        .as_deref()
        .filter(|e| !e.trim().is_empty())
        .or(recipient.map(|r| r.email.as_str()))
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(user_id: &str, cursor: Option<&str>, limit: Option<u32>) -> ListNotifications {
        ListNotifications {
            user_id: user_id.into(),
            cursor: cursor.map(String::from),
            limit,
            min_revision: None,
        }
    }

    #[test]
    fn user_events_decode_tolerantly() {
        let event: UserEvent = serde_json::from_str(
            r#"{"type":"user.registered","user":{"id":"u1","email":"a@b.c","name":"Ann","created_at":"x","extra":1},"more":true}"#,
        )
        .unwrap();
        assert_eq!(
            event,
            UserEvent::Registered {
                user: UserInfo {
                    id: "u1".into(),
                    email: "a@b.c".into(),
                    name: Some("Ann".into())
                }
            }
        );
        let other: UserEvent =
            serde_json::from_str(r#"{"type":"user.logged_in","user":{"id":"u1"}}"#).unwrap();
        assert_eq!(other, UserEvent::Other);
        assert!(serde_json::from_str::<UserEvent>(r#"{"type":"user.registered"}"#).is_err());
    }

    #[test]
    fn order_events_decode_tolerantly() {
        let event: OrderEvent = serde_json::from_str(
            r#"{"type":"order.cancelled","order":{"id":"o1","user_id":"u1","items":[{"product_id":"p","quantity":2,"price_cents":150,"x":1}],"total_cents":300,"currency":"USD","status":"cancelled"},"reason":"payment declined"}"#,
        )
        .unwrap();
        let OrderEvent::Cancelled { order, reason } = event else {
            panic!("expected a cancellation")
        };
        assert_eq!(order.items.len(), 1);
        assert_eq!(reason.as_deref(), Some("payment declined"));
        let created: OrderEvent =
            serde_json::from_str(r#"{"type":"order.created","order":{}}"#).unwrap();
        assert_eq!(created, OrderEvent::Other);
    }

    #[test]
    fn decodes_what_the_user_and_order_services_publish() {
        let registered: UserEvent = serde_json::from_str(
            r#"{"type":"user.registered","user":{"id":"0190f3a2b4c5d6e7f8091a2b3c4d5e6f","email":"ann@example.com","name":"Ann","roles":["customer"],"created_at":"2025-01-01T00:00:00Z"}}"#,
        )
        .unwrap();
        assert!(
            matches!(registered, UserEvent::Registered { user } if user.name.as_deref() == Some("Ann"))
        );
        let confirmed: OrderEvent = serde_json::from_str(
            r#"{"type":"order.confirmed","order":{"id":"o1","user_id":"u1","items":[{"product_id":"p1","quantity":2,"price_cents":150}],"total_cents":300,"currency":"USD","status":"confirmed","reason":null,"payment_id":"pay-1","created_at_ms":1,"updated_at_ms":2,"revision":7}}"#,
        )
        .unwrap();
        assert!(
            matches!(confirmed, OrderEvent::Confirmed { order } if order.reason.is_none() && order.total_cents == 300)
        );
        let cancelled: OrderEvent = serde_json::from_str(
            r#"{"type":"order.cancelled","order":{"id":"o1","user_id":"u1","items":[],"total_cents":300,"currency":"USD","status":"cancelled","reason":"payment declined","payment_id":null,"created_at_ms":1,"updated_at_ms":2,"revision":9}}"#,
        )
        .unwrap();
        assert!(
            matches!(cancelled, OrderEvent::Cancelled { order, reason: None } if order.reason.as_deref() == Some("payment declined"))
        );
    }

    #[test]
    fn list_requests_are_checked() {
        assert_eq!(validate_list(&list("u1", None, None)).unwrap(), (20, None));
        assert_eq!(
            validate_list(&list("u1", Some("42"), Some(100))).unwrap(),
            (100, Some(42))
        );
        for (request, needle) in [
            (list("", None, None), "user_id"),
            (list("a.b", None, None), "user_id"),
            (list(&"x".repeat(65), None, None), "user_id"),
            (list("u1", None, Some(0)), "limit"),
            (list("u1", None, Some(101)), "limit"),
            (list("u1", Some("abc"), None), "cursor"),
            (list("u1", Some("0"), None), "cursor"),
            (list("u1", Some("-1"), None), "cursor"),
            (list("u1", Some("+5"), None), "cursor"),
        ] {
            let err = validate_list(&request).unwrap_err();
            assert_eq!(err.code, 400);
            assert!(err.message.contains(needle), "{}", err.message);
        }
    }

    #[test]
    fn ids_are_stable_per_event_and_kind() {
        let a = notification_id("USER:7", Kind::Welcome);
        assert_eq!(a, notification_id("USER:7", Kind::Welcome));
        assert_ne!(a, notification_id("USER:8", Kind::Welcome));
        assert_ne!(a, notification_id("USER:7", Kind::OrderConfirmed));
        assert_eq!(a.len(), 32);
        assert_eq!(
            message_id(&a, "Shop <shop@example.com>"),
            format!("<{a}@example.com>")
        );
        assert_eq!(message_id(&a, "nobody"), format!("<{a}@localhost>"));
    }

    #[test]
    fn names_are_made_header_safe() {
        assert_eq!(
            clean_name(Some("  Ann\r\nBcc: x@y.z ")).as_deref(),
            Some("Ann Bcc: x@y.z")
        );
        assert_eq!(clean_name(Some(" \t ")), None);
        assert_eq!(clean_name(None), None);
        assert_eq!(
            clean_name(Some(&"é".repeat(500))).unwrap().chars().count(),
            MAX_NAME_CHARS
        );
    }

    #[test]
    fn recipients_and_order_addresses() {
        let user = UserInfo {
            id: "u1".into(),
            email: "a@b.c".into(),
            name: Some(" Ann ".into()),
        };
        let stored = Recipient {
            user_id: "u1".into(),
            email: "a@b.c".into(),
            name: Some("Ann".into()),
            revision: 3,
        };
        assert!(recipient_changed(None, &user));
        assert!(!recipient_changed(Some(&stored), &user));
        let moved = UserInfo {
            email: "new@b.c".into(),
            ..user
        };
        assert!(recipient_changed(Some(&stored), &moved));

        let order = Order {
            id: "o1".into(),
            user_id: "u1".into(),
            email: None,
            items: vec![],
            total_cents: 1,
            currency: "USD".into(),
            reason: None,
        };
        assert_eq!(order_address(&order, Some(&stored)), Some("a@b.c"));
        assert_eq!(order_address(&order, None), None);
        let with_email = Order {
            email: Some("o@b.c".into()),
            ..order
        };
        assert_eq!(order_address(&with_email, Some(&stored)), Some("o@b.c"));
    }

    #[test]
    fn events_are_tagged_json() {
        let event = NotificationEvent::Sent {
            notification: Notification {
                id: "n1".into(),
                user_id: "u1".into(),
                kind: Kind::OrderConfirmed,
                to: "a@b.c".into(),
                subject: "s".into(),
                created_at: "2025-01-01T00:00:00Z".into(),
                source_event: "ORDER:3".into(),
                message_id: "<n1@localhost>".into(),
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "notification.sent");
        assert_eq!(json["notification"]["kind"], "order_confirmed");
        assert_eq!(
            serde_json::from_value::<NotificationEvent>(json).unwrap(),
            event
        );
    }
}
