//! Starts what a benchmark needs and stops it again: a nats-server with the
//! project's configuration, service instances (release builds), the echo
//! responder, the HTTP gateway and the Express baseline, all through
//! `shop-process`.
//!
//! With `nats_cluster` > 1 (`shop-bench ... --nats-cluster 3`) the stack starts that many clustered nats-servers
//! instead of one (as `shop up --nats-cluster` does: routes on loopback, a store
//! each, the same auth) and gives the services every URL and `JS_REPLICAS`;
//! the load generator's clients connect to the first node.
//!
//! Every process gets its own log file under the run's log directory and is
//! considered up when it prints its readiness line (nats-server: `Server is
//! ready`; services: `"service ready"`, printed after the local state caught up
//! with the stream). Processes are stopped with SIGTERM (SIGKILL after 10 s)
//! when the stack is stopped or dropped, and get SIGTERM from the kernel if the
//! harness itself dies (Linux `PR_SET_PDEATHSIG`).

use std::path::PathBuf;
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
    /// NATS auth on (as shipped: `shop auth init`, every process on its own
    /// identity, the load generator as operator), or off to measure its cost.
    pub auth: bool,
    /// Nodes of the NATS cluster to start (0 or 1: one server).
    pub nats_cluster: usize,
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
            nats_server: shop_process::nats_server_bin(&root)
                .unwrap_or_else(|_| PathBuf::from("nats-server")),
            nats_config_dir: root.join("nats/config"),
            express_dir: root.join("benches/baselines/express"),
            node: PathBuf::from("node"),
            logs_dir,
            services_rust_log: std::env::var("BENCH_RUST_LOG")
                .unwrap_or_else(|_| SERVICES_RUST_LOG.to_string()),
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

    /// Whether the Express baseline can run (node and its modules installed).
    pub fn express_available(&self) -> bool {
        let modules = self.express_dir.join("node_modules");
        modules.join("express").is_dir() && modules.join("express-http-proxy").is_dir()
    }
}

/// A process the stack started, under its role for CPU accounting
/// (`nats-server`, `product`, `echo`, `gateway` ...).
struct Member {
    role: String,
    process: Process,
}

