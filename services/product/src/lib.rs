//! The product service: catalog and inventory.
//!
//! - [`declaration`] is the whole service on one screen: what it serves and who
//!   may call it, what it publishes, what it owns.
//! - Each endpoint's handler is a plain function in [`endpoints`] (one file
//!   each); rules live in [`domain`].
//! - Changes are events on the `PRODUCT` stream; [`store::ProductProjection`]
//!   writes them into this instance's sled store, where reads find them.

pub mod domain;
pub mod endpoints;
pub mod seed;
pub mod store;

use shop_actors::{read, write, Access, Declaration};

use crate::{
    endpoints::{create, get, list, stock, update, Products},
    store::ProductProjection,
};

pub const SERVICE: &str = "product";
/// The stream holding every product change.
pub const STREAM: &str = "PRODUCT";

/// The product service: what it serves, publishes and owns.
pub fn declaration() -> Declaration<Products> {
    shop_actors::declare!(
        SERVICE,
        "Catalog and inventory: products, prices, stock reservations"
    )
    .stream(STREAM, &["events.product.>"], ProductProjection)
    .publishes(&["events.product.*"])
    .endpoint("product.create", Access::admin(), write(create::create))
    .endpoint("product.get", Access::Public, read(get::get))
    .endpoint("product.update", Access::admin(), write(update::update))
    .endpoint("product.list", Access::Public, read(list::list))
    .endpoint(
        "product.stock.reserve",
        Access::internal(&["order"]),
        write(stock::reserve),
    )
    .endpoint(
        "product.stock.release",
        Access::internal(&["order"]),
        write(stock::release),
    )
}
