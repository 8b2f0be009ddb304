//! The notification service: messages to users.
//!
//! - Durable consumers ([`notifier::Notifier`]) react to `user.registered`,
//!   `order.confirmed` and `order.cancelled`: each event becomes one message
//!   ([`render`]) delivered through a [`mailer::Mailer`] (SMTP, or the spool
//!   directory by default), exactly once per event.
//! - What was delivered is an event on the `NOTIFICATION` stream;
//!   [`store::NotificationProjection`] writes it into every instance's sled
//!   store, where dedupe checks and `notification.list` ([`handler`]) find it.

pub mod domain;
pub mod handler;
pub mod mailer;
pub mod notifier;
pub mod render;
pub mod settings;
pub mod smtp;
pub mod spool;
pub mod store;

use std::sync::Arc;

use shop_actors::ServiceSpec;

/// The notification service's description for the runtime.
pub fn spec() -> ServiceSpec {
    ServiceSpec {
        name: handler::SERVICE,
        version: env!("CARGO_PKG_VERSION"),
        description: "Messages to users: welcome and order mails, exactly once per event",
        endpoints: handler::ENDPOINTS,
        stream: handler::STREAM,
        stream_subjects: handler::STREAM_SUBJECTS,
        projection: Arc::new(store::NotificationProjection),
    }
}
