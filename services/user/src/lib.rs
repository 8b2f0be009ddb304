//! The user service: accounts, credentials, profiles and token signing.
//!
//! - [`declaration`] is the whole service on one screen: what it serves and who
//!   may call it, what it publishes, what it owns.
//! - A request enters through the runtime's endpoint actors, which decode and
//!   validate it and call its handler: a plain function in [`endpoints`] (one
//!   file each, sharing [`endpoints::Users`]). Rules live in [`domain`] as
//!   plain functions; login slow-down rules in [`throttle`], hashing in
//!   [`password`].
//! - Changes are events on the `USER` stream; [`store::UserProjection`]
//!   writes them into this instance's sled store, where reads find them.
//! - Tokens are EdDSA JWTs ([`token`]); the signing keys live in a key-value
//!   bucket shared by every instance ([`keys`]), failed logins in another
//!   ([`throttle`]). [`token::verify`] is what other services use to check a
//!   token against the keys of `user.keys`.

pub mod bootstrap;
pub mod config;
pub mod domain;
pub mod endpoints;
pub mod keys;
pub mod password;
pub mod reseal;
pub mod store;
pub mod throttle;
pub mod token;

use shop_actors::{read, write, Access, Declaration};

use crate::{
    endpoints::{get, login, register, update, Users},
    store::UserProjection,
};

/// The service's name: its subject prefix and queue group.
pub const SERVICE: &str = "user";
/// The stream holding every account change.
pub const STREAM: &str = "USER";

/// The user service: what it serves, publishes and owns.
pub fn declaration() -> Declaration<Users> {
    shop_actors::declare!(SERVICE, "Accounts, credentials, profiles and token signing")
        .stream(STREAM, &["events.user.>"], UserProjection)
        .publishes(&[
            "events.user.registered.*",
            "events.user.profile.*",
            "events.user.credential.*",
        ])
        .bucket(keys::BUCKET)
        .bucket(throttle::BUCKET)
        .endpoint("user.register", Access::Public, write(register::register))
        .endpoint("user.login", Access::Public, write(login::login))
        .endpoint("user.get", Access::user(), read(get::get))
        .endpoint("user.update", Access::user(), write(update::update))
        .endpoint("user.keys", Access::Public, write(endpoints::keys::keys))
}
