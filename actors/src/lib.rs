//! The actor runtime every shop service runs on (ractor).
//!
//! A service is a [`Declaration`]: its endpoints (subject, who may call it, a
//! typed handler from [`route::read`] or [`route::write`]), its stream and how
//! events project into sled, what it publishes, calls and consumes.
//! [`service::run`] serves it:
//!
//! ```text
//! supervisor            restarts crashed children with backoff and a budget
//! ├── endpoint actors   own the queue subscription `<service>.>` (endpoint.rs);
//! │                     access check and decode (dispatch.rs), reads inline,
//! │                     slow work to the bounded worker pool (pool.rs, ractor
//! │                     factory); replies and their stats (responder.rs)
//! ├── state actor       tails the service's stream into sled, checkpoint in the same batch
//! ├── consumer actors   durable JetStream consumers; ack after the effect is stored
//! ├── $SRV actor        NATS services protocol: PING, INFO, STATS
//! └── registry actor    heartbeat into the `registry` bucket
//! admin HTTP            /health, /ready, /metrics
//! ```
//!
//! [`telemetry`] sets up logs (stderr and the `LOGS` stream) and OpenTelemetry
//! span export for every service and for the gateway.

pub mod access;
pub mod admin;
pub mod allocator;
pub mod config;
pub mod consumer;
pub mod declaration;
pub mod dispatch;
pub mod endpoint;
pub mod eventlog;
pub mod failure_log;
pub mod group_commit;
pub mod log_publisher;
pub mod metrics;
pub mod otlp;
pub mod page;
pub mod parking;
pub mod pool;
pub mod process;
pub mod registry;
pub mod reply;
pub mod request;
pub mod responder;
pub mod route;
pub mod service;
pub mod srv;
pub mod state;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod telemetry_metrics;

pub use allocator::Allocator;
pub use config::RuntimeConfig;
pub use declaration::Declaration;
pub use eventlog::{Append, Change, Changed, Event, EventLog};
pub use group_commit::{Committed, Decided, GroupCommit, GroupWrite};
pub use request::{Empty, HandlerResult, Request, RequestBody};
pub use route::{read, write};
pub use service::{run, ServiceContext, Wiring};
pub use shop_nats::manifest::Access;
pub use state::{ApplyError, Projection, StateHandle, StoredEvent};
pub use store::Store;
