//! A nats-server process with JetStream, for one test.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{bail, Context};

/// The nats-server binary: `NATS_SERVER_BIN`, else `.tools/bin/nats-server`
/// (installed by scripts/setup.sh), else `nats-server` on PATH.
pub fn nats_server_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("NATS_SERVER_BIN") {
        if !bin.is_empty() {
            return PathBuf::from(bin);
        }
    }
    let local = crate::workspace_root().join(".tools/bin/nats-server");
    if local.exists() {
        return local;
    }
    PathBuf::from("nats-server")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

pub struct NatsServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free port with JetStream in a temporary directory.
    pub async fn start() -> anyhow::Result<Self> {
        let mut server = Self {
            port: free_port()?,
            dir: tempfile::tempdir().context("creating nats store dir")?,
            child: None,
        };
        server.spawn().await?;
        Ok(server)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let config = self.dir.path().join("nats-server.conf");
        let store = self.dir.path().join("jetstream");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{}\nmax_payload: 8MB\njetstream {{ store_dir: {:?} }}\n",
                self.port, store
            ),
        )?;
        let bin = nats_server_bin();
        let mut child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (run scripts/setup.sh to install it)",
                    bin.display()
                )
            })?;
        let stderr = child.stderr.take().context("nats-server stderr")?;
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        let port = self.port;
        tokio::task::spawn_blocking(move || {
            let mut seen = Vec::new();
            loop {
                match rx.recv_timeout(Duration::from_secs(15)) {
                    Ok(line) if line.contains("Server is ready") => {
                        // Keep draining so the server never blocks on a full pipe.
                        std::thread::spawn(move || while rx.recv().is_ok() {});
                        return Ok(());
                    }
                    Ok(line) => seen.push(line),
                    Err(_) => bail!(
                        "nats-server on port {port} did not become ready:\n{}",
                        seen.join("\n")
                    ),
                }
            }
        })
        .await?
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        async_nats::connect(self.url())
            .await
            .with_context(|| format!("connecting to {}", self.url()))
    }

    /// Stops the server (SIGTERM, then waits for it to exit).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            child.wait().context("waiting for nats-server to exit")?;
        }
        Ok(())
    }

    /// Stops and starts the server again on the same port with the same store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.spawn().await
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
