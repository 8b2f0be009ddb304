//! Robustness checks that run against the real system.
//!
//! - [`payload`]: random and mutated request payloads built from the JSON
//!   Schema of each endpoint's declared request type (`shop manifest --json`).
//! - [`fuzz`]: sends them over raw NATS to every declared subject and sorts
//!   the replies: a result or a 4xx with a message is fine; a 5xx, a reply
//!   that is not the contract's error shape, or no reply at all is a finding.
//! - [`run`]: the chaos run: the whole shop, 3 instances of every service,
//!   orders placed while instances and nats-server are killed, then
//!   [`invariants`] checked from the streams.

pub mod fuzz;
pub mod invariants;
pub mod payload;
pub mod run;
