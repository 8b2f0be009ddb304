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
    /// connects as its own identity, from the binary's name. The user and order
    /// services get a data key ([`data_key_env`]) unless `extra_env` names one.
    pub async fn start(
        bin: &Path,
        nats_url: &str,
        instance_id: &str,
        data_dir: &Path,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        // testkit data keys: see data_key_env.
        let data_key = data_key_env(bin, data_dir, extra_env)?;
        let process = Spec::new(instance_id, bin)
            .envs([
                ("NATS_URL", nats_url),
                ("INSTANCE_ID", instance_id),
                ("LOG_FORMAT", "json"),
                ("ADMIN_ADDR", "127.0.0.1:0"),
                ("RUST_LOG", "info"),
            ])
            .env("DATA_DIR", data_dir)
            // Auth (issue #13, the bus): NATS_CREDS of the binary's identity.
            .env_remove("NATS_CREDS")
            .envs(crate::nats_server::service_auth_env(nats_url, bin))
            .envs(data_key)
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

    /// A field of the "service ready" line (e.g. the gateway's `addr`).
    pub fn ready_field(&self, name: &str) -> Option<String> {
        let line = self.process.ready_line()?;
        let parsed: serde_json::Value = serde_json::from_str(line).ok()?;
        parsed[name].as_str().map(str::to_string)
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

// ---- testkit data keys (secrets at rest) -------------------------------------

/// The data key a service binary needs (`USER_DATA_KEY` for `user-service`,
/// `ORDER_DATA_KEY` for `order-service`), as `<NAME>_FILE` naming a key file in
/// the test's data directory (the parent of `data_dir`, which every instance
/// of a test shares): made once, with 32 random bytes, and kept, so every
/// instance of the test, restarted or not, seals and opens with the same key.
/// Nothing when the binary needs none or `extra_env` sets one.
pub fn data_key_env(
    bin: &Path,
    data_dir: &Path,
    extra_env: &[(&str, &str)],
) -> anyhow::Result<Vec<(String, String)>> {
    let service = bin
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix("-service"))
        .unwrap_or_default();
    let name = match service {
        "user" => "USER_DATA_KEY",
        "order" => "ORDER_DATA_KEY",
        _ => return Ok(Vec::new()),
    };
    let file_var = format!("{name}_FILE");
    if extra_env.iter().any(|(k, _)| *k == name || *k == file_var) {
        return Ok(Vec::new());
    }
    let dir = data_dir.parent().unwrap_or(data_dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{service}-data.key"));
    if !path.exists() {
        use base64::Engine;
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        let text = base64::engine::general_purpose::STANDARD.encode(bytes) + "\n";
        // Written aside, then linked in place: instances starting together
        // all end up with the first one's key, never a half-written file.
        let aside = dir.join(format!(
            ".{service}-data.key.{}.{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::write(&aside, text).with_context(|| format!("writing {}", aside.display()))?;
        let linked = std::fs::hard_link(&aside, &path);
        let _ = std::fs::remove_file(&aside);
        if let Err(e) = linked {
            anyhow::ensure!(path.exists(), "creating {}: {e}", path.display());
        }
    }
    Ok(vec![(file_var, path.display().to_string())])
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
