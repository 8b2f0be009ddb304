//! The messages themselves: which text each event becomes. Plain text, one
//! function per kind, no I/O.

use crate::domain::{self, Kind, Order, UserInfo};

/// A rendered message, ready for a [`crate::mailer::Mailer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// See [`domain::notification_id`].
    pub id: String,
    pub message_id: String,
    pub user_id: String,
    pub kind: Kind,
    pub to: String,
    pub to_name: Option<String>,
    pub subject: String,
    pub body: String,
    /// `<stream>:<sequence>` of the event that caused it.
    pub source_event: String,
}

/// Who a message is for.
struct Addressee<'a> {
    user_id: &'a str,
    to: &'a str,
    name: Option<String>,
}

fn email(
    source_event: &str,
    kind: Kind,
    from: &str,
    addressee: Addressee<'_>,
    subject: String,
    body: String,
) -> Email {
    let id = domain::notification_id(source_event, kind);
    Email {
        message_id: domain::message_id(&id, from),
        id,
        user_id: addressee.user_id.to_string(),
        kind,
        to: addressee.to.trim().to_string(),
        to_name: addressee.name,
        subject,
        body,
        source_event: source_event.to_string(),
    }
}

/// `user.registered` → a welcome message.
pub fn welcome(source_event: &str, from: &str, user: &UserInfo) -> Email {
    let name = domain::clean_name(user.name.as_deref());
    let greeting = name.as_deref().unwrap_or("there");
    let subject = match &name {
        Some(name) => format!("Welcome to the shop, {name}!"),
        None => "Welcome to the shop!".to_string(),
    };
    let body = format!(
        "Hello {greeting},\n\n\
         your account is ready. You can sign in with {email} and start shopping.\n\n\
         If you did not create this account, reply to this message and we will close it.\n\n\
         -- \nThe shop\n",
        email = user.email.trim(),
    );
    email(
        source_event,
        Kind::Welcome,
        from,
        Addressee {
            user_id: &user.id,
            to: &user.email,
            name,
        },
        subject,
        body,
    )
}

/// `order.confirmed` → the order with its lines and total.
pub fn order_confirmed(
    source_event: &str,
    from: &str,
    order: &Order,
    to: &str,
    name: Option<&str>,
) -> Email {
    let order_id = one_line(&order.id);
    let greeting = name.unwrap_or("there");
    let mut body = format!(
        "Hello {greeting},\n\nthank you for your order {order_id}. We have confirmed it:\n\n"
    );
    for item in &order.items {
        let what = item
            .name
            .as_deref()
            .map(one_line)
            .unwrap_or_else(|| one_line(&item.product_id));
        body.push_str(&format!(
            "  {quantity} x {what} at {price} = {line}\n",
            quantity = item.quantity,
            price = format_money(item.price_cents, &order.currency),
            line = format_money(
                item.price_cents.saturating_mul(item.quantity),
                &order.currency
            ),
        ));
    }
    body.push_str(&format!(
        "\nTotal: {}\n\nWe will let you know when it ships.\n\n-- \nThe shop\n",
        format_money(order.total_cents, &order.currency)
    ));
    email(
        source_event,
        Kind::OrderConfirmed,
        from,
        Addressee {
            user_id: &order.user_id,
            to,
            name: name.map(String::from),
        },
        format!("Your order {order_id} is confirmed"),
        body,
    )
}

/// `order.cancelled` → the cancellation and its reason.
pub fn order_cancelled(
    source_event: &str,
    from: &str,
    order: &Order,
    reason: Option<&str>,
    to: &str,
    name: Option<&str>,
) -> Email {
    let order_id = one_line(&order.id);
    let greeting = name.unwrap_or("there");
    let reason = reason
        .or(order.reason.as_deref())
        .map(one_line)
        .filter(|r| !r.is_empty());
    let mut body = format!("Hello {greeting},\n\nyour order {order_id} has been cancelled.\n");
    if let Some(reason) = &reason {
        body.push_str(&format!("Reason: {reason}\n"));
    }
    body.push_str(&format!(
        "\nNothing will be charged for it; any payment taken ({}) is refunded.\n\n-- \nThe shop\n",
        format_money(order.total_cents, &order.currency)
    ));
    email(
        source_event,
        Kind::OrderCancelled,
        from,
        Addressee {
            user_id: &order.user_id,
            to,
            name: name.map(String::from),
        },
        format!("Your order {order_id} was cancelled"),
        body,
    )
}

