//! A nats-server with JetStream: built from a configuration file or text,
//! listening on a chosen (or free) loopback port, its store in a given
//! directory, and ready once it prints `Server is ready`.
//!
//! The store directory reaches the configuration as `$NATS_STORE_DIR`
//! (`jetstream { store_dir: $NATS_STORE_DIR }`, as `nats/config/` does), and
//! the address as `-a`/`-p`, which override a `listen:` in the file. More
//! servers (a cluster) are more builders with their own `server_name` and
//! `cluster { ... routes }` in their configuration text.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::locate::{free_port, nats_server_bin, workspace_root};
use crate::process::{Process, Spec};

/// Where a server's configuration comes from.
#[derive(Debug, Clone)]
pub enum NatsConfig {
    /// A file, e.g. `nats/config/nats-server.conf`.
    File(PathBuf),
    /// Text, written to `<dir>/<name>.conf` before the server starts.
    Text(String),
}

/// A nats-server to start; [`NatsServer::start`] runs it.
#[derive(Debug, Clone)]
pub struct NatsServer {
    dir: PathBuf,
    bin: Option<PathBuf>,
    config: NatsConfig,
    host: String,
    port: Option<u16>,
    monitor_port: Option<u16>,
    store_dir: Option<PathBuf>,
    /// How the process runs: name, log file, readiness timeout, process group.
    spec: Spec,
}

impl NatsServer {
    /// A server named `nats-server` whose generated configuration and (unless
    /// [`NatsServer::store_dir`] says otherwise) JetStream store go in `dir`;
    /// JetStream on, otherwise the server's defaults, on a free port of
    /// 127.0.0.1; ready within 30 s.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            bin: None,
            config: NatsConfig::Text("jetstream { store_dir: $NATS_STORE_DIR }\n".to_string()),
            host: "127.0.0.1".to_string(),
            port: None,
            monitor_port: None,
            store_dir: None,
            spec: Spec::new("nats-server", "nats-server").ready_timeout(Duration::from_secs(30)),
        }
    }

    /// Its name in errors and of its generated configuration file,
    /// `<dir>/<name>.conf` (default `nats-server`; a cluster's nodes need one each).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.spec.name = name.into();
        self
    }

    /// The binary (default: [`nats_server_bin`] of this workspace).
    pub fn bin(mut self, bin: impl Into<PathBuf>) -> Self {
        self.bin = Some(bin.into());
        self
    }

    /// Uses the configuration file at `path` (e.g. `nats/config/nats-server.conf`).
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config = NatsConfig::File(path.into());
        self
    }

    /// Configuration text; `$NATS_STORE_DIR` names the store directory.
    pub fn config_text(mut self, text: impl Into<String>) -> Self {
        self.config = NatsConfig::Text(text.into());
        self
    }

    /// The address to listen on (default 127.0.0.1).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// The client port (default: a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The HTTP monitoring port (default: none, unless the configuration sets one).
    pub fn monitor_port(mut self, port: u16) -> Self {
        self.monitor_port = Some(port);
        self
    }

    /// The JetStream store, `$NATS_STORE_DIR` (default `<dir>/<name>-store`).
    pub fn store_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.store_dir = Some(dir.into());
        self
    }

    /// Adjusts how the process runs, e.g. `|p| p.log_file(..).own_process_group()`.
    pub fn process(mut self, adjust: impl FnOnce(Spec) -> Spec) -> Self {
        self.spec = adjust(self.spec);
        self
    }

    /// Writes the configuration if it is text, starts the server and waits
    /// until it is ready.
    pub async fn start(self) -> Result<NatsProcess> {
        let bin = match self.bin {
            Some(bin) => bin,
            None => nats_server_bin(&workspace_root())?,
        };
        let name = self.spec.name().to_string();
        let config = match self.config {
            NatsConfig::File(path) => path,
            NatsConfig::Text(text) => {
                let path = self.dir.join(format!("{name}.conf"));
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                path
            }
        };
        let port = match self.port {
            Some(port) => port,
            None => free_port()?,
        };
        let store_dir = (self.store_dir).unwrap_or_else(|| self.dir.join(format!("{name}-store")));
        let monitor = self
            .monitor_port
            .map(|port| ["-m".to_string(), port.to_string()]);
        let spec = self
            .spec
            .program(&bin)
            .arg("-c")
            .arg(&config)
            .args(["-a", &self.host, "-p", &port.to_string()])
            .args(monitor.into_iter().flatten())
            .env("NATS_STORE_DIR", &store_dir)
            .ready_line("Server is ready");
        let process = spec.start().await.with_context(|| {
            format!(
                "starting {} (scripts/setup.sh installs nats-server)",
                bin.display()
            )
        })?;
        Ok(NatsProcess {
            process,
            host: self.host,
            port,
            store_dir,
        })
    }
}

/// A nats-server this program started.
pub struct NatsProcess {
    pub process: Process,
    host: String,
    port: u16,
    store_dir: PathBuf,
}

impl NatsProcess {
    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://<host>:<port>`.
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.host, self.port)
    }

    /// Its JetStream store (kept across a restart).
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_restarts_and_stops_a_server() {
        let dir = tempfile::tempdir().unwrap();
        let mut nats = NatsServer::new(dir.path()).start().await.unwrap();
        let addr = ("127.0.0.1", nats.port());
        std::net::TcpStream::connect(addr).unwrap();
        assert!(nats.store_dir().starts_with(dir.path()));
        nats.process.stop(Duration::from_secs(10)).await.unwrap();
        assert!(std::net::TcpStream::connect(addr).is_err());
        nats.process.restart().await.unwrap();
        std::net::TcpStream::connect(addr).unwrap();
    }

    /// What `shop up --nats-cluster 3` and cluster tests will build on: three
    /// builders, each with its own name, configuration text and route port.
    #[tokio::test]
    async fn three_servers_with_routes_form_a_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let route_ports: Vec<u16> = (0..3).map(|_| free_port().unwrap()).collect();
        let routes: Vec<String> = (route_ports.iter())
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect();
        let mut servers = Vec::new();
        for (i, port) in route_ports.iter().enumerate() {
            let config = format!(
                "server_name: n{i}\njetstream {{ store_dir: $NATS_STORE_DIR }}\n\
                 cluster {{ name: shop, listen: 127.0.0.1:{port}, routes: [{}] }}\n",
                routes.join(", ")
            );
            let server = NatsServer::new(dir.path()).name(format!("nats-{i}"));
            servers.push(server.config_text(config).start().await.unwrap());
        }
        for server in &servers {
            let routed = server
                .process
                .wait_for_line("Route connection created", Duration::from_secs(20));
            routed.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_bad_configuration_fails_with_the_servers_words() {
        let dir = tempfile::tempdir().unwrap();
        let broken = NatsServer::new(dir.path()).config_text("this is { not a config");
        let text = crate::process::tests::failure(broken.start()).await;
        assert!(text.contains("exited"), "{text}");
        assert!(text.contains("Parse error"), "{text}");
    }
}
