//! Test helpers: real nats-server processes (JetStream, temporary store, free
//! loopback port) and real service processes, with readiness awaited from what
//! they print rather than guessed with sleeps. The processes themselves are
//! started, watched and stopped by `shop-process`, as `shop up` and the bench
//! harness start theirs.

pub mod cluster;
pub mod http;
pub mod metrics;
pub mod nats_cluster;
pub mod nats_server;
pub mod props;
pub mod reply;
pub mod service;
pub mod tokens;

pub use cluster::Cluster;
pub use nats_cluster::NatsCluster;
pub use nats_server::{operator_creds_of, service_auth_env, NatsServer};
pub use reply::{request_json, request_json_with_headers, Reply};
pub use service::{workspace_bin, ServiceProcess};

pub use shop_process::workspace_root;

/// What JetStream stream `name` holds now (messages, first and last sequence);
/// panics when it cannot be read (tests only).
pub async fn stream_state(
    js: &async_nats::jetstream::Context,
    name: &str,
) -> async_nats::jetstream::stream::State {
    let mut stream = js
        .get_stream(name)
        .await
        .unwrap_or_else(|e| panic!("stream {name}: {e}"));
    let info = stream
        .info()
        .await
        .unwrap_or_else(|e| panic!("info of stream {name}: {e}"));
    info.state.clone()
}
