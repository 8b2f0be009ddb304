//! The user service: accounts, credentials, profiles and token signing.
//!
//! - Requests enter through the runtime's endpoint actors and reach
//!   [`handler::UserHandler`] (subjects in [`handler::ENDPOINTS`]).
//! - Rules live in [`domain`] as plain functions; login slow-down rules in
//!   [`throttle`], hashing in [`password`].
//! - Changes are events on the `USER` stream; [`store::UserProjection`]
//!   writes them into this instance's sled store, where reads find them.
//! - Tokens are EdDSA JWTs ([`token`]); the signing keys live in a key-value
//!   bucket shared by every instance ([`keys`]). [`token::verify`] is what
//!   other services use to check a token against the keys of `user.keys`.

pub mod bootstrap;
pub mod config;
pub mod domain;
pub mod handler;
pub mod keys;
pub mod password;
pub mod store;
pub mod throttle;
pub mod token;

use std::sync::Arc;

use shop_actors::ServiceSpec;

/// The user service's description for the runtime.
pub fn spec() -> ServiceSpec {
    ServiceSpec {
        name: handler::SERVICE,
        version: env!("CARGO_PKG_VERSION"),
        description: "Accounts, credentials, profiles and token signing",
        endpoints: handler::ENDPOINTS,
        stream: handler::STREAM,
        stream_subjects: handler::STREAM_SUBJECTS,
        projection: Arc::new(store::UserProjection),
    }
}
