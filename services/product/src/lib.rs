//! The product service: catalog and inventory.
//!
//! - Requests enter through the runtime's endpoint actors and reach
//!   [`handler::ProductHandler`] (subjects in [`handler::ENDPOINTS`]).
//! - Rules live in [`domain`] as plain functions.
//! - Changes are events on the `PRODUCT` stream; [`store::ProductProjection`]
//!   writes them into this instance's sled store, where reads find them.

pub mod domain;
pub mod handler;
pub mod seed;
pub mod store;

use std::sync::Arc;

use shop_actors::ServiceSpec;

/// The product service's description for the runtime.
pub fn spec() -> ServiceSpec {
    ServiceSpec {
        name: handler::SERVICE,
        version: env!("CARGO_PKG_VERSION"),
        description: "Catalog and inventory: products, prices, stock reservations",
        endpoints: handler::ENDPOINTS,
        stream: handler::STREAM,
        stream_subjects: handler::STREAM_SUBJECTS,
        projection: Arc::new(store::ProductProjection),
    }
}
