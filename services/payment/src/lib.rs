//! The payment service: charges and refunds, behind an adapter for the
//! payment provider.
//!
//! - Requests enter through the runtime's endpoint actors and reach
//!   [`handler::PaymentHandler`] (subjects in [`handler::ENDPOINTS`]).
//! - Rules live in [`domain`] (and [`money`]) as plain functions.
//! - The provider sits behind [`provider::PaymentProvider`]; domain types
//!   never carry a provider's types. [`local_provider::LocalProvider`] is the
//!   built-in processor with its own ledger.
//! - Changes are events on the `PAYMENT` stream; [`store::PaymentProjection`]
//!   writes them into this instance's sled store, where reads find them.

pub mod config;
pub mod domain;
pub mod handler;
pub mod local_provider;
pub mod money;
pub mod provider;
pub mod store;

use std::sync::Arc;

use shop_actors::ServiceSpec;

/// The payment service's description for the runtime.
pub fn spec() -> ServiceSpec {
    ServiceSpec {
        name: handler::SERVICE,
        version: env!("CARGO_PKG_VERSION"),
        description:
            "Charges and refunds through the payment provider, exactly once per idempotency key",
        endpoints: handler::ENDPOINTS,
        stream: handler::STREAM,
        stream_subjects: handler::STREAM_SUBJECTS,
        projection: Arc::new(store::PaymentProjection),
    }
}
