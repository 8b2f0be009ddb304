//! A nats-server process with JetStream, for one test: a free loopback port,
//! a temporary store, through [`shop_process::NatsServer`].
//!
//! Auth is on by default, as in production: [`NatsServer::start`] runs
//! `shop auth init` (the workspace's `shop` binary) into the server's
//! temporary directory and starts the server from the configuration it
//! writes, so every test runs against the permissions the declarations
//! generate. The test's own clients connect as `operator`
//! ([`NatsServer::client`]); [`crate::ServiceProcess::start`] gives each
//! service binary its own identity. [`NatsServer::start_without_auth`] is for
//! the few tests that need an open bus.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use anyhow::Context;

pub use shop_process::free_port;

/// Configuration of a test server without auth; the store is the server's temporary directory.
const TEST_CONFIG: &str = "max_payload: 8MB\njetstream { store_dir: $NATS_STORE_DIR }\n";
/// How long a test server may take to print `Server is ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a test server may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// The identity that may do everything (the tests' own clients).
pub const OPERATOR: &str = "operator";

/// The auth directories of the servers this test process runs, by URL, so
/// that a service started with a URL gets the credentials of that server.
static AUTH_DIRS: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());

/// The auth directory (`shop auth init`) of the server at `url`, when this
/// process started it with auth.
pub fn auth_dir_of(url: &str) -> Option<PathBuf> {
    AUTH_DIRS
        .lock()
        .map(|dirs| dirs.get(url).cloned())
        .unwrap_or_default()
}

/// Remembers that the server(s) at `url` run with the auth of `dir`.
pub(crate) fn register_auth_dir(url: &str, dir: &Path) {
    if let Ok(mut dirs) = AUTH_DIRS.lock() {
        dirs.insert(url.to_string(), dir.to_path_buf());
    }
}

pub(crate) fn unregister_auth_dir(url: &str) {
    if let Ok(mut dirs) = AUTH_DIRS.lock() {
        dirs.remove(url);
    }
}

/// The operator's `.creds` of the server at `url`, when this process started
/// it with auth (for tools a test runs with `--server <url>`).
pub fn operator_creds_of(url: &str) -> Option<PathBuf> {
    auth_dir_of(url).map(|dir| dir.join(format!("{OPERATOR}.creds")))
}

/// The nats-server binary: `NATS_SERVER_BIN`, else `.tools/bin/nats-server`
/// (installed by scripts/setup.sh), else `nats-server` on PATH.
pub fn nats_server_bin() -> PathBuf {
    shop_process::nats_server_bin(&crate::workspace_root())
        .unwrap_or_else(|_| PathBuf::from("nats-server"))
}

/// Runs `shop auth init <dir>` with the workspace's `shop` binary.
pub fn auth_init(dir: &Path) -> anyhow::Result<()> {
    let shop = crate::workspace_bin("shop")?;
    let output = std::process::Command::new(&shop)
        .args(["auth", "init"])
        .arg(dir)
        .output()
        .with_context(|| format!("running {} auth init", shop.display()))?;
    if !output.status.success() {
        anyhow::bail!(
            "shop auth init {} failed ({}): {}",
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

pub struct NatsServer {
    server: shop_process::NatsProcess,
    /// `shop auth init`'s output, when auth is on.
    auth: Option<PathBuf>,
    /// Holds the configuration and the store; removed after the server stops.
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server with auth on a free port with JetStream in a temporary directory.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(true).await
    }

    /// Starts a server anyone may do anything on (no credentials needed).
    pub async fn start_without_auth() -> anyhow::Result<Self> {
        Self::start_with(false).await
    }

    async fn start_with(auth: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating nats store dir")?;
        let mut server = shop_process::NatsServer::new(dir.path())
            .bin(nats_server_bin())
            .process(|p| p.ready_timeout(READY_TIMEOUT));
        // Diagnostics: keep every server's log (permission violations show there).
        if let Some(logs) = std::env::var_os("TESTKIT_NATS_LOG_DIR") {
            let name = dir.path().file_name().unwrap_or_default().to_owned();
            let log = Path::new(&logs).join(name).with_extension("log");
            server = server.process(|p| p.log_file(log));
        }
        let auth_dir = match auth {
            true => {
                let auth_dir = dir.path().join("auth");
                auth_init(&auth_dir)?;
                server = server.config_file(auth_dir.join("nats-server.conf"));
                Some(auth_dir)
            }
            false => {
                server = server.config_text(TEST_CONFIG);
                None
            }
        };
        let server = server.start().await?;
        if let (Some(auth_dir), Ok(mut dirs)) = (&auth_dir, AUTH_DIRS.lock()) {
            dirs.insert(server.url(), auth_dir.clone());
        }
        Ok(Self {
            server,
            auth: auth_dir,
            _dir: dir,
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The auth directory (`shop auth init` output), when auth is on.
    pub fn auth_dir(&self) -> Option<&Path> {
        self.auth.as_deref()
    }

    /// The `.creds` file of `identity` (`product`, `gateway`, `operator` ...),
    /// when auth is on.
    pub fn creds(&self, identity: &str) -> Option<PathBuf> {
        self.auth
            .as_ref()
            .map(|dir| dir.join(format!("{identity}.creds")))
    }

    /// The operator's `.creds` file, when auth is on.
    pub fn operator_creds(&self) -> Option<PathBuf> {
        self.creds(OPERATOR)
    }

    /// A client that may do everything (the operator, when auth is on).
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        self.options(OPERATOR)
            .await?
            .connect(self.url())
            .await
            .with_context(|| format!("connecting to {}", self.url()))
    }

    /// Connection options for `identity`: its credentials (when auth is on)
    /// and its inbox prefix, as `shop_nats::connect` sets it.
    pub async fn options(&self, identity: &str) -> anyhow::Result<async_nats::ConnectOptions> {
        let Some(creds) = self.creds(identity) else {
            return Ok(async_nats::ConnectOptions::new());
        };
        let options = async_nats::ConnectOptions::with_credentials_file(&creds)
            .await
            .with_context(|| format!("reading {}", creds.display()))?;
        Ok(match identity {
            OPERATOR => options,
            name => options.custom_inbox_prefix(format!("_INBOX.{name}")),
        })
    }

    /// The server's process id (for `nats-server --signal reload=<pid>`).
    pub fn pid(&self) -> Option<u32> {
        self.server.process.pid()
    }

    /// Waits for a line of the server's output containing `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        self.server.process.wait_for_line(needle, timeout).await
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

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Ok(mut dirs) = AUTH_DIRS.lock() {
            dirs.remove(&self.url());
        }
    }
}

/// The environment a service binary needs on the server at `nats_url`: its
/// identity's `NATS_CREDS` (the binary's name without `-service`:
/// `product-service` → `product.creds`, `gateway` → `gateway.creds`); nothing
/// without auth. Data keys come from [`crate::service::data_key_env`].
pub fn service_auth_env(nats_url: &str, bin: &Path) -> Vec<(String, String)> {
    let Some(dir) = auth_dir_of(nats_url) else {
        return Vec::new();
    };
    let name = bin.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let identity = name.strip_suffix("-service").unwrap_or(name);
    vec![(
        "NATS_CREDS".to_string(),
        dir.join(format!("{identity}.creds")).display().to_string(),
    )]
}
