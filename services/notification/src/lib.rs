//! The notification service: messages to users.
//!
//! - [`declaration`] is the whole service on one screen: what it serves and who
//!   may call it, what it consumes and publishes, what it owns.
//! - Durable consumers ([`notifier::Notifier`], wired by [`notifier::consumers`])
//!   react to `user.registered`, `order.confirmed` and `order.cancelled`: each
//!   event becomes one message ([`render`]) delivered through a
//!   [`mailer::Mailer`] (SMTP, or by default the spool directory's mbox
//!   segments), exactly
//!   once per event.
//! - What was delivered is an event on the `NOTIFICATION` stream;
//!   [`store::NotificationProjection`] writes it into every instance's sled
//!   store, where dedupe checks and `notification.list` find it.
//! - A request enters through the runtime's endpoint actors, which decode and
//!   validate it and call its handler, a plain function in [`endpoints`]
//!   (`notification.list`: [`endpoints::list::list`]).

pub mod domain;
pub mod endpoints;
pub mod mailer;
pub mod mbox;
pub mod notifier;
pub mod render;
pub mod settings;
pub mod smtp;
pub mod spool;
pub mod store;

use shop_actors::{read, Access, Declaration};

use crate::{
    endpoints::{list, Notifications},
    notifier::{
        ORDERS_CONSUMER, ORDER_STREAM, ORDER_SUBJECTS, USERS_CONSUMER, USER_STREAM, USER_SUBJECTS,
    },
    store::NotificationProjection,
};

/// The service's name: its subject prefix and queue group.
pub const SERVICE: &str = "notification";
/// The stream holding every delivered notification and recorded recipient.
pub const STREAM: &str = "NOTIFICATION";

/// The notification service: what it serves, consumes, publishes and owns.
pub fn declaration() -> Declaration<Notifications> {
    shop_actors::declare!(
        SERVICE,
        "Messages to users: welcome and order mails, exactly once per event"
    )
    .stream(STREAM, &["events.notification.>"], NotificationProjection)
    .publishes(&[
        "events.notification.sent.*",
        "events.notification.recipient.*",
    ])
    .consumes(USERS_CONSUMER, USER_STREAM, USER_SUBJECTS)
    .consumes(ORDERS_CONSUMER, ORDER_STREAM, ORDER_SUBJECTS)
    .endpoint("notification.list", Access::user(), read(list::list))
}
