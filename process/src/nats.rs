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
    name: String,
    bin: Option<PathBuf>,
    config: NatsConfig,
    host: String,
    port: Option<u16>,
    monitor_port: Option<u16>,
    store_dir: Option<PathBuf>,
    ready_timeout: Duration,
    log_file: Option<PathBuf>,
    own_group: bool,
    die_with_parent: bool,
}

impl NatsServer {
    /// A server named `nats-server` whose generated configuration and (unless
    /// [`NatsServer::store_dir`] says otherwise) JetStream store go in `dir`;
    /// JetStream on, otherwise the server's defaults, on a free port of 127.0.0.1.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            name: "nats-server".to_string(),
            bin: None,
            config: NatsConfig::Text("jetstream { store_dir: $NATS_STORE_DIR }\n".to_string()),
            host: "127.0.0.1".to_string(),
            port: None,
            monitor_port: None,
            store_dir: None,
            ready_timeout: Duration::from_secs(30),
            log_file: None,
            own_group: false,
            die_with_parent: false,
        }
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The binary (default: [`nats_server_bin`] of this workspace).
    pub fn bin(mut self, bin: impl Into<PathBuf>) -> Self {
        self.bin = Some(bin.into());
        self
    }

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

    pub fn store_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.store_dir = Some(dir.into());
        self
    }

    /// How long `Server is ready` may take (default 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }

    /// See [`Spec::own_process_group`].
    pub fn own_process_group(mut self) -> Self {
        self.own_group = true;
        self
    }

    /// See [`Spec::die_with_parent`].
    pub fn die_with_parent(mut self) -> Self {
        self.die_with_parent = true;
        self
    }

    /// Writes the configuration if it is text, starts the server and waits
    /// until it is ready.
    pub async fn start(self) -> Result<NatsProcess> {
        let bin = match self.bin {
            Some(bin) => bin,
            None => nats_server_bin(&workspace_root())?,
        };
        let config = match self.config {
            NatsConfig::File(path) => path,
            NatsConfig::Text(text) => {
                let path = self.dir.join(format!("{}.conf", self.name));
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                path
            }
        };
        let port = match self.port {
            Some(port) => port,
            None => free_port()?,
        };
        let store_dir = self
            .store_dir
            .unwrap_or_else(|| self.dir.join(format!("{}-store", self.name)));
        let mut spec = Spec::new(&self.name, &bin)
            .arg("-c")
            .arg(&config)
            .args(["-a", &self.host, "-p", &port.to_string()])
            .env("NATS_STORE_DIR", &store_dir)
            .ready_line("Server is ready")
            .ready_timeout(self.ready_timeout);
        if let Some(monitor) = self.monitor_port {
            spec = spec.args(["-m".to_string(), monitor.to_string()]);
        }
        if let Some(log) = self.log_file {
            spec = spec.log_file(log);
        }
        if self.own_group {
            spec = spec.own_process_group();
        }
        if self.die_with_parent {
            spec = spec.die_with_parent();
        }
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
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://<host>:<port>`.
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.host, self.port)
    }

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

    #[tokio::test]
    async fn a_bad_configuration_fails_with_the_servers_words() {
        let dir = tempfile::tempdir().unwrap();
        let err = NatsServer::new(dir.path())
            .config_text("this is { not a config")
            .start()
            .await
            .err()
            .unwrap();
        let text = format!("{err:#}");
        assert!(text.contains("exited"), "{text}");
        assert!(text.contains("Parse error"), "{text}");
    }
}
