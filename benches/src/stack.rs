//! Starts what a benchmark needs through `shop-process`, and stops it again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use shop_process::{free_port, workspace_root, NatsServer, Process, Spec, Stopped};

use crate::cpu::Watched;
use crate::scenarios::Target;

/// How long a process may take to print its readiness line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// JetStream's `sync_interval` for a server the stack starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JetStreamSync {
    /// `sync_interval: always` (nats/config/nats-server.conf, what the project ships).
    Always,
    /// JetStream's default, every 2 minutes (nats/config/nats-server-dev.conf).
    Default,
}

impl JetStreamSync {
    /// Its command-line name: `always` or `default`.
    pub fn name(self) -> String {
        let value = clap::ValueEnum::to_possible_value(&self);
        value.map_or_else(String::new, |v| v.get_name().to_string())
    }

    /// What it adds to a server's `jetstream { }` block.
    fn config_line(self) -> &'static str {
        match self {
            JetStreamSync::Always => ", sync_interval: always",
            JetStreamSync::Default => "",
        }
    }
}

/// Where the programs are.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Service binaries (`product-service` ...), `gateway`, `shop` and `shop-bench`.
    pub bin_dir: PathBuf,
    pub nats_server: PathBuf,
    /// `benches/baselines/express/` (with `node_modules` installed).
    pub express_dir: PathBuf,
    pub node: PathBuf,
    /// Each process writes `<name>.log` here.
    pub logs_dir: PathBuf,
    /// `RUST_LOG` of the services: quiet, but lets the readiness line through.
    pub services_rust_log: String,
    /// NATS auth on (as shipped: `shop auth init`), or off to measure its cost.
    pub auth: bool,
    /// Nodes of the NATS cluster to start (0 or 1: one server).
    pub nats_cluster: usize,
}

/// Default `RUST_LOG` for services under load (`BENCH_RUST_LOG` overrides).
pub const SERVICES_RUST_LOG: &str = "warn,shop_actors::service=info";
/// Default `RUST_LOG` of the gateway (`BENCH_GATEWAY_RUST_LOG` overrides).
pub const GATEWAY_RUST_LOG: &str = "warn,gateway=info,gateway::access=warn";

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

impl StackConfig {
    /// Binaries in `bin_dir`; nats-server and the baseline found in the workspace.
    pub fn new(bin_dir: PathBuf, logs_dir: PathBuf) -> Self {
        let root = workspace_root();
        let nats_server = shop_process::nats_server_bin(&root);
        Self {
            bin_dir,
            nats_server: nats_server.unwrap_or_else(|_| PathBuf::from("nats-server")),
            express_dir: root.join("benches/baselines/express"),
            node: PathBuf::from("node"),
            logs_dir,
            services_rust_log: env_or("BENCH_RUST_LOG", SERVICES_RUST_LOG),
            auth: true,
            nats_cluster: 1,
        }
    }

    /// The binary of a service, e.g. `product` → `<bin_dir>/product-service`.
    pub fn service_bin(&self, service: &str) -> PathBuf {
        self.bin_dir.join(format!("{service}-service"))
    }

    pub fn gateway_bin(&self) -> PathBuf {
        self.bin_dir.join("gateway")
    }

    /// Whether the Express baseline can run (its modules installed).
    pub fn express_available(&self) -> bool {
        let modules = self.express_dir.join("node_modules");
        modules.join("express").is_dir() && modules.join("express-http-proxy").is_dir()
    }
}

/// A process the stack started, under its role for CPU accounting.
struct Member {
    role: String,
    process: Process,
}

/// Everything one benchmark phase runs against.
pub struct Stack {
    pub config: StackConfig,
    data: tempfile::TempDir,
    members: Vec<Member>,
    /// Every node's URL, comma-separated (the services' `NATS_URL`).
    nats_url: Option<String>,
    /// Where the load generator connects: the server, or a cluster's first node.
    client_url: Option<String>,
    /// The monitoring address (`host:port`) of the server the load generator uses.
    monitor: Option<String>,
    sync: Option<JetStreamSync>,
    /// A user instance started for a product's seeding: the next one asked for.
    implicit_user: bool,
    /// The auth directory of the nats-server this stack started with auth.
    auth_dir: Option<PathBuf>,
}

