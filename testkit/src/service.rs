//! A service binary running as its own process, as in production, through
//! [`shop_process::Process`].

use std::{
    path::{Path, PathBuf},
    process::ExitStatus,
    time::Duration,
};

use anyhow::Context;
use shop_process::{Process, Spec};
use tokio::sync::broadcast;

pub use shop_process::wait_for_line;

/// How long a service may take to log "service ready".
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct ServiceProcess {
    pub instance_id: String,
    pub admin_addr: String,
    process: Process,
}

impl ServiceProcess {
    /// Starts `bin` with `NATS_URL`, `INSTANCE_ID`, `DATA_DIR` and JSON logs, and
    /// waits for its "service ready" log line (`TESTKIT_ECHO` set: every line
    /// is echoed to stderr). On a server with auth (`NatsServer::start`) it
    /// connects as its own identity, from the binary's name.
    pub async fn start(
        bin: &Path,
        nats_url: &str,
        instance_id: &str,
        data_dir: &Path,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let process = Spec::new(instance_id, bin)
            .envs([
                ("NATS_URL", nats_url),
                ("INSTANCE_ID", instance_id),
                ("LOG_FORMAT", "json"),
                ("ADMIN_ADDR", "127.0.0.1:0"),
                ("RUST_LOG", "info"),
            ])
            .env("DATA_DIR", data_dir)
            // Auth (issue #13, the bus): NATS_CREDS of the binary's identity, data keys.
            .env_remove("NATS_CREDS")
            .envs(crate::nats_server::service_auth_env(nats_url, bin))
            .envs(extra_env.iter().copied())
            .ready_line("\"service ready\"")
            .ready_timeout(READY_TIMEOUT)
            .keep_lines(usize::MAX)
            .echo(std::env::var_os("TESTKIT_ECHO").map(|_| format!("[{instance_id}] ")))
            .start()
            .await?;
        let mut service = Self {
            instance_id: instance_id.to_string(),
            admin_addr: String::new(),
            process,
        };
        service.read_admin_addr()?;
        Ok(service)
    }

    /// The admin address from the "service ready" line.
    fn read_admin_addr(&mut self) -> anyhow::Result<()> {
        let line = self.process.ready_line().unwrap_or_default();
        let parsed: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("ready line {line:?}"))?;
        self.admin_addr = parsed["admin_addr"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(())
    }

    /// Everything the process printed since it last started.
    pub fn logs(&self) -> Vec<String> {
        self.process.logs()
    }

    /// A receiver of every line printed from now on (see [`wait_for_line`]).
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.process.subscribe()
    }

    /// Waits for a log line containing `needle` (counting lines already printed).
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        self.process.wait_for_line(needle, timeout).await
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// SIGKILL: the process dies without any clean-up.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        self.process.kill9()
    }

    /// Sends SIGTERM (a graceful stop request).
    pub fn sigterm(&self) -> anyhow::Result<()> {
        self.process.sigterm()
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.process.wait_exit(timeout).await
    }

    /// Starts the same binary again with the same settings (and data directory).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.restart().await?;
        self.read_admin_addr()
    }
}

/// The binary `name` of another workspace crate (for tests that run several
/// services). `scripts/test.sh` builds every binary before the tests run; when
/// running one crate's tests alone, `cargo build --workspace --bins` first.
pub fn workspace_bin(name: &str) -> anyhow::Result<PathBuf> {
    let bin = shop_process::bin_dir()?.join(name);
    if !bin.exists() {
        anyhow::bail!(
            "{} is missing: run `cargo build --workspace --bins` (scripts/test.sh does)",
            bin.display()
        );
    }
    Ok(bin)
}
