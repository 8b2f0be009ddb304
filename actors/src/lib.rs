//! The actor runtime every shop service runs on (ractor).
//!
//! A service describes its endpoints, its stream and how events project into
//! sled ([`service::ServiceSpec`]); [`service::run`] does the rest:
//!
//! ```text
//! supervisor            restarts crashed children with backoff and a budget
//! ├── endpoint actors   own the queue subscription `<service>.>`; reads inline,
//! │                     slow work to the bounded worker pool (ractor factory)
//! ├── state actor       tails the service's stream into sled, checkpoint in the same batch
//! ├── consumer actors   durable JetStream consumers; ack after the effect is stored
//! ├── $SRV actor        NATS services protocol: PING, INFO, STATS
//! └── registry actor    heartbeat into the `registry` bucket
//! admin HTTP            /health, /ready, /metrics
//! ```
//!
//! [`telemetry`] sets up logs (stderr and the `LOGS` stream) and OpenTelemetry
//! span export for every service and for the gateway.

pub mod admin;
pub mod allocator;
pub mod config;
pub mod consumer;
pub mod endpoint;
pub mod eventlog;
pub mod log_publisher;
pub mod metrics;
pub mod otlp;
pub mod page;
pub mod parking;
pub mod pool;
pub mod process;
pub mod registry;
pub mod request;
pub mod service;
pub mod srv;
pub mod state;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod telemetry_metrics;
pub mod traced;

pub use allocator::Allocator;
pub use config::RuntimeConfig;
pub use eventlog::{Append, EventLog};
pub use request::{EndpointSpec, Handler, HandlerResult, Request};
pub use service::{run, ServiceContext, ServiceSpec, Wiring};
pub use state::{ApplyError, Projection, StateHandle, StoredEvent};
pub use store::Store;
