//! Delivery of a rendered message to the outside world, behind one trait: SMTP
//! in production ([`crate::smtp::SmtpMailer`]), a local spool directory by
//! default: mbox segments ([`crate::mbox::MboxMailer`]) or a `.eml` file per
//! message ([`crate::spool::SpoolMailer`]). All build the same RFC 5322
//! message and fail the same way on a bad address.

use std::time::SystemTime;

use futures::future::BoxFuture;
use lettre::{
    message::{Mailbox, SinglePart},
    Address, Message,
};

use crate::render::Email;

/// Why a message was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// May work later (server unreachable, 4xx, disk full): retry with backoff.
    #[error("transient delivery failure: {0}")]
    Transient(String),
    /// Will never work (bad address, 5xx reject): give up on this message.
    #[error("permanent delivery failure: {0}")]
    Permanent(String),
}

/// Delivers messages. Delivering the same message (same `Email::id`) twice
/// must be harmless where the medium allows it: the mbox spool appends
/// nothing for a `Message-ID` it holds, the `.eml` spool overwrites its file,
/// SMTP sends the same `Message-ID` so receivers can drop the repeat.
pub trait Mailer: Send + Sync + 'static {
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Result<(), DeliveryError>>;

    /// Where messages go, for logs (never contains credentials).
    fn describe(&self) -> String;
}

/// The sender mailbox from `MAIL_FROM`, e.g. `shop@localhost` or `Shop <shop@example.com>`.
pub fn parse_from(from: &str) -> anyhow::Result<Mailbox> {
    from.parse::<Mailbox>()
        .map_err(|e| anyhow::anyhow!("MAIL_FROM {from:?} is not a valid mailbox: {e}"))
}

/// The RFC 5322 message for `email`: Date, From, To, Subject, Message-ID,
/// MIME-Version, `Content-Type: text/plain; charset=utf-8`, encoded body.
pub fn build_message(
    from: &Mailbox,
    email: &Email,
    date: SystemTime,
) -> Result<Message, DeliveryError> {
    let address: Address = email.to.parse().map_err(|e| {
        DeliveryError::Permanent(format!(
            "recipient address of notification {} is invalid: {e}",
            email.id
        ))
    })?;
    Message::builder()
        .from(from.clone())
        .to(Mailbox::new(email.to_name.clone(), address))
        .subject(email.subject.clone())
        .message_id(Some(email.message_id.clone()))
        .date(date)
        .singlepart(SinglePart::plain(email.body.clone()))
        .map_err(|e| DeliveryError::Permanent(format!("building message {}: {e}", email.id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::UserInfo, render};

    #[test]
    fn builds_rfc5322_with_every_header() {
        let from = parse_from("Shop <shop@example.com>").unwrap();
        let email = render::welcome(
            "USER:1",
            "shop@example.com",
            &UserInfo {
                id: "u1".into(),
                email: "ann@example.com".into(),
                name: Some("Änn".into()),
            },
        );
        let message = build_message(&from, &email, SystemTime::UNIX_EPOCH).unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        for needle in [
            "Date: Thu, 01 Jan 1970 00:00:00 +0000",
            "From: Shop <shop@example.com>",
            "To: =?utf-8?b?",
            "<ann@example.com>",
            &format!("Message-ID: {}", email.message_id),
            "MIME-Version: 1.0",
            "Subject: Welcome to the shop, =?utf-8?b?",
            "Content-Type: text/plain; charset=utf-8",
        ] {
            assert!(head.contains(needle), "{needle} in\n{head}");
        }
        assert!(body.starts_with("Hello =C3=84nn,"), "{body}");
        assert_eq!(
            message.envelope().to(),
            &["ann@example.com".parse::<Address>().unwrap()]
        );
    }

    #[test]
    fn a_bad_address_is_permanent() {
        let from = parse_from("shop@localhost").unwrap();
        let mut email = render::welcome(
            "USER:1",
            "shop@localhost",
            &UserInfo {
                id: "u1".into(),
                email: "not an address".into(),
                name: None,
            },
        );
        assert!(matches!(
            build_message(&from, &email, SystemTime::now()),
            Err(DeliveryError::Permanent(_))
        ));
        email.to = "a@b.c\r\nBcc: x@y.z".into();
        assert!(matches!(
            build_message(&from, &email, SystemTime::now()),
            Err(DeliveryError::Permanent(_))
        ));
        assert!(parse_from("nope").is_err());
    }
}
