//! The order service: orders and the order-placement saga.
//!
//! - Requests enter through the runtime's endpoint actors and reach
//!   [`handler::OrderHandler`] (`order.create`, `order.get`, `order.list`, `order.cancel`).
//! - The saga ([`saga::Saga`]) is a durable consumer of the `ORDER` stream shared
//!   by every instance: each recorded step triggers the next one.
//! - Rules and the state machine are plain functions in [`domain`].
//! - Orders land in sled through [`store::OrderProjection`].

pub mod domain;
pub mod handler;
pub mod record;
pub mod saga;
pub mod store;
pub mod tokens;

use std::sync::Arc;

use shop_actors::ServiceSpec;

pub fn spec() -> ServiceSpec {
    ServiceSpec {
        name: handler::SERVICE,
        version: env!("CARGO_PKG_VERSION"),
        description: "Orders and the order-placement saga",
        endpoints: handler::ENDPOINTS,
        stream: handler::STREAM,
        stream_subjects: handler::STREAM_SUBJECTS,
        projection: Arc::new(store::OrderProjection),
    }
}
