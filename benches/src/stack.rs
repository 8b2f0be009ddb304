//! Starts what a benchmark needs and stops it again: a nats-server with the
//! project's configuration, service instances (release builds), the echo
//! responder, the HTTP gateway and the Express baseline.
//!
//! Every process gets its own log file under the run's log directory and is
//! considered up when it prints its readiness line (nats-server: `Server is
//! ready`; services: `"service ready"`, printed after the local state caught up
//! with the stream). Processes are stopped with SIGTERM (SIGKILL after 10 s)
//! when the stack is stopped or dropped, and get SIGTERM from the kernel if the
//! harness itself dies (Linux `PR_SET_PDEATHSIG`).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cpu::Watched;
use crate::machine::workspace_root;

/// How long a process may take to print its readiness line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// JetStream's `sync_interval` for a server the stack starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JetStreamSync {
    /// `nats/config/nats-server.conf`: fsync before every ack (what the project ships).
    Always,
    /// `nats/config/nats-server-dev.conf`: the server's default (every 2 minutes).
    Default,
}

impl JetStreamSync {
    pub fn name(self) -> &'static str {
        match self {
            JetStreamSync::Always => "always",
            JetStreamSync::Default => "default",
        }
    }

    fn config_file(self) -> &'static str {
        match self {
            JetStreamSync::Always => "nats-server.conf",
            JetStreamSync::Default => "nats-server-dev.conf",
        }
    }
}

/// Where the programs are.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Service binaries (`product-service` ...), `gateway` and `shop-bench`.
    pub bin_dir: PathBuf,
    pub nats_server: PathBuf,
    /// `nats/config/` of the workspace.
    pub nats_config_dir: PathBuf,
    /// `benches/baselines/express/` (with `node_modules` installed).
    pub express_dir: PathBuf,
    pub node: PathBuf,
    /// Each process writes `<name>.log` here.
    pub logs_dir: PathBuf,
    /// `RUST_LOG` of the services: quiet by default (per-request logging would
    /// be measured too), but the readiness line must get through.
    pub services_rust_log: String,
}

/// Default `RUST_LOG` for services under load (`BENCH_RUST_LOG` overrides).
pub const SERVICES_RUST_LOG: &str = "warn,shop_actors::service=info";
/// Default `RUST_LOG` of the gateway (`BENCH_GATEWAY_RUST_LOG` overrides):
/// its readiness line, not its access log.
pub const GATEWAY_RUST_LOG: &str = "warn,gateway=info,gateway::access=warn";

impl StackConfig {
    /// Binaries in `bin_dir`; nats-server from `NATS_SERVER_BIN`, the workspace's
    /// `.tools/bin`, or PATH; configs and baselines from the workspace.
    pub fn new(bin_dir: PathBuf, logs_dir: PathBuf) -> Self {
        let root = workspace_root();
        Self {
            bin_dir,
            nats_server: nats_server_bin(&root),
            nats_config_dir: root.join("nats/config"),
            express_dir: root.join("benches/baselines/express"),
            node: PathBuf::from("node"),
            logs_dir,
            services_rust_log: std::env::var("BENCH_RUST_LOG")
                .unwrap_or_else(|_| SERVICES_RUST_LOG.to_string()),
        }
    }

    /// The binary of a service, e.g. `product` → `<bin_dir>/product-service`.
    pub fn service_bin(&self, service: &str) -> PathBuf {
        self.bin_dir.join(format!("{service}-service"))
    }

    pub fn gateway_bin(&self) -> PathBuf {
        self.bin_dir.join("gateway")
    }

    pub fn shop_bench_bin(&self) -> PathBuf {
        self.bin_dir.join("shop-bench")
    }

    /// Whether the Express baseline can run (node and its modules installed).
    pub fn express_available(&self) -> bool {
        self.express_dir.join("node_modules/express").is_dir()
            && self
                .express_dir
                .join("node_modules/express-http-proxy")
                .is_dir()
    }
}

/// `NATS_SERVER_BIN`, else `<root>/.tools/bin/nats-server`, else `nats-server` on PATH.
pub fn nats_server_bin(root: &Path) -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let local = root.join(".tools/bin/nats-server");
    if local.exists() {
        return local;
    }
    PathBuf::from("nats-server")
}

/// A free TCP port on 127.0.0.1 (free when asked; taken by whoever binds first).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A process the stack started.
pub struct Proc {
    /// What it is for CPU accounting: `nats-server`, `product`, `echo`, `gateway` ...
    pub role: String,
    /// Unique name: `product-2`; its log is `<name>.log`.
    pub name: String,
    pub pid: u32,
    /// The line that announced readiness.
    pub ready_line: String,
    child: Child,
    log: PathBuf,
}

