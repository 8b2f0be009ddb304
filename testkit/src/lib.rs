//! Test helpers: real nats-server processes (JetStream, temporary store, free
//! loopback port) and real service processes, with readiness awaited from what
//! they print rather than guessed with sleeps.

pub mod cluster;
pub mod http;
pub mod metrics;
pub mod nats_server;
pub mod reply;
pub mod service;

pub use cluster::Cluster;
pub use nats_server::NatsServer;
pub use reply::{request_json, Reply};
pub use service::{workspace_bin, ServiceProcess};

/// The workspace root (where `.tools/` lives).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default()
}
