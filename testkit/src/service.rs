//! A service binary running as its own process, as in production.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context};
use tokio::sync::broadcast;

pub struct ServiceProcess {
    pub instance_id: String,
    pub admin_addr: String,
    bin: PathBuf,
    env: HashMap<String, String>,
    child: Option<Child>,
    logs: Arc<Mutex<Vec<String>>>,
    lines: broadcast::Sender<String>,
}

impl ServiceProcess {
    /// Starts `bin` with `NATS_URL`, `INSTANCE_ID`, `DATA_DIR` and JSON logs, and
    /// waits for its "service ready" log line.
    pub async fn start(
        bin: &Path,
        nats_url: &str,
        instance_id: &str,
        data_dir: &Path,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut env: HashMap<String, String> = [
            ("NATS_URL", nats_url),
            ("INSTANCE_ID", instance_id),
            ("LOG_FORMAT", "json"),
            ("ADMIN_ADDR", "127.0.0.1:0"),
            ("RUST_LOG", "info"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.insert("DATA_DIR".into(), data_dir.display().to_string());
        for (k, v) in extra_env {
            env.insert(k.to_string(), v.to_string());
        }
        let (lines, _) = broadcast::channel(4096);
        let mut process = Self {
            instance_id: instance_id.to_string(),
            admin_addr: String::new(),
            bin: bin.to_path_buf(),
            env,
            child: None,
            logs: Arc::default(),
            lines,
        };
        process.spawn().await?;
        Ok(process)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut ready = self.lines.subscribe();
        let mut child = Command::new(&self.bin)
            .envs(&self.env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let (logs, lines, id) = (
                self.logs.clone(),
                self.lines.clone(),
                self.instance_id.clone(),
            );
            let echo = std::env::var("TESTKIT_ECHO").is_ok();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if echo {
                        eprintln!("[{id}] {line}");
                    }
                    if let Ok(mut logs) = logs.lock() {
                        logs.push(line.clone());
                    }
                    let _ = lines.send(line);
                }
            });
        }
        self.child = Some(child);
        let line = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match ready.recv().await {
                    Ok(line) if line.contains("\"service ready\"") => return Ok(line),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => bail!("log channel closed"),
                }
            }
        })
        .await;
        let line = match line {
            Ok(Ok(line)) => line,
            _ => bail!(
                "{} did not become ready:\n{}",
                self.instance_id,
                self.logs().join("\n")
            ),
        };
        let parsed: serde_json::Value = serde_json::from_str(&line)?;
        self.admin_addr = parsed["admin_addr"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(())
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// A receiver of every line printed from now on (see [`wait_for_line`]).
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.lines.subscribe()
    }

    /// Waits for a log line containing `needle` (counting lines already printed).
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let mut rx = self.lines.subscribe();
        if let Some(line) = self.logs().into_iter().find(|l| l.contains(needle)) {
            return Ok(line);
        }
        wait_for_line(&mut rx, needle, timeout).await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL: the process dies without any clean-up.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("kill -9")?;
            child.wait()?;
        }
        Ok(())
    }

    /// Sends SIGTERM (a graceful stop request).
    pub fn sigterm(&self) -> anyhow::Result<()> {
        let pid = self.pid().context("process not running")?;
        if unsafe { libc::kill(pid as i32, libc::SIGTERM) } != 0 {
            bail!("kill -TERM {pid} failed");
        }
        Ok(())
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("process not running")?;
        tokio::time::timeout(timeout, tokio::task::spawn_blocking(move || child.wait()))
            .await
            .context("process did not exit in time")??
            .context("waiting for exit")
    }

    /// Starts the same binary again with the same settings (and data directory).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("still running");
        }
        self.logs.lock().map(|mut l| l.clear()).ok();
        self.spawn().await
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for a line containing `needle` on a receiver from [`ServiceProcess::subscribe`].
pub async fn wait_for_line(
    rx: &mut broadcast::Receiver<String>,
    needle: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    tokio::time::timeout(timeout, async {
        loop {
            match rx.recv().await {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => bail!("log channel closed"),
            }
        }
    })
    .await
    .with_context(|| format!("no log line containing {needle:?} within {timeout:?}"))?
}

/// The binary `name` of another workspace crate (for tests that run several
/// services). `scripts/test.sh` builds every binary before the tests run; when
/// running one crate's tests alone, `cargo build --workspace --bins` first.
pub fn workspace_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test binary")?;
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary is not under target/<profile>/deps")?;
    let bin = dir.join(name);
    if !bin.exists() {
        bail!(
            "{} is missing: run `cargo build --workspace --bins` (scripts/test.sh does)",
            bin.display()
        );
    }
    Ok(bin)
}