/// Everything one benchmark phase runs against.
pub struct Stack {
    pub config: StackConfig,
    data: tempfile::TempDir,
    members: Vec<Member>,
    nats_url: Option<String>,
    /// Where the load generator connects: the server, or a cluster's first node.
    client_url: Option<String>,
    sync: Option<JetStreamSync>,
    /// A user instance started for a product instance's seeding, not yet
    /// asked for: the next request for a user instance is this one.
    implicit_user: bool,
    /// The auth directory of the nats-server this stack started with auth.
    auth_dir: Option<PathBuf>,
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
            members: Vec::new(),
            nats_url: None,
            client_url: None,
            sync: None,
            implicit_user: false,
            auth_dir: None,
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
        self.members.iter().filter(|m| m.role == role).count()
    }

    /// What a scenario runs against here, with `instances` of its service.
    pub fn target(&self, instances: Option<usize>) -> Result<Target> {
        let nats_url = match &self.client_url {
            Some(url) => url.clone(),
            None => self.nats_url()?.to_string(),
        };
        let nodes = self.count("nats-server");
        Ok(Target {
            nats_url,
            http_url: None,
            watched: self.watched(),
            instances,
            nats_sync: self.sync.map(|s| match nodes {
                0 | 1 => s.name().to_string(),
                n => format!("{}-cluster{n}", s.name()),
            }),
        })
    }

    /// `JS_REPLICAS` for the services: the cluster's size (at most 5), else 1.
    fn js_replicas(&self) -> String {
        match self.config.nats_cluster {
            0 | 1 => "1".to_string(),
            n => n.min(5).to_string(),
        }
    }

    /// Every process, for CPU accounting.
    pub fn watched(&self) -> Vec<Watched> {
        let pids = self
            .members
            .iter()
            .filter_map(|m| Some((m, m.process.pid()?)));
        pids.map(|(m, pid)| Watched {
            role: m.role.clone(),
            pid,
        })
        .collect()
    }

    /// `<logs_dir>/<name>.log`, or `<name>-<n>.log` when that one is taken.
    fn log_file(&self, name: &str) -> PathBuf {
        let path = self.config.logs_dir.join(format!("{name}.log"));
        if !path.exists() {
            return path;
        }
        let n = self.members.len();
        self.config.logs_dir.join(format!("{name}-{n}.log"))
    }

    /// Starts `spec` (as `role`) with the stack's log file, readiness timeout
    /// and death with the harness.
    async fn start(&mut self, role: &str, spec: Spec) -> Result<()> {
        let log = self.log_file(spec.name());
        let process = spec
            .log_file(log)
            .ready_timeout(READY_TIMEOUT)
            .die_with_parent()
            .start()
            .await?;
        self.members.push(Member {
            role: role.to_string(),
            process,
        });
        Ok(())
    }

    /// Starts nats-server with the project's configuration on free ports and a
    /// fresh store; returns its URL.
    pub async fn start_nats(&mut self, sync: JetStreamSync) -> Result<String> {
        if self.nats_url.is_some() {
            bail!("this stack already has a nats-server");
        }
        if self.config.nats_cluster > 1 {
            return self.start_nats_cluster(sync).await;
        }
        let config = self.config.nats_config_dir.join(sync.config_file());
        if !config.exists() {
            bail!("{} is missing", config.display());
        }
        let log = self.log_file("nats-server");
        let mut nats = NatsServer::new(self.data.path()).config_file(config);
        if self.config.auth {
            let dir = self.auth_init()?;
            nats = match sync {
                JetStreamSync::Always => nats.config_file(dir.join("nats-server.conf")),
                // The same auth, included, with JetStream's default sync. An
                // include is read relative to the config file, which is
                // written next to the auth directory.
                JetStreamSync::Default => nats.config_text(format!(
                    "max_payload: 8MB\njetstream {{ store_dir: $NATS_STORE_DIR }}\ninclude {}/auth.conf\n",
                    dir.file_name().and_then(|n| n.to_str()).unwrap_or("auth")
                )),
            };
            crate::nats::use_credentials(Some(dir.join("operator.creds")));
            self.auth_dir = Some(dir);
        } else {
            crate::nats::use_credentials(None);
        }
        let nats = nats
            .bin(&self.config.nats_server)
            .monitor_port(free_port()?)
            .store_dir(self.data.path().join("jetstream"))
            .process(|p| {
                p.log_file(log)
                    .ready_timeout(READY_TIMEOUT)
                    .die_with_parent()
            })
            .start()
            .await?;
        let url = nats.url();
        self.members.push(Member {
            role: "nats-server".to_string(),
            process: nats.process,
        });
        self.nats_url = Some(url.clone());
        self.sync = Some(sync);
        Ok(url)
    }

    /// Starts `nats_cluster` clustered nats-servers (`n1` ...) on free ports,
    /// each with its own store, `sync`, and (with auth) the same `auth.conf`:
    /// their configurations are written next to it, since nats-server reads an
    /// include relative to the including file. Waits until JetStream answers.
    /// Returns every node's URL, comma-separated (the services' `NATS_URL`).
    async fn start_nats_cluster(&mut self, sync: JetStreamSync) -> Result<String> {
        let n = self.config.nats_cluster;
        let auth_dir = match self.config.auth {
            true => Some(self.auth_init()?),
            false => None,
        };
        crate::nats::use_credentials(auth_dir.as_ref().map(|d| d.join("operator.creds")));
        let config_dir = auth_dir
            .clone()
            .unwrap_or_else(|| self.data.path().to_path_buf());
        let route_ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_>>()?;
        let routes: Vec<String> = (route_ports.iter())
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect();
        let sync_line = match sync {
            JetStreamSync::Always => ", sync_interval: always",
            JetStreamSync::Default => "",
        };
        let include = match auth_dir {
            Some(_) => "include auth.conf\n",
            None => "",
        };
        let mut urls = Vec::new();
        for (i, route_port) in route_ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let text = format!(
                "server_name: {name}\nmax_payload: 8MB\n\
                 jetstream {{ store_dir: $NATS_STORE_DIR{sync_line} }}\n\
                 cluster {{ name: bench, listen: 127.0.0.1:{route_port}, routes: [{}] }}\n{include}",
                routes.join(", ")
            );
            let log = self.log_file(&format!("nats-{name}"));
            let nats = NatsServer::new(&config_dir)
                .name(format!("nats-{name}"))
                .config_text(text)
                .bin(&self.config.nats_server)
                .monitor_port(free_port()?)
                .store_dir(self.data.path().join(format!("jetstream-{name}")))
                .process(|p| {
                    p.log_file(log)
                        .ready_timeout(READY_TIMEOUT)
                        .die_with_parent()
                })
                .start()
                .await
                .with_context(|| format!("starting cluster node {name}"))?;
            urls.push(nats.url());
            self.members.push(Member {
                role: "nats-server".to_string(),
                process: nats.process,
            });
        }
        self.auth_dir = auth_dir;
        let first = urls[0].clone();
        wait_for_jetstream(&first).await?;
        let url = urls.join(",");
        self.nats_url = Some(url.clone());
        self.client_url = Some(first);
        self.sync = Some(sync);
        Ok(url)
    }

    /// Runs `shop auth init <data>/auth` (the `shop` next to the services).
    fn auth_init(&self) -> Result<PathBuf> {
        let dir = self.data.path().join("auth");
        let shop = self.config.bin_dir.join("shop");
        let output = std::process::Command::new(&shop)
            .args(["auth", "init"])
            .arg(&dir)
            .output()
            .with_context(|| format!("running {} auth init", shop.display()))?;
        if !output.status.success() {
            bail!(
                "shop auth init failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(dir)
    }

    /// `NATS_CREDS` of `identity` when the stack's server has auth; nothing
    /// otherwise (and the children never inherit the harness's own
    /// `NATS_CREDS`). Data keys are the stack's own (see `start_service`).
    fn auth_env(&self, identity: &str) -> Vec<(String, String)> {
        match &self.auth_dir {
            Some(dir) => vec![(
                "NATS_CREDS".into(),
                dir.join(format!("{identity}.creds")).display().to_string(),
            )],
            None => Vec::new(),
        }
    }

    /// Starts one more instance of `service` (`product`, `user`, `payment`,
    /// `notification`, `order`) and waits until it serves.
    /// The user service creates the admin that seeds products
    /// ([`crate::seed::admin_headers`]), so a product instance brings one along.
    pub async fn start_service(&mut self, service: &str, env: &[(&str, &str)]) -> Result<()> {
        if service == "product" && self.count("user") == 0 {
            Box::pin(self.start_service("user", &[])).await?;
            self.implicit_user = true;
        } else if service == "user" && std::mem::take(&mut self.implicit_user) {
            return Ok(());
        }
        let name = format!("{service}-{}", self.count(service) + 1);
        // Secrets at rest: the user and order services need their data keys.
        let mut secrets: Vec<(String, String)> = Vec::new();
        if let Some(var) = match service {
            "user" => Some("USER_DATA_KEY_FILE"),
            "order" => Some("ORDER_DATA_KEY_FILE"),
            _ => None,
        } {
            let path = self.data.path().join(format!("{service}-data.key"));
            if !path.exists() {
                let key = shop_nats::sealed::DataKey::generate_text();
                std::fs::write(&path, key + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            secrets.push((var.to_string(), path.display().to_string()));
        }
        if service == "user" {
            let (email, password) = crate::seed::admin_credentials();
            secrets.push(("ADMIN_EMAIL".to_string(), email));
            secrets.push(("ADMIN_PASSWORD".to_string(), password));
        }
        let spec = Spec::new(&name, self.config.service_bin(service))
            .envs([
                ("NATS_URL", self.nats_url()?),
                ("JS_REPLICAS", &self.js_replicas()),
                ("INSTANCE_ID", &name),
                ("ADMIN_ADDR", "127.0.0.1:0"),
                ("LOG_FORMAT", "json"),
                ("RUST_LOG", &self.config.services_rust_log),
            ])
            .env("DATA_DIR", self.data.path().join(&name))
            .envs(secrets)
            .env_remove("NATS_CREDS")
            .envs(self.auth_env(service))
            .envs(env.iter().copied())
            .ready_line("\"service ready\"");
        self.start(service, spec).await
    }

    /// Starts the raw echo responder on `subject`, replying `reply_bytes` bytes.
    pub async fn start_echo(&mut self, subject: &str, reply_bytes: usize) -> Result<()> {
        let name = format!("echo-{}", self.count("echo") + 1);
        let url = match &self.client_url {
            Some(url) => url.clone(),
            None => self.nats_url()?.to_string(),
        };
        let spec = Spec::new(name, self.config.bin_dir.join("shop-bench"))
            .args(["echo-server", "--nats-url", &url])
            .args(["--subject", subject, "--queue", "bench", "--reply-bytes"])
            .arg(reply_bytes.to_string())
            .env_remove("NATS_CREDS")
            .envs(self.auth_env("operator"))
            .ready_line("echo-server: serving");
        self.start("echo", spec).await
    }

    /// Starts the HTTP gateway on a free port with `env` (e.g. its cache switch);
    /// returns its base URL. `role` names it for CPU accounting. Its per-client
    /// rate limit is off (one load generator is one client) and so is its
    /// per-request access log (as the services' request logs are).
    pub async fn start_gateway(&mut self, role: &str, env: &[(&str, &str)]) -> Result<String> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let name = format!("{role}-{}", self.count(role) + 1);
        let rust_log = std::env::var("BENCH_GATEWAY_RUST_LOG")
            .unwrap_or_else(|_| GATEWAY_RUST_LOG.to_string());
        let spec = Spec::new(&name, self.config.gateway_bin())
            .envs([
                ("NATS_URL", self.nats_url()?),
                ("JS_REPLICAS", &self.js_replicas()),
                ("GATEWAY_ADDR", &addr),
                ("INSTANCE_ID", &name),
                ("GATEWAY_RATE_LIMIT_PER_SEC", "0"),
                ("LOG_FORMAT", "json"),
                ("RUST_LOG", &rust_log),
            ])
            .env_remove("NATS_CREDS")
            .envs(self.auth_env("gateway"))
            .envs(env.iter().copied())
            .ready_line("\"service ready\"");
        // It binds its address before it logs that it is ready.
        self.start(role, spec).await?;
        Ok(format!("http://{addr}"))
    }

    /// Starts the Express product service and the express-http-proxy gateway in
    /// front of it (with `keep_alive`, reusing upstream connections instead of
    /// express-http-proxy's connection per request); returns the gateway's base URL.
    pub async fn start_express(&mut self, keep_alive: bool) -> Result<String> {
        let dir = self.config.express_dir.clone();
        if !self.config.express_available() {
            bail!(
                "the Express baseline is not installed: run `npm ci` in {}",
                dir.display()
            );
        }
        let (product_port, gateway_port) = (free_port()?, free_port()?);
        let product_url = format!("127.0.0.1:{product_port}");
        let keep_alive = if keep_alive { "1" } else { "0" };
        for (role, script, env) in [
            (
                "express-product",
                "product.js",
                vec![("PORT", product_port)],
            ),
            (
                "express-gateway",
                "gateway.js",
                vec![("PORT", gateway_port)],
            ),
        ] {
            let mut spec = Spec::new(role, &self.config.node)
                .arg(dir.join(script))
                .envs(env.into_iter().map(|(k, v)| (k, v.to_string())))
                .env("NODE_ENV", "production")
                .current_dir(&dir)
                .ready_line("listening");
            if role == "express-gateway" {
                spec = spec
                    .env("PRODUCT_URL", &product_url)
                    .env("UPSTREAM_KEEPALIVE", keep_alive);
            }
            self.start(role, spec).await?;
        }
        Ok(format!("http://127.0.0.1:{gateway_port}"))
    }

    /// Fails with the log tail of any process that has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for m in &mut self.members {
            if let Some(status) = m.process.try_exit() {
                bail!(
                    "{} exited ({status}); last lines of {}:\n{}",
                    m.process.name(),
                    m.process
                        .log_file()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    m.process.tail(20)
                );
            }
        }
        Ok(())
    }

    /// Stops every process of `role` (newest first).
    pub async fn stop_role(&mut self, role: &str) {
        let (stop, keep) = std::mem::take(&mut self.members)
            .into_iter()
            .partition(|m| m.role == role);
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
        self.auth_dir = None;
    }
}

/// Waits until the cluster at `url` answers JetStream requests (its meta
/// leader is elected a moment after the routes connect).
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
    /// Stops what is still running, newest first, each before the next, so
    /// services finish their graceful stop while the nats-server is still up.
    fn drop(&mut self) {
        while let Some(mut m) = self.members.pop() {
            let _ = m.process.stop_blocking(STOP_TIMEOUT);
        }
    }
}

async fn stop_member(mut m: Member) {
    match m.process.stop(STOP_TIMEOUT).await {
        Ok(Stopped::Killed) => eprintln!(
            "stack: {} did not stop in {STOP_TIMEOUT:?}; killed it",
            m.process.name()
        ),
        Err(e) => eprintln!("stack: stopping {}: {e:#}", m.process.name()),
        Ok(_) => {}
    }
}
