//! The order service: orders and the order-placement saga.
//!
//! - [`declaration`] is the whole service on one screen: what it serves and who
//!   may call it, what it publishes, calls, consumes and owns.
//! - A request enters through the runtime's endpoint actors, which decode and
//!   validate it and call its handler, a plain function in [`endpoints`] (one
//!   file each: [`endpoints::create`], [`endpoints::get`], [`endpoints::list`],
//!   [`endpoints::cancel`], and [`endpoints::redrive`] for operators).
//! - The saga ([`saga::Saga`]) is a durable consumer of the `ORDER` stream shared
//!   by every instance: each recorded step triggers the next one.
//! - Rules and the state machine are plain functions in [`domain`].
//! - Every change is an event on the `ORDER` stream, appended through
//!   [`endpoints::change_order`]; orders land in sled through
//!   [`store::OrderProjection`]. Payment tokens wait in the bucket of [`tokens`].

pub mod admission;
pub mod domain;
pub mod endpoints;
pub mod saga;
pub mod store;
pub mod tokens;

use shop_actors::{read, write, Access, Declaration};

use crate::{
    endpoints::{cancel, create, get, list, redrive, Orders},
    store::OrderProjection,
};

pub const SERVICE: &str = "order";
/// The stream holding every order change.
pub const STREAM: &str = "ORDER";

/// The order service: what it serves, publishes, calls, consumes and owns.
pub fn declaration() -> Declaration<Orders> {
    shop_actors::declare!(SERVICE, "Orders and the order-placement saga")
        .stream(STREAM, &["events.order.>"], OrderProjection)
        .publishes(&["events.order.*"])
        .calls(&[
            "product.get",
            "product.stock.reserve",
            "product.stock.release",
            "payment.charge",
            "payment.void",
            "payment.refund",
        ])
        .consumes(saga::DURABLE, STREAM, saga::FILTERS)
        .bucket(tokens::BUCKET)
        .endpoint(
            "order.create",
            Access::user(),
            // A full instance refuses before the create waits in the pool.
            write(create::create).gate(create::has_room),
        )
        .endpoint("order.get", Access::user(), read(get::get))
        .endpoint("order.list", Access::user(), read(list::list))
        .endpoint("order.cancel", Access::user(), write(cancel::cancel))
        .endpoint("order.redrive", Access::admin(), write(redrive::redrive))
}