/// Everything one benchmark phase runs against.
pub struct Stack {
    pub config: StackConfig,
    data: tempfile::TempDir,
    procs: Vec<Proc>,
    nats_url: Option<String>,
    sync: Option<JetStreamSync>,
    started: usize,
}

/// What to start: program, arguments, environment, and the readiness line.
struct Spawn<'a> {
    role: &'a str,
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    /// Text of the line that announces readiness; `None`: ready once started
    /// (the caller then checks readiness its own way).
    ready: Option<&'a str>,
}

impl Stack {
    pub fn new(config: StackConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.logs_dir)
            .with_context(|| format!("creating {}", config.logs_dir.display()))?;
        Ok(Self {
            config,
            data: tempfile::Builder::new()
                .prefix("shop-bench-")
                .tempdir()
                .context("creating a data directory")?,
            procs: Vec::new(),
            nats_url: None,
            sync: None,
            started: 0,
        })
    }

    /// Uses a nats-server this stack did not start (it will not stop it).
    pub fn use_nats(&mut self, url: &str) {
        self.nats_url = Some(url.to_string());
    }

    pub fn nats_url(&self) -> Result<&str> {
        self.nats_url
            .as_deref()
            .context("no nats-server started in this stack")
    }

    pub fn sync(&self) -> Option<JetStreamSync> {
        self.sync
    }

    /// Instances of `role` running.
    pub fn count(&self, role: &str) -> usize {
        self.procs.iter().filter(|p| p.role == role).count()
    }

    /// Every process, for CPU accounting.
    pub fn watched(&self) -> Vec<Watched> {
        self.procs
            .iter()
            .map(|p| Watched {
                role: p.role.clone(),
                pid: p.pid,
            })
            .collect()
    }

    /// Starts nats-server with the project's configuration on free ports and a
    /// fresh store; returns its URL.
    pub async fn start_nats(&mut self, sync: JetStreamSync) -> Result<String> {
        if self.nats_url.is_some() {
            bail!("this stack already has a nats-server");
        }
        let config = self.config.nats_config_dir.join(sync.config_file());
        if !config.exists() {
            bail!("{} is missing", config.display());
        }
        let (port, monitor) = (free_port()?, free_port()?);
        let store = self.data.path().join("jetstream");
        let spawn = Spawn {
            role: "nats-server",
            name: "nats-server".to_string(),
            program: self.config.nats_server.clone(),
            args: vec![
                "-c".into(),
                config.display().to_string(),
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
                "-m".into(),
                monitor.to_string(),
            ],
            env: vec![("NATS_STORE_DIR".into(), store.display().to_string())],
            cwd: None,
            ready: Some("Server is ready"),
        };
        let program = self.config.nats_server.display().to_string();
        self.spawn(spawn)
            .await
            .with_context(|| format!("starting {program} (scripts/setup.sh installs it)"))?;
        let url = format!("nats://127.0.0.1:{port}");
        self.nats_url = Some(url.clone());
        self.sync = Some(sync);
        Ok(url)
    }

    /// Starts one more instance of `service` (`product`, `user`, `payment`,
    /// `notification`, `order`) and waits until it serves.
    pub async fn start_service(&mut self, service: &str, env: &[(&str, &str)]) -> Result<()> {
        let nats_url = self.nats_url()?.to_string();
        let n = self.count(service) + 1;
        let name = format!("{service}-{n}");
        let data_dir = self.data.path().join(&name);
        let mut vars: Vec<(String, String)> = vec![
            ("NATS_URL".into(), nats_url),
            ("INSTANCE_ID".into(), name.clone()),
            ("DATA_DIR".into(), data_dir.display().to_string()),
            ("ADMIN_ADDR".into(), "127.0.0.1:0".into()),
            ("LOG_FORMAT".into(), "json".into()),
            ("RUST_LOG".into(), self.config.services_rust_log.clone()),
        ];
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let spawn = Spawn {
            role: service,
            name,
            program: self.config.service_bin(service),
            args: Vec::new(),
            env: vars,
            cwd: None,
            ready: Some("\"service ready\""),
        };
        self.spawn(spawn).await.map(|_| ())
    }

    /// Starts the raw echo responder on `subject`, replying `reply_bytes` bytes.
    pub async fn start_echo(&mut self, subject: &str, reply_bytes: usize) -> Result<()> {
        let nats_url = self.nats_url()?.to_string();
        let spawn = Spawn {
            role: "echo",
            name: format!("echo-{}", self.count("echo") + 1),
            program: self.config.shop_bench_bin(),
            args: vec![
                "echo-server".into(),
                "--nats-url".into(),
                nats_url,
                "--subject".into(),
                subject.into(),
                "--queue".into(),
                "bench".into(),
                "--reply-bytes".into(),
                reply_bytes.to_string(),
            ],
            env: Vec::new(),
            cwd: None,
            ready: Some("echo-server: serving"),
        };
        self.spawn(spawn).await.map(|_| ())
    }

    /// Starts the HTTP gateway on a free port with `env` (e.g. its cache switch);
    /// returns its base URL. `role` names it for CPU accounting. Its per-client
    /// rate limit is off (one load generator is one client) and so is its
    /// per-request access log (as the services' request logs are).
    pub async fn start_gateway(&mut self, role: &str, env: &[(&str, &str)]) -> Result<String> {
        let nats_url = self.nats_url()?.to_string();
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let name = format!("{role}-{}", self.count(role) + 1);
        let mut vars: Vec<(String, String)> = vec![
            ("NATS_URL".into(), nats_url),
            ("GATEWAY_ADDR".into(), addr.clone()),
            ("INSTANCE_ID".into(), name.clone()),
            ("GATEWAY_RATE_LIMIT_PER_SEC".into(), "0".into()),
            ("LOG_FORMAT".into(), "json".into()),
            (
                "RUST_LOG".into(),
                std::env::var("BENCH_GATEWAY_RUST_LOG")
                    .unwrap_or_else(|_| GATEWAY_RUST_LOG.to_string()),
            ),
        ];
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let spawn = Spawn {
            role,
            name,
            program: self.config.gateway_bin(),
            args: Vec::new(),
            env: vars,
            cwd: None,
            ready: Some("\"service ready\""),
        };
        self.spawn(spawn).await?;
        wait_http(&addr, Duration::from_secs(30)).await?;
        Ok(format!("http://{addr}"))
    }

    /// Starts the Express product service and the express-http-proxy gateway in
    /// front of it (with `keep_alive`, reusing upstream connections instead of
    /// express-http-proxy's connection per request); returns the gateway's base URL.
    pub async fn start_express(&mut self, keep_alive: bool) -> Result<String> {
        if !self.config.express_available() {
            bail!(
                "the Express baseline is not installed: run `npm ci` in {}",
                self.config.express_dir.display()
            );
        }
        let (product_port, gateway_port) = (free_port()?, free_port()?);
        let dir = self.config.express_dir.clone();
        for (role, script, env) in [
            (
                "express-product",
                "product.js",
                vec![("PORT".to_string(), product_port.to_string())],
            ),
            (
                "express-gateway",
                "gateway.js",
                vec![
                    ("PORT".to_string(), gateway_port.to_string()),
                    (
                        "PRODUCT_URL".to_string(),
                        format!("127.0.0.1:{product_port}"),
                    ),
                    (
                        "UPSTREAM_KEEPALIVE".to_string(),
                        if keep_alive { "1" } else { "0" }.to_string(),
                    ),
                ],
            ),
        ] {
            let spawn = Spawn {
                role,
                name: role.to_string(),
                program: self.config.node.clone(),
                args: vec![dir.join(script).display().to_string()],
                env: env
                    .into_iter()
                    .chain([("NODE_ENV".into(), "production".into())])
                    .collect(),
                cwd: Some(dir.clone()),
                ready: Some("listening"),
            };
            self.spawn(spawn).await?;
        }
        Ok(format!("http://127.0.0.1:{gateway_port}"))
    }

    async fn spawn(&mut self, s: Spawn<'_>) -> Result<&Proc> {
        let mut log_path = self.config.logs_dir.join(format!("{}.log", s.name));
        if log_path.exists() {
            log_path = self
                .config
                .logs_dir
                .join(format!("{}-{}.log", s.name, self.started));
        }
        self.started += 1;
        let mut command = Command::new(&s.program);
        command
            .args(&s.args)
            .envs(s.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &s.cwd {
            command.current_dir(dir);
        }
        die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", s.program.display()))?;
        let log = Arc::new(Mutex::new(
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?,
        ));
        let (tx, rx) = mpsc::channel::<String>();
        let outputs: Vec<Box<dyn std::io::Read + Send>> = [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        for output in outputs {
            let (log, tx, ready) = (log.clone(), tx.clone(), s.ready.map(str::to_string));
            std::thread::spawn(move || {
                let mut announced = ready.is_none();
                for line in BufReader::new(output).lines().map_while(Result::ok) {
                    if let Ok(mut f) = log.lock() {
                        let _ = writeln!(f, "{line}");
                    }
                    if !announced && ready.as_deref().is_some_and(|r| line.contains(r)) {
                        announced = true;
                        let _ = tx.send(line);
                    }
                }
            });
        }
        if s.ready.is_none() {
            let _ = tx.send(String::new());
        }
        drop(tx);
        let pid = child.id();
        let waited = tokio::task::spawn_blocking(move || rx.recv_timeout(READY_TIMEOUT))
            .await
            .context("waiting for readiness")?;
        match waited {
            Ok(line) => {
                self.procs.push(Proc {
                    role: s.role.to_string(),
                    name: s.name,
                    pid,
                    ready_line: line,
                    child,
                    log: log_path,
                });
                self.procs.last().context("process just added")
            }
            Err(_) => {
                let status = child.try_wait().ok().flatten();
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} {} within {:?}; last lines of {}:\n{}",
                    s.name,
                    match status {
                        Some(st) => format!("exited ({st}) before it was ready"),
                        None => "did not become ready".to_string(),
                    },
                    READY_TIMEOUT,
                    log_path.display(),
                    log_tail(&log_path, 20)
                )
            }
        }
    }

    /// Fails with the log tail of any process that has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for p in &mut self.procs {
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!(
                    "{} exited ({status}); last lines of {}:\n{}",
                    p.name,
                    p.log.display(),
                    log_tail(&p.log, 20)
                );
            }
        }
        Ok(())
    }

    /// Stops every process of `role` (newest first).
    pub async fn stop_role(&mut self, role: &str) {
        let (stop, keep): (Vec<Proc>, Vec<Proc>) = std::mem::take(&mut self.procs)
            .into_iter()
            .partition(|p| p.role == role);
        self.procs = keep;
        for p in stop.into_iter().rev() {
            stop_proc(p).await;
        }
    }

    /// Stops everything, newest first (services before the nats-server).
    pub async fn stop(&mut self) {
        while let Some(p) = self.procs.pop() {
            stop_proc(p).await;
        }
        self.nats_url = None;
    }
}