impl Stack {
    pub fn new(config: StackConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.logs_dir)
            .with_context(|| format!("creating {}", config.logs_dir.display()))?;
        let data = tempfile::Builder::new().prefix("shop-bench-").tempdir();
        Ok(Self {
            config,
            data: data.context("creating a data directory")?,
            members: Vec::new(),
            nats_url: None,
            client_url: None,
            monitor: None,
            sync: None,
            implicit_user: false,
            auth_dir: None,
        })
    }

    /// Uses a nats-server this stack did not start (it will not stop it).
    pub fn use_nats(&mut self, url: &str) {
        self.nats_url = Some(url.to_string());
    }

    /// Where the load generator connects.
    pub fn nats_url(&self) -> Result<&str> {
        let url = self.client_url.as_deref().or(self.nats_url.as_deref());
        url.context("no nats-server started in this stack")
    }

    /// Instances of `role` running.
    pub fn count(&self, role: &str) -> usize {
        self.members.iter().filter(|m| m.role == role).count()
    }

    /// What a scenario runs against here, with `instances` of its service.
    pub fn target(&self, instances: Option<usize>) -> Result<Target> {
        let nodes = self.count("nats-server");
        Ok(Target {
            nats_url: self.nats_url()?.to_string(),
            http_url: None,
            watched: self.watched(),
            instances,
            monitor: self.monitor.clone(),
            nats_sync: self.sync.map(|s| match nodes {
                0 | 1 => s.name().to_string(),
                n => format!("{}-cluster{n}", s.name()),
            }),
        })
    }

    /// Every process, for CPU accounting.
    pub fn watched(&self) -> Vec<Watched> {
        let watched = self.members.iter().map(|m| {
            let role = m.role.clone();
            m.process.pid().map(|pid| Watched { role, pid })
        });
        watched.flatten().collect()
    }

    /// `<logs_dir>/<name>.log`, or `<name>-<n>.log` when that one is taken.
    fn log_file(&self, name: &str) -> PathBuf {
        let path = self.config.logs_dir.join(format!("{name}.log"));
        match path.exists() {
            true => (self.config.logs_dir).join(format!("{name}-{}.log", self.members.len())),
            false => path,
        }
    }

    /// Every process's log file, readiness timeout and death with the harness.
    fn runs(&self, spec: Spec) -> Spec {
        let log = self.log_file(spec.name());
        spec.log_file(log)
            .ready_timeout(READY_TIMEOUT)
            .die_with_parent()
    }

    async fn start(&mut self, role: &str, spec: Spec) -> Result<()> {
        let process = self.runs(spec).start().await?;
        self.add(role, process);
        Ok(())
    }

    fn add(&mut self, role: &str, process: Process) {
        let role = role.to_string();
        self.members.push(Member { role, process });
    }

    /// Starts nats-server or `nats_cluster` nodes; returns every URL, comma-separated.
    pub async fn start_nats(&mut self, sync: JetStreamSync) -> Result<String> {
        if self.nats_url.is_some() {
            bail!("this stack already has a nats-server");
        }
        let n = self.config.nats_cluster.max(1);
        let auth_dir = self.config.auth.then(|| self.auth_init()).transpose()?;
        crate::nats::use_credentials(auth_dir.as_ref().map(|d| d.join("operator.creds")));
        let config_dir = (auth_dir.clone()).unwrap_or_else(|| self.data.path().to_path_buf());
        let route_ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_>>()?;
        let route = |p: &u16| format!("nats-route://127.0.0.1:{p}");
        let routes: Vec<String> = route_ports.iter().map(route).collect();
        let mut urls = Vec::new();
        let mut monitors = Vec::new();
        for (i, route_port) in route_ports.iter().enumerate() {
            let name = match n {
                1 => "nats-server".to_string(),
                _ => format!("nats-n{}", i + 1),
            };
            let mut text = format!(
                "max_payload: 8MB\njetstream {{ store_dir: $NATS_STORE_DIR{} }}\n",
                sync.config_line()
            );
            if n > 1 {
                text += &format!(
                    "server_name: n{}\ncluster {{ name: bench, listen: 127.0.0.1:{route_port}, routes: [{}] }}\n",
                    i + 1,
                    routes.join(", ")
                );
            }
            if auth_dir.is_some() {
                text += "include auth.conf\n";
            }
            let monitor_port = free_port()?;
            let nats = NatsServer::new(&config_dir)
                .name(&name)
                .config_text(text)
                .bin(&self.config.nats_server)
                .monitor_port(monitor_port)
                .store_dir(self.data.path().join(format!("jetstream-{name}")))
                .process(|p| self.runs(p))
                .start()
                .await
                .with_context(|| format!("starting {name}"))?;
            urls.push(nats.url());
            monitors.push(format!("127.0.0.1:{monitor_port}"));
            self.add("nats-server", nats.process);
        }
        self.auth_dir = auth_dir;
        wait_for_jetstream(&urls[0]).await?;
        let url = urls.join(",");
        self.nats_url = Some(url.clone());
        self.client_url = Some(urls.swap_remove(0));
        self.monitor = Some(monitors.swap_remove(0));
        self.sync = Some(sync);
        Ok(url)
    }

    /// Runs `shop auth init <data>/auth` (the `shop` next to the services).
    fn auth_init(&self) -> Result<PathBuf> {
        let dir = self.data.path().join("auth");
        let shop = self.config.bin_dir.join("shop");
        let mut init = std::process::Command::new(&shop);
        let output = init.args(["auth", "init"]).arg(&dir).output();
        let output = output.with_context(|| format!("running {} auth init", shop.display()))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            bail!("shop auth init failed: {stderr}");
        }
        Ok(dir)
    }

    /// `name` running `program` on this stack's NATS as `identity`, logging at `log`.
    fn nats_spec(&self, name: &str, program: PathBuf, identity: &str, log: &str) -> Result<Spec> {
        let url = self.nats_url.as_deref();
        let url = url.context("no nats-server started in this stack")?;
        let replicas = self.config.nats_cluster.clamp(1, 5).to_string();
        let creds =
            (self.auth_dir.iter()).map(|d| ("NATS_CREDS", d.join(format!("{identity}.creds"))));
        Ok(Spec::new(name, program)
            .envs([
                ("NATS_URL", url),
                ("JS_REPLICAS", &replicas),
                ("INSTANCE_ID", name),
            ])
            .envs([("LOG_FORMAT", "json"), ("RUST_LOG", log)])
            .env_remove("NATS_CREDS")
            .envs(creds)
            .ready_line("\"service ready\""))
    }

    /// Starts one more instance of `service` (a product one brings a user one, for the admin).
    pub async fn start_service(&mut self, service: &str, env: &[(&str, &str)]) -> Result<()> {
        if service == "product" && self.count("user") == 0 {
            Box::pin(self.start_service("user", &[])).await?;
            self.implicit_user = true;
        } else if service == "user" && std::mem::take(&mut self.implicit_user) {
            return Ok(());
        }
        let name = format!("{service}-{}", self.count(service) + 1);
        let bin = self.config.service_bin(service);
        let mut spec = self
            .nats_spec(&name, bin, service, &self.config.services_rust_log)?
            .env("ADMIN_ADDR", "127.0.0.1:0")
            .env("DATA_DIR", self.data.path().join(&name));
        // Secrets at rest: the user and order services need their data keys.
        if matches!(service, "user" | "order") {
            let path = self.data.path().join(format!("{service}-data.key"));
            if !path.exists() {
                let key = shop_nats::sealed::DataKey::generate_text();
                std::fs::write(&path, key + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            spec = spec.env(format!("{}_DATA_KEY_FILE", service.to_uppercase()), path);
        }
        if service == "user" {
            let (email, pass) = crate::seed::admin_credentials();
            spec = spec.env("ADMIN_EMAIL", email).env("ADMIN_PASSWORD", pass);
        }
        self.start(service, spec.envs(env.iter().copied())).await
    }

    /// Starts the raw echo responder on `subject`, replying `reply_bytes` bytes.
    pub async fn start_echo(&mut self, subject: &str, reply_bytes: usize) -> Result<()> {
        let name = format!("echo-{}", self.count("echo") + 1);
        let bin = self.config.bin_dir.join("shop-bench");
        let spec = (self.nats_spec(&name, bin, "operator", "")?)
            .args(["echo-server", "--nats-url", self.nats_url()?])
            .args(["--subject", subject, "--queue", "bench", "--reply-bytes"])
            .arg(reply_bytes.to_string())
            .ready_line("echo-server: serving");
        self.start("echo", spec).await
    }

    /// Starts the HTTP gateway as `role` with `env`, without rate limit; returns its URL.
    pub async fn start_gateway(&mut self, role: &str, env: &[(&str, &str)]) -> Result<String> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let name = format!("{role}-{}", self.count(role) + 1);
        let rust_log = env_or("BENCH_GATEWAY_RUST_LOG", GATEWAY_RUST_LOG);
        let spec = (self.nats_spec(&name, self.config.gateway_bin(), "gateway", &rust_log)?)
            .envs([
                ("GATEWAY_ADDR", &*addr),
                ("GATEWAY_RATE_LIMIT_PER_SEC", "0"),
            ])
            .envs(env.iter().copied());
        // It binds its address before it logs that it is ready.
        self.start(role, spec).await?;
        Ok(format!("http://{addr}"))
    }

    /// Starts the Express product service and gateway (`keep_alive` upstream); its URL.
    pub async fn start_express(&mut self, keep_alive: bool) -> Result<String> {
        let dir = self.config.express_dir.clone();
        if !self.config.express_available() {
            let dir = dir.display();
            bail!("the Express baseline is not installed: run `npm ci` in {dir}");
        }
        let (product_port, gateway_port) = (free_port()?.to_string(), free_port()?.to_string());
        let url = format!("http://127.0.0.1:{gateway_port}");
        let proxy = [
            ("PRODUCT_URL", format!("127.0.0.1:{product_port}")),
            ("UPSTREAM_KEEPALIVE", u8::from(keep_alive).to_string()),
        ];
        let product = ("express-product", "product.js", product_port, &[][..]);
        let gateway = ("express-gateway", "gateway.js", gateway_port, &proxy[..]);
        for (role, script, port, env) in [product, gateway] {
            let spec = Spec::new(role, &self.config.node)
                .arg(dir.join(script))
                .envs([("PORT", port), ("NODE_ENV", "production".into())])
                .envs(env.iter().cloned())
                .current_dir(&dir)
                .ready_line("listening");
            self.start(role, spec).await?;
        }
        Ok(url)
    }

    /// Fails with the log tail of any process that has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for m in &mut self.members {
            if let Some(status) = m.process.try_exit() {
                let log = m.process.log_file().unwrap_or(Path::new("")).display();
                let (name, tail) = (m.process.name(), m.process.tail(20));
                bail!("{name} exited ({status}); last lines of {log}:\n{tail}");
            }
        }
        Ok(())
    }

    /// Stops every process of `role` (newest first).
    pub async fn stop_role(&mut self, role: &str) {
        let members = std::mem::take(&mut self.members);
        let (stop, keep) = members.into_iter().partition(|m| m.role == role);
        self.members = keep;
        for m in stop.into_iter().rev() {
            stop_member(m).await;
        }
    }

    /// Stops everything, newest first (services before the nats-server).
    pub async fn stop(&mut self) {
        while let Some(m) = self.members.pop() {
            stop_member(m).await;
        }
        self.nats_url = None;
        self.client_url = None;
        self.monitor = None;
        self.auth_dir = None;
    }
}

/// Waits until the cluster at `url` answers JetStream requests (its leader is elected).
async fn wait_for_jetstream(url: &str) -> Result<()> {
    let client = crate::nats::connect(url, "shop-bench-stack", Duration::from_secs(2)).await?;
    let js = async_nats::jetstream::new(client);
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        match js.query_account().await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                bail!("the NATS cluster's JetStream is not ready: {e}")
            }
            // The election is inside the servers: nothing to await but its outcome.
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

impl Drop for Stack {
    /// Stops what is still running, newest first (services before the nats-server).
    fn drop(&mut self) {
        while let Some(mut m) = self.members.pop() {
            let _ = m.process.stop_blocking(STOP_TIMEOUT);
        }
    }
}

async fn stop_member(mut m: Member) {
    let stopped = m.process.stop(STOP_TIMEOUT).await;
    let name = m.process.name();
    match stopped {
        Ok(Stopped::Killed) => {
            eprintln!("stack: {name} did not stop in {STOP_TIMEOUT:?}; killed it")
        }
        Err(e) => eprintln!("stack: stopping {name}: {e:#}"),
        Ok(_) => {}
    }
}