/// Minor units as a decimal amount with its ISO 4217 code, e.g. `12.50 USD`.
pub fn format_money(minor: i64, currency: &str) -> String {
    shop_nats::money::format_minor(minor, &one_line(currency).to_ascii_uppercase())
}

/// A value from another service shown on one line, without control characters.
fn one_line(s: &str) -> String {
    domain::clean_name(Some(s)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrderItem;

    fn order() -> Order {
        Order {
            id: "o-1".into(),
            user_id: "u1".into(),
            email: None,
            items: vec![
                OrderItem {
                    product_id: "kb".into(),
                    quantity: 2,
                    price_cents: 4999,
                    name: Some("Keyboard".into()),
                },
                OrderItem {
                    product_id: "mouse".into(),
                    quantity: 1,
                    price_cents: 1500,
                    name: None,
                },
            ],
            total_cents: 11498,
            currency: "usd".into(),
            reason: None,
        }
    }

    #[test]
    fn money() {
        assert_eq!(format_money(11498, "USD"), "114.98 USD");
        assert_eq!(format_money(5, "eur"), "0.05 EUR");
        assert_eq!(format_money(1200, "JPY"), "1200 JPY");
        assert_eq!(format_money(1234, "KWD"), "1.234 KWD");
        assert_eq!(format_money(-250, "USD"), "-2.50 USD");
        assert_eq!(format_money(i64::MIN, "USD"), "-92233720368547758.08 USD");
    }

    #[test]
    fn welcome_greets_by_name_and_is_header_safe() {
        let user = UserInfo {
            id: "u1".into(),
            email: " ann@example.com ".into(),
            name: Some("Ann\r\nBcc: evil@example.com".into()),
        };
        let email = welcome("USER:3", "shop@localhost", &user);
        assert_eq!(email.kind, Kind::Welcome);
        assert_eq!(email.to, "ann@example.com");
        assert_eq!(
            email.subject,
            "Welcome to the shop, Ann Bcc: evil@example.com!"
        );
        assert!(!email.subject.contains('\n'));
        assert!(email.body.starts_with("Hello Ann Bcc: evil@example.com,"));
        assert_eq!(email.id, domain::notification_id("USER:3", Kind::Welcome));
        assert_eq!(email.message_id, format!("<{}@localhost>", email.id));
        let anonymous = welcome("USER:4", "shop@localhost", &UserInfo { name: None, ..user });
        assert_eq!(anonymous.subject, "Welcome to the shop!");
        assert!(anonymous.body.starts_with("Hello there,"));
    }

    #[test]
    fn confirmed_lists_lines_and_total() {
        let email = order_confirmed("ORDER:9", "shop@localhost", &order(), "a@b.c", Some("Ann"));
        assert_eq!(email.subject, "Your order o-1 is confirmed");
        assert!(email
            .body
            .contains("  2 x Keyboard at 49.99 USD = 99.98 USD\n"));
        assert!(email
            .body
            .contains("  1 x mouse at 15.00 USD = 15.00 USD\n"));
        assert!(email.body.contains("Total: 114.98 USD"));
        assert_eq!(email.user_id, "u1");
    }

    #[test]
    fn cancelled_gives_the_reason() {
        let email = order_cancelled(
            "ORDER:10",
            "shop@localhost",
            &order(),
            Some("payment\ndeclined"),
            "a@b.c",
            None,
        );
        assert_eq!(email.kind, Kind::OrderCancelled);
        assert_eq!(email.subject, "Your order o-1 was cancelled");
        assert!(email.body.contains("Reason: payment declined\n"));
        let in_order = Order {
            reason: Some("out of stock".into()),
            ..order()
        };
        let email = order_cancelled("ORDER:11", "shop@localhost", &in_order, None, "a@b.c", None);
        assert!(email.body.contains("Reason: out of stock\n"));
        let none = order_cancelled("ORDER:12", "shop@localhost", &order(), None, "a@b.c", None);
        assert!(!none.body.contains("Reason:"));
    }
}
