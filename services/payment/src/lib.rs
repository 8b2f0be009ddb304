//! The payment service: charges and refunds, behind an adapter for the
//! payment provider.
//!
//! - [`declaration`] is the whole service on one screen: what it serves and who
//!   may call it, what it publishes, what it owns.
//! - A request enters through the runtime's endpoint actors, which decode and
//!   validate it and call its handler, a plain function in [`endpoints`] (one
//!   file each: [`endpoints::charge`], [`endpoints::void`], [`endpoints::refund`],
//!   [`endpoints::get`]).
//! - Rules live in [`domain`] (and [`money`]) as plain functions.
//! - The provider sits behind [`provider::PaymentProvider`]; domain types
//!   never carry a provider's types. [`local_provider::LocalProvider`] is the
//!   built-in processor with its own ledger.
//! - Changes are events on the `PAYMENT` stream; [`store::PaymentProjection`]
//!   writes them into this instance's sled store, where reads find them.

pub mod config;
pub mod domain;
pub mod endpoints;
pub mod local_provider;
pub mod money;
pub mod provider;
pub mod store;

use shop_actors::{read, write, Access, Declaration};

use crate::{
    endpoints::{charge, get, refund, void, Payments},
    local_provider::LEDGER_BUCKET,
    store::PaymentProjection,
};

pub const SERVICE: &str = "payment";
/// The stream holding every payment change.
pub const STREAM: &str = "PAYMENT";

/// The payment service: what it serves, publishes and owns.
pub fn declaration() -> Declaration<Payments> {
    shop_actors::declare!(
        SERVICE,
        "Charges and refunds through the payment provider, exactly once per idempotency key"
    )
    .stream(STREAM, &["events.payment.>"], PaymentProjection)
    .publishes(&["events.payment.*"])
    .bucket(LEDGER_BUCKET)
    .endpoint(
        "payment.charge",
        Access::internal(&["order"]),
        write(charge::charge),
    )
    .endpoint(
        "payment.void",
        Access::internal(&["order"]),
        write(void::void),
    )
    .endpoint(
        "payment.refund",
        Access::internal(&["order"]),
        write(refund::refund),
    )
    .endpoint("payment.get", Access::user(), read(get::get))
}
