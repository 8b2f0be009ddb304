//! A nats-server process with JetStream, for one test: a free loopback port,
//! a temporary store, through [`shop_process::NatsServer`].

use std::{path::PathBuf, time::Duration};

use anyhow::Context;

pub use shop_process::free_port;

/// Configuration of a test server; the store is the server's temporary directory.
const TEST_CONFIG: &str = "max_payload: 8MB\njetstream { store_dir: $NATS_STORE_DIR }\n";
/// How long a test server may take to print `Server is ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a test server may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// The nats-server binary: `NATS_SERVER_BIN`, else `.tools/bin/nats-server`
/// (installed by scripts/setup.sh), else `nats-server` on PATH.
pub fn nats_server_bin() -> PathBuf {
    shop_process::nats_server_bin(&crate::workspace_root())
        .unwrap_or_else(|_| PathBuf::from("nats-server"))
}

pub struct NatsServer {
    server: shop_process::NatsProcess,
    /// Holds the configuration and the store; removed after the server stops.
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server on a free port with JetStream in a temporary directory.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating nats store dir")?;
        let server = shop_process::NatsServer::new(dir.path())
            .bin(nats_server_bin())
            .config_text(TEST_CONFIG)
            .process(|p| p.ready_timeout(READY_TIMEOUT))
            .start()
            .await?;
        Ok(Self { server, _dir: dir })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        async_nats::connect(self.url())
            .await
            .with_context(|| format!("connecting to {}", self.url()))
    }

    /// Stops the server (SIGTERM, then waits for it to exit).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.server.process.stop_blocking(STOP_GRACE).map(|_| ())
    }

    /// Stops and starts the server again on the same port with the same store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.server.process.restart().await
    }
}
