//! NATS plumbing shared by every shop service.
//!
//! - [`auth`]: access tokens, their verification, and the caller identity a verified token proves.
//! - [`verifier`]: tokens checked against the user service's keys (cached, refreshed, single-flight).
//! - [`login`]: `user.login` for tools that act as a user (`shop req --admin`, seeding).
//! - [`sealed`]: secrets at rest, sealed with a service's data key (XChaCha20-Poly1305, rotatable).
//! - [`clock`]: wall-clock time as milliseconds, seconds or RFC 3339.
//! - [`connect`]: a connection from configuration that reconnects forever.
//! - [`codec`]: JSON on the wire by default, bincode on request; the one place encoding lives.
//! - [`error`]: the single error type of the request contract and its NATS headers.
//! - [`client`]: a typed client for calling other services (timeouts, retries, breakers).
//! - [`jetstream`]: idempotent set-up of streams, consumers and key-value buckets.
//! - [`manifest`]: a service's declaration as data (endpoints and access, events, calls, consumers, what it owns).
//! - [`money`]: ISO 4217 currency checks and minor-unit formatting.
//! - [`discovery`]: the `registry` bucket of live service instances.
//! - [`trace`]: W3C `traceparent`/`tracestate` propagation in NATS headers.
//! - [`otel`]: OpenTelemetry spans for requests, replies and JetStream messages (only when exporting).

pub mod auth;
pub mod breaker;
pub mod client;
pub mod clock;
pub mod codec;
pub mod connect;
pub mod discovery;
pub mod error;
pub mod jetstream;
pub mod login;
pub mod manifest;
pub mod money;
pub mod otel;
pub mod sealed;
pub mod subject;
pub mod trace;
pub mod verifier;

pub use async_nats;
pub use client::{CallOptions, ServiceClient};
pub use codec::Encoding;
pub use connect::{connect, server_addrs, Connection, ConnectionEvent, NatsConfig};
pub use error::ServiceError;
pub use trace::TraceContext;

/// Largest request payload a service accepts by default (1 MiB). The shipped
/// nats-server configuration allows more so that services can answer oversize
/// requests with a clear 400 instead of the server closing the connection.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