impl Drop for Stack {
    /// Stops what is still running, newest first, each before the next, so
    /// services finish their graceful stop while the nats-server is still up.
    fn drop(&mut self) {
        while let Some(mut p) = self.procs.pop() {
            terminate(p.pid);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(p.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

fn terminate(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: sending a signal to a child this stack started and has not reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

async fn stop_proc(mut p: Proc) {
    terminate(p.pid);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while matches!(p.child.try_wait(), Ok(None)) {
        if Instant::now() >= deadline {
            eprintln!(
                "stack: {} did not stop in {STOP_TIMEOUT:?}; killing it",
                p.name
            );
            let _ = p.child.kill();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = p.child.wait();
}

#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until something accepts TCP connections at `addr`.
async fn wait_http(addr: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                bail!("nothing listens on {addr} after {timeout:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> StackConfig {
        StackConfig::new(dir.join("bin"), dir.join("logs"))
    }

    #[tokio::test]
    async fn a_process_that_exits_before_ready_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut stack = Stack::new(config(dir.path())).unwrap();
        let err = stack
            .spawn(Spawn {
                role: "sh",
                name: "sh".into(),
                program: "sh".into(),
                args: vec!["-c".into(), "echo starting; echo broken >&2; exit 3".into()],
                env: Vec::new(),
                cwd: None,
                ready: Some("never printed"),
            })
            .await
            .err()
            .unwrap();
        let text = format!("{err:#}");
        assert!(text.contains("exited"), "{text}");
        assert!(text.contains("broken"), "{text}");
        assert_eq!(stack.count("sh"), 0);
    }

    #[tokio::test]
    async fn ready_processes_are_stopped_with_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let mut stack = Stack::new(config(dir.path())).unwrap();
        let pid = stack
            .spawn(Spawn {
                role: "sleeper",
                name: "sleeper".into(),
                program: "sh".into(),
                args: vec!["-c".into(), "echo up and ready; exec sleep 60".into()],
                env: Vec::new(),
                cwd: None,
                ready: Some("ready"),
            })
            .await
            .unwrap()
            .pid;
        assert_eq!(stack.count("sleeper"), 1);
        assert_eq!(stack.watched()[0].pid, pid);
        stack.check_alive().unwrap();
        let started = Instant::now();
        stack.stop_role("sleeper").await;
        assert!(
            started.elapsed() < STOP_TIMEOUT,
            "stopped by SIGTERM, not the timeout"
        );
        assert_eq!(stack.count("sleeper"), 0);
        assert!(
            crate::cpu::cpu_ticks(pid).is_none(),
            "process {pid} is gone"
        );
        let log = std::fs::read_to_string(dir.path().join("logs/sleeper.log")).unwrap();
        assert_eq!(log, "up and ready\n");
    }
}
