//! `shop up`: the whole system on this machine. Starts a NATS server when none
//! is reachable, every service (N instances each) and the gateway, waits until
//! each has registered, seeds the demo catalog, prints where everything is, and
//! on Ctrl-C (or SIGTERM) stops the gateway, then the services, then the NATS
//! server it started, each with SIGTERM and a grace period.
//!
//! Auth is on unless `--no-auth` says otherwise: the NATS server this starts
//! runs the configuration `shop auth init <run-dir>/auth` writes (identities
//! kept across runs), each child connects with its own identity's `.creds`
//! (`NATS_CREDS`) and the user and order services get their data keys
//! (`USER_DATA_KEY_FILE`, `ORDER_DATA_KEY_FILE`); this tool and the seeding
//! connect as `operator`. A server this does not start needs the auth
//! directory it was configured from (`--auth-dir`).
//!
//! `--nats-cluster 3` starts three clustered nats-servers instead of one
//! (client ports from `--server`'s up, routes on loopback, a store each,
//! `sync_interval: always`, the same auth on every node), gives every child
//! all three URLs and `JS_REPLICAS=3`, and waits for JetStream to elect its
//! meta leader before starting the services.
//!
//! Children run in process groups of their own, so a terminal's Ctrl-C reaches
//! only this tool, which then stops them in order. Their output goes to
//! `<run-dir>/logs/<name>.log`; their data to `<run-dir>/data/<name>`. The
//! processes are started and stopped by `shop-process`, as tests and the
//! bench harness start theirs.

use std::{
    collections::BTreeMap,
    net::ToSocketAddrs,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use futures::StreamExt;
use shop_nats::discovery::{Registry, RegistryEvent};
use shop_process::{NatsServer, Process, Spec, Stopped};
use tokio::process::Command;

use crate::exit::{Failure, START_FAILED, UNREACHABLE, USAGE};

/// Every service, in start order; instance `i` of the `k`-th serves admin HTTP
/// on `admin_port_base + 10 k + i - 1`.
pub const SERVICES: [&str; 5] = ["product", "user", "payment", "notification", "order"];
const GATEWAY: &str = "gateway";
/// How long the system may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a child may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long a NATS server this starts may take to be ready.
const NATS_READY: Duration = Duration::from_secs(10);
const DEFAULT_ADMIN_EMAIL: &str = "admin@shop.example";
const DEFAULT_ADMIN_PASSWORD: &str = "change-me-admin-password";

/// What `shop up` was asked for.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub server: String,
    pub replicas: usize,
    pub root: Option<PathBuf>,
    pub bin_dir: Option<PathBuf>,
    pub run_dir: Option<PathBuf>,
    pub admin_port_base: u16,
    pub gateway_addr: String,
    pub nats_http_port: u16,
    pub seed: bool,
    pub auth: Auth,
    /// Nodes of a local NATS cluster to start (0 or 1: one server).
    pub nats_cluster: usize,
}

impl UpOptions {
    fn clustered(&self) -> bool {
        self.nats_cluster > 1
    }

    /// `JS_REPLICAS` of every child: the cluster's size, at most 5 (what
    /// JetStream allows), else 1.
    fn js_replicas(&self) -> usize {
        if self.clustered() {
            self.nats_cluster.min(5)
        } else {
            1
        }
    }
}

/// Whether the bus is locked.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `--no-auth`: every client may do everything.
    Off,
    /// Every process on its own identity, from this auth directory
    /// (`<run-dir>/auth` when absent and the server is ours).
    On(Option<PathBuf>),
}

/// The credentials the processes of this run connect with.
#[derive(Debug, Clone, Default)]
struct Credentials {
    /// The auth directory; `None` without auth.
    dir: Option<PathBuf>,
}

impl Credentials {
    /// The `.creds` file of `identity`, if auth is on.
    fn creds(&self, identity: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|dir| crate::auth::creds_path(dir, identity))
    }

    /// `NATS_CREDS` (and a data key, for the services that have one) for
    /// `identity`; nothing without auth (children are started without this
    /// tool's own `NATS_CREDS`).
    fn env(&self, identity: &str) -> Vec<(String, String)> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let mut env = vec![(
            "NATS_CREDS".to_string(),
            crate::auth::creds_path(dir, identity).display().to_string(),
        )];
        for (service, file, var) in crate::auth::DATA_KEYS {
            if service == identity && !data_key_in_environment(var) {
                env.push((var.to_string(), dir.join(file).display().to_string()));
            }
        }
        env
    }
}

/// `--gateway-addr` with a port: port 0 becomes a free one now, so the
/// address printed is the one the gateway listens on.
fn public_gateway_addr(configured: &str) -> Result<String, Failure> {
    let addr: std::net::SocketAddr = configured.parse().map_err(|e| {
        Failure::new(
            USAGE,
            format!("--gateway-addr {configured}: not host:port ({e})"),
        )
    })?;
    if addr.port() != 0 {
        return Ok(addr.to_string());
    }
    std::net::TcpListener::bind(addr)
        .and_then(|listener| listener.local_addr())
        .map(|free| free.to_string())
        .map_err(|e| Failure::new(START_FAILED, format!("finding a free port on {addr}: {e}")))
}

/// The demo admin account's `ADMIN_EMAIL` / `ADMIN_PASSWORD` where the
/// environment does not set them: the user service creates it, the seed logs
/// in with it.
fn admin_env() -> Vec<(String, String)> {
    [
        ("ADMIN_EMAIL", DEFAULT_ADMIN_EMAIL),
        ("ADMIN_PASSWORD", DEFAULT_ADMIN_PASSWORD),
    ]
    .into_iter()
    .filter(|(var, _)| std::env::var_os(var).is_none())
    .map(|(var, default)| (var.to_string(), default.to_string()))
    .collect()
}

/// Whether this tool's environment already names the data key `var`
/// (`USER_DATA_KEY_FILE`) or its inline form (`USER_DATA_KEY`): the children
/// inherit it then.
fn data_key_in_environment(var: &str) -> bool {
    std::env::var_os(var).is_some() || std::env::var_os(var.trim_end_matches("_FILE")).is_some()
}

/// Without auth (`--no-auth`) there is no auth directory to hold the data
/// keys: the user and order services get theirs from `<run-dir>/keys`, made
/// once and kept (what they sealed must stay readable), unless the
/// environment already names one (`USER_DATA_KEY`, `USER_DATA_KEY_FILE`, ...).
fn data_key_without_auth(paths: &Paths, service: &str) -> Result<Vec<(String, String)>, Failure> {
    if paths.credentials.dir.is_some() {
        return Ok(Vec::new());
    }
    let Some((_, file, var)) = crate::auth::DATA_KEYS
        .iter()
        .find(|(s, _, _)| *s == service)
    else {
        return Ok(Vec::new());
    };
    if data_key_in_environment(var) {
        return Ok(Vec::new());
    }
    let dir = paths.run_dir.join("keys");
    let path = dir.join(file);
    crate::auth::keys::private_dir(&dir)
        .and_then(|()| crate::auth::keys::ensure_data_key(&path))
        .map_err(|e| Failure::new(START_FAILED, format!("making {}: {e:#}", path.display())))?;
    Ok(vec![(var.to_string(), path.display().to_string())])
}

/// What this run started, so that it can stop it.
#[derive(Default)]
struct System {
    /// The NATS server(s) this run started: one, or a cluster's nodes.
    nats: Vec<Process>,
    gateway: Option<Process>,
    /// The gateway's public HTTP address (`http://host:port`).
    gateway_url: String,
    services: Vec<Process>,
    /// Registry entries seen for our children: name → admin address.
    ready: BTreeMap<String, String>,
}

pub async fn run(options: UpOptions) -> Result<(), Failure> {
    if options.replicas == 0 || options.replicas > 9 {
        return Err(Failure::new(
            USAGE,
            format!("--replicas {}: expected 1 to 9", options.replicas),
        ));
    }
    if options.nats_cluster == 2 || options.nats_cluster > 7 {
        return Err(Failure::new(
            USAGE,
            format!(
                "--nats-cluster {}: expected 3 to 7 nodes (a cluster of 2 survives no loss), or 1 for one server",
                options.nats_cluster
            ),
        ));
    }
    let mut signals = Signals::new()?;
    let mut system = System::default();
    let started = Instant::now();
    let outcome = tokio::select! {
        outcome = start(&options, &mut system) => Some(outcome),
        signal = signals.next() => {
            println!("\nshop up: {signal} while starting");
            None
        }
    };
    match outcome {
        Some(Ok(paths)) => {
            summary(&options, &system, &paths, started.elapsed());
            watch_children(&mut system, &mut signals).await;
            stop(&mut system).await;
            Ok(())
        }
        Some(Err(failure)) => {
            stop(&mut system).await;
            Err(failure)
        }
        None => {
            stop(&mut system).await;
            Ok(())
        }
    }
}

/// Where things are on disk.
struct Paths {
    bin_dir: PathBuf,
    root: PathBuf,
    run_dir: PathBuf,
    credentials: Credentials,
    /// The NATS URL(s) every child connects with: `--server`, or every node
    /// of the cluster this started, comma-separated.
    server: String,
    /// The cluster's nodes this started: (server name, client URL).
    nodes: Vec<(String, String)>,
}

impl Paths {
    fn logs(&self) -> PathBuf {
        self.run_dir.join("logs")
    }
}

fn resolve_paths(options: &UpOptions) -> Result<Paths, Failure> {
    let bin_dir = match &options.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
            .ok_or_else(|| {
                Failure::new(USAGE, "cannot tell where this binary is; pass --bin-dir")
            })?,
    };
    let root = match &options.root {
        Some(root) => root.clone(),
        None => bin_dir
            .ancestors()
            .find(|dir| dir.join("nats/config/nats-server.conf").is_file())
            .map(Path::to_path_buf)
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let run_dir = options.run_dir.clone().unwrap_or_else(|| root.join(".run"));
    Ok(Paths {
        bin_dir,
        root,
        run_dir,
        credentials: Credentials::default(),
        server: options.server.clone(),
        nodes: Vec::new(),
    })
}

async fn start(options: &UpOptions, system: &mut System) -> Result<Paths, Failure> {
    let mut paths = resolve_paths(options)?;
    for service in SERVICES {
        let bin = paths.bin_dir.join(format!("{service}-service"));
        if !bin.is_file() {
            return Err(Failure::new(
                START_FAILED,
                format!(
                    "{} is missing: build the services first (cargo build --release), or pass --bin-dir",
                    bin.display()
                ),
            ));
        }
    }
    for dir in [
        paths.logs(),
        paths.run_dir.join("data"),
        paths.run_dir.join("nats"),
    ] {
        std::fs::create_dir_all(&dir)
            .map_err(|e| Failure::new(START_FAILED, format!("creating {}: {e}", dir.display())))?;
    }
    if options.clustered() {
        let (credentials, nodes) = start_cluster(options, &paths, system).await?;
        paths.credentials = credentials;
        paths.server = nodes
            .iter()
            .map(|(_, url)| url.as_str())
            .collect::<Vec<_>>()
            .join(",");
        paths.nodes = nodes;
    } else {
        paths.credentials = ensure_nats(options, &paths, system).await?;
    }
    let server = paths.server.clone();
    let js_replicas = options.js_replicas().to_string();

    let operator = paths.credentials.creds(crate::auth::permissions::OPERATOR);
    let client = crate::exit::connect(&server, operator.as_deref()).await?;
    let js = async_nats::jetstream::new(client.clone());
    if options.clustered() {
        wait_for_jetstream(&js).await?;
    }
    let registry = Registry::open_replicated(&js, options.js_replicas())
        .await
        .map_err(|e| Failure::new(UNREACHABLE, format!("opening the registry: {e}")))?;
    let mut watch = registry
        .watch()
        .await
        .map_err(|e| Failure::new(UNREACHABLE, format!("watching the registry: {e}")))?;

    for (k, service) in SERVICES.iter().enumerate() {
        for i in 1..=options.replicas {
            let name = format!("{service}-{i}");
            let port = if options.admin_port_base == 0 {
                0
            } else {
                u32::from(options.admin_port_base) + 10 * k as u32 + i as u32 - 1
            };
            let data = paths.run_dir.join("data").join(&name);
            let mut env = vec![
                ("NATS_URL".to_string(), server.clone()),
                ("JS_REPLICAS".to_string(), js_replicas.clone()),
                ("INSTANCE_ID".to_string(), name.clone()),
                ("DATA_DIR".to_string(), data.display().to_string()),
                ("ADMIN_ADDR".to_string(), format!("127.0.0.1:{port}")),
            ];
            env.extend(paths.credentials.env(service));
            env.extend(data_key_without_auth(&paths, service)?);
            if *service == "user" {
                env.extend(admin_env());
            }
            let bin = paths.bin_dir.join(format!("{service}-service"));
            system
                .services
                .push(spawn(&name, &bin, &env, &paths.logs()).await?);
        }
    }
    let gateway_bin = paths.bin_dir.join(GATEWAY);
    if gateway_bin.is_file() {
        let addr = public_gateway_addr(&options.gateway_addr)?;
        system.gateway_url = format!("http://{addr}");
        let mut env = vec![
            ("NATS_URL".to_string(), server.clone()),
            ("JS_REPLICAS".to_string(), js_replicas.clone()),
            ("INSTANCE_ID".to_string(), "gateway-1".to_string()),
            ("GATEWAY_ADDR".to_string(), addr),
        ];
        env.extend(paths.credentials.env(GATEWAY));
        system.gateway = Some(spawn("gateway-1", &gateway_bin, &env, &paths.logs()).await?);
    } else {
        println!(
            "shop up: no gateway binary in {}; the HTTP API is not started",
            paths.bin_dir.display()
        );
    }

    wait_until_registered(system, &mut watch).await?;
    drop(watch);
    if options.seed {
        seed(&paths, &server).await;
    }
    Ok(paths)
}

/// Uses the NATS server at `--server` when it answers (with the auth directory
/// `--auth-dir` names, unless `--no-auth`); otherwise starts one (only for a
/// local address): with auth, from `shop auth init <auth dir>` (run here, so
/// the JWTs carry the current permissions); without, with the shipped
/// configuration. Returns the credentials the processes connect with.
async fn ensure_nats(
    options: &UpOptions,
    paths: &Paths,
    system: &mut System,
) -> Result<Credentials, Failure> {
    let (host, port) = nats_host_port(&options.server).ok_or_else(|| {
        Failure::new(
            USAGE,
            format!("cannot read a host and port from {}", options.server),
        )
    })?;
    if let Auth::Off = options.auth {
        println!(
            "shop up: WARNING auth is OFF (--no-auth): anyone who reaches NATS at {} may read and do everything",
            options.server
        );
    }
    if reachable(&host, port).await {
        println!("shop up: using the NATS server at {}", options.server);
        return external_credentials(&options.auth);
    }
    if !matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1") {
        return Err(Failure::new(
            UNREACHABLE,
            format!(
                "{} is not reachable and is not local: start that server, or point --server/NATS_URL elsewhere",
                options.server
            ),
        ));
    }
    let bin = shop_process::nats_server_bin(&paths.root)
        .map_err(|e| Failure::new(START_FAILED, e.to_string()))?;
    let store = paths.run_dir.join("nats");
    let log = paths.logs().join("nats-server.log");
    let credentials = init_auth(options, paths)?;
    let mut server = NatsServer::new(&paths.run_dir)
        .bin(bin)
        .host(&host)
        .port(port)
        .store_dir(&store)
        .process(|p| {
            p.log_file(&log)
                .ready_timeout(NATS_READY)
                .own_process_group()
        });
    server = match (
        &credentials.dir,
        paths.root.join("nats/config/nats-server.conf"),
    ) {
        (Some(dir), _) => server.config_file(dir.join(crate::auth::SERVER_CONFIG)),
        (None, shipped) if shipped.is_file() => server.config_file(shipped),
        (None, _) => server.config_text(
            "max_payload: 8MB\njetstream { store_dir: $NATS_STORE_DIR, sync_interval: always }\n",
        ),
    };
    if options.nats_http_port > 0 {
        server = server.monitor_port(options.nats_http_port);
    }
    println!(
        "shop up: starting nats-server on {host}:{port} (store {}, log {}, auth {})",
        store.display(),
        log.display(),
        match &credentials.dir {
            Some(dir) => format!("on: {}", dir.display()),
            None => "OFF".to_string(),
        }
    );
    let nats = server
        .start()
        .await
        .map_err(|e| Failure::new(START_FAILED, format!("{e:#}")))?;
    system.nats.push(nats.process);
    Ok(credentials)
}

/// The auth directory `shop auth init` (re)makes for a server this starts:
/// `--auth-dir`, else `<run-dir>/auth`; none with `--no-auth`.
fn init_auth(options: &UpOptions, paths: &Paths) -> Result<Credentials, Failure> {
    match &options.auth {
        Auth::Off => Ok(Credentials::default()),
        Auth::On(dir) => {
            let dir = dir.clone().unwrap_or_else(|| paths.run_dir.join("auth"));
            let manifest = crate::manifest::all()
                .map_err(|e| Failure::new(USAGE, format!("invalid declaration: {e}")))?;
            crate::auth::init(&dir, &manifest, false).map_err(|e| {
                Failure::new(
                    START_FAILED,
                    format!("shop auth init {}: {e:#}", dir.display()),
                )
            })?;
            Ok(Credentials { dir: Some(dir) })
        }
    }
}

/// The cluster's name in every node's `cluster { name }`.
const CLUSTER_NAME: &str = "shop";

/// Starts `--nats-cluster` clustered nats-servers on loopback: node *i*
/// (named `n<i>`) takes client port `--server`'s port + *i* − 1, route port
/// that + 2000, monitoring port `--nats-http-port` + *i* − 1, and its own
/// store in `<run-dir>/nats-cluster/n<i>`. Each node's configuration
/// includes the auth directory's `auth.conf`, so they trust the same
/// operator and accounts; it is written next to it (`nats-n<i>.conf`) because
/// nats-server resolves includes relative to the including file. Returns the
/// credentials and every node (name, URL).
async fn start_cluster(
    options: &UpOptions,
    paths: &Paths,
    system: &mut System,
) -> Result<(Credentials, Vec<(String, String)>), Failure> {
    let (host, base) = nats_host_port(&options.server).ok_or_else(|| {
        Failure::new(
            USAGE,
            format!("cannot read a host and port from {}", options.server),
        )
    })?;
    if !matches!(host.as_str(), "127.0.0.1" | "localhost") {
        return Err(Failure::new(
            USAGE,
            format!(
                "--nats-cluster starts servers on this machine: --server must be local, not {host}"
            ),
        ));
    }
    let count = options.nats_cluster;
    let port = |offset: u16| -> Result<u16, Failure> {
        base.checked_add(offset)
            .ok_or_else(|| Failure::new(USAGE, format!("port {base} + {offset} is out of range")))
    };
    let mut client_ports = Vec::new();
    let mut route_ports = Vec::new();
    for i in 0..count as u16 {
        client_ports.push(port(i)?);
        route_ports.push(port(2000 + i)?);
    }
    for p in client_ports.iter().chain(&route_ports) {
        if reachable(&host, *p).await {
            return Err(Failure::new(
                USAGE,
                format!("--nats-cluster {count}: port {p} is already in use (a NATS server left running?); stop it or choose --server with another port"),
            ));
        }
    }
    if let Auth::Off = options.auth {
        println!("shop up: WARNING auth is OFF (--no-auth): anyone who reaches the cluster may read and do everything");
    }
    let credentials = init_auth(options, paths)?;
    let bin = shop_process::nats_server_bin(&paths.root)
        .map_err(|e| Failure::new(START_FAILED, e.to_string()))?;
    // Without auth there is no auth directory: the configurations go with the stores.
    let config_dir = credentials
        .dir
        .clone()
        .unwrap_or_else(|| paths.run_dir.join("nats-cluster"));
    std::fs::create_dir_all(&config_dir).map_err(|e| {
        Failure::new(
            START_FAILED,
            format!("creating {}: {e}", config_dir.display()),
        )
    })?;
    let include = credentials.dir.as_ref().map(|_| crate::auth::AUTH_INCLUDE);
    let mut nodes = Vec::new();
    for i in 0..count {
        let name = format!("n{}", i + 1);
        let config = config_dir.join(format!("nats-{name}.conf"));
        let text = crate::auth::server_config::cluster_node(
            &name,
            CLUSTER_NAME,
            route_ports[i],
            &route_ports,
            include,
        );
        std::fs::write(&config, text).map_err(|e| {
            Failure::new(START_FAILED, format!("writing {}: {e}", config.display()))
        })?;
        let store = paths.run_dir.join("nats-cluster").join(&name);
        let log = paths.logs().join(format!("nats-{name}.log"));
        let mut server = NatsServer::new(&paths.run_dir)
            .name(format!("nats-{name}"))
            .bin(&bin)
            .host(&host)
            .port(client_ports[i])
            .store_dir(&store)
            .config_file(&config)
            .process(|p| {
                p.log_file(&log)
                    .ready_timeout(NATS_READY)
                    .own_process_group()
            });
        if options.nats_http_port > 0 {
            let monitor = options
                .nats_http_port
                .checked_add(i as u16)
                .ok_or_else(|| {
                    Failure::new(USAGE, "--nats-http-port is too high for the cluster")
                })?;
            server = server.monitor_port(monitor);
        }
        let started = server
            .start()
            .await
            .map_err(|e| Failure::new(START_FAILED, format!("{e:#}")))?;
        let url = started.url();
        println!(
            "shop up: started NATS node {name} on {url} (routes 127.0.0.1:{}, store {}, config {}, log {})",
            route_ports[i],
            store.display(),
            config.display(),
            log.display()
        );
        system.nats.push(started.process);
        nodes.push((name, url));
    }
    println!(
        "shop up: NATS cluster `{CLUSTER_NAME}` of {count} nodes, auth {}; every stream and bucket with {} replicas",
        match &credentials.dir {
            Some(dir) => format!("on: {}", dir.display()),
            None => "OFF".to_string(),
        },
        options.js_replicas()
    );
    Ok((credentials, nodes))
}

/// Waits until the cluster answers JetStream requests (its meta leader is
/// elected a moment after the routes connect): services started earlier
/// would fail to create their streams.
async fn wait_for_jetstream(js: &async_nats::jetstream::Context) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match js.query_account().await {
            Ok(_) => return Ok(()),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(Failure::new(
                    START_FAILED,
                    format!("the NATS cluster's JetStream is not ready after 30 s: {e}"),
                ))
            }
        }
    }
}

/// The credentials for a server this did not start: those of `--auth-dir`
/// (made by `shop auth init` for that server), or none with `--no-auth`.
fn external_credentials(auth: &Auth) -> Result<Credentials, Failure> {
    match auth {
        Auth::Off => Ok(Credentials::default()),
        Auth::On(None) => Err(Failure::new(
            USAGE,
            "a NATS server is already running there: pass --auth-dir with the directory `shop auth init` made for it (or --no-auth if it runs without auth)",
        )),
        Auth::On(Some(dir)) => {
            let operator = crate::auth::creds_path(dir, crate::auth::permissions::OPERATOR);
            if !operator.is_file() {
                return Err(Failure::new(
                    USAGE,
                    format!(
                        "--auth-dir {}: no {} in it (run `shop auth init {}` and configure the server from it)",
                        dir.display(),
                        operator.display(),
                        dir.display()
                    ),
                ));
            }
            Ok(Credentials {
                dir: Some(dir.clone()),
            })
        }
    }
}

/// Host and port of the first server of a NATS URL list
/// (`scheme://user:pass@host:port,...`; port 4222 when absent).
pub fn nats_host_port(url: &str) -> Option<(String, u16)> {
    let first = url.split(',').next()?.trim();
    let rest = first.split_once("://").map_or(first, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let rest = rest.split('/').next()?;
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host.to_string(), after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (rest.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 4222,
    };
    let host = if host.is_empty() {
        "127.0.0.1".to_string()
    } else {
        host
    };
    Some((host, port))
}

async fn reachable(host: &str, port: u16) -> bool {
    let Some(addr) = (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Starts `bin` in a process group of its own, its output in `<logs>/<name>.log`.
async fn spawn(
    name: &str,
    bin: &Path,
    env: &[(String, String)],
    logs: &Path,
) -> Result<Process, Failure> {
    let mut spec = Spec::new(name, bin)
        .env_remove("NATS_CREDS")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .log_file(logs.join(format!("{name}.log")))
        .own_process_group();
    if std::env::var_os("LOG_FORMAT").is_none() {
        spec = spec.env("LOG_FORMAT", "pretty");
    }
    let proc = spec
        .start()
        .await
        .map_err(|e| Failure::new(START_FAILED, format!("{e:#}")))?;
    println!(
        "shop up: started {name} (pid {}, log {})",
        proc.pid().unwrap_or_default(),
        logs.join(format!("{name}.log")).display()
    );
    Ok(proc)
}

/// "<name> exited[ at start] (<status>); last lines of <log>:" and the tail
/// of its output.
fn exited(proc: &Process, when: &str, status: std::process::ExitStatus, lines: usize) -> String {
    format!(
        "{} exited{when} ({status}); last lines of {}:\n{}",
        proc.name(),
        proc.log_file().unwrap_or(Path::new("-")).display(),
        proc.tail(lines)
    )
}

/// Waits until every child has its registry entry (matched by pid, so a stale
/// entry of an earlier run does not count), failing early when one exits.
async fn wait_until_registered(
    system: &mut System,
    watch: &mut futures::stream::BoxStream<'static, RegistryEvent>,
) -> Result<(), Failure> {
    let expected: BTreeMap<String, u32> = system
        .services
        .iter()
        .chain(system.gateway.iter())
        .map(|p| (p.name().to_string(), p.pid().unwrap_or_default()))
        .collect();
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let mut check = tokio::time::interval(Duration::from_millis(250));
    while system.ready.len() < expected.len() {
        tokio::select! {
            event = watch.next() => match event {
                Some(RegistryEvent::Up(info)) => {
                    if expected.get(&info.instance_id) == Some(&info.pid)
                        && !system.ready.contains_key(&info.instance_id)
                    {
                        let admin = info.admin_addr.clone().unwrap_or_default();
                        println!(
                            "shop up: {} ready ({}/{}), admin http://{admin}",
                            info.instance_id,
                            system.ready.len() + 1,
                            expected.len()
                        );
                        system.ready.insert(info.instance_id.clone(), admin);
                    }
                }
                Some(RegistryEvent::Down { .. }) => {}
                None => return Err(Failure::new(UNREACHABLE, "the registry watch ended (NATS connection lost)")),
            },
            _ = check.tick() => {
                for proc in system.services.iter_mut().chain(system.gateway.iter_mut()) {
                    if let Some(status) = proc.try_exit() {
                        return Err(Failure::new(
                            START_FAILED,
                            exited(proc, " at start", status, 20),
                        ));
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let missing: Vec<&String> = expected.keys().filter(|n| !system.ready.contains_key(*n)).collect();
                return Err(Failure::new(
                    START_FAILED,
                    format!("not ready after {} s: {missing:?}; see their logs", START_TIMEOUT.as_secs()),
                ));
            }
        }
    }
    Ok(())
}

/// Seeds the demo catalog (harmless when it is already there); a failure is
/// reported and the system keeps running.
async fn seed(paths: &Paths, server: &str) {
    let catalog = paths.root.join("services/product/demo/catalog.json");
    if !catalog.is_file() {
        println!(
            "shop up: no demo catalog at {}; not seeding",
            catalog.display()
        );
        return;
    }
    let log = paths.logs().join("seed.log");
    let mut text = Vec::new();
    for attempt in 1..=5 {
        let output = Command::new(paths.bin_dir.join("product-service"))
            .arg("seed")
            .arg(&catalog)
            .env("NATS_URL", server)
            .env_remove("NATS_CREDS")
            .envs(paths.credentials.env(crate::auth::permissions::OPERATOR))
            // product.create is for admins: the seed logs in as the one the
            // user service was started with.
            .envs(admin_env())
            .stdin(Stdio::null())
            .output()
            .await;
        match output {
            Ok(output) => {
                text = output.stdout.clone();
                text.extend_from_slice(&output.stderr);
                let _ = std::fs::write(&log, &text);
                if output.status.success() {
                    println!("shop up: demo catalog seeded from {}", catalog.display());
                    return;
                }
            }
            Err(e) => {
                text = e.to_string().into_bytes();
                let _ = std::fs::write(&log, &text);
            }
        }
        if attempt < 5 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    eprintln!(
        "shop up: WARNING seeding failed; last lines of {}:\n{}",
        log.display(),
        shop_process::last_lines(&String::from_utf8_lossy(&text), 20)
    );
}

fn summary(options: &UpOptions, system: &System, paths: &Paths, elapsed: Duration) {
    let admin = |name: &str| {
        system
            .ready
            .get(name)
            .map(|a| format!("http://{a}"))
            .unwrap_or_else(|| "-".into())
    };
    let operator = paths.credentials.creds(crate::auth::permissions::OPERATOR);
    let creds = operator
        .as_ref()
        .map(|path| format!(" --creds {}", path.display()))
        .unwrap_or_default();
    let server = if paths.nodes.is_empty() {
        String::new()
    } else {
        format!(" --server {}", paths.server)
    };
    let shop = format!("{}{server}{creds}", paths.bin_dir.join("shop").display());
    println!();
    println!(
        "The system is running ({} instance(s) each of {}; NATS at {}), up in {:.1} s.",
        options.replicas,
        SERVICES.join(", "),
        paths.server,
        elapsed.as_secs_f64()
    );
    if !paths.nodes.is_empty() {
        let nodes: Vec<String> = (paths.nodes.iter())
            .map(|(name, url)| format!("{name} {url}"))
            .collect();
        println!(
            "  NATS cluster: {}; JS_REPLICAS={} (`shop status` shows each instance's node and each stream's leader)",
            nodes.join(", "),
            options.js_replicas()
        );
    }
    if system.gateway.is_some() {
        println!(
            "  HTTP API: {}/api/products   (OpenAPI: {}/api/openapi.json; gateway admin {})",
            system.gateway_url,
            system.gateway_url,
            admin("gateway-1")
        );
    }
    for service in SERVICES {
        let addrs: Vec<String> = (1..=options.replicas)
            .map(|i| admin(&format!("{service}-{i}")))
            .collect();
        println!("  {service:<13} admin {}", addrs.join("  "));
    }
    println!("             (each admin address serves /health, /ready and /metrics)");
    let email = std::env::var("ADMIN_EMAIL").unwrap_or_else(|_| DEFAULT_ADMIN_EMAIL.into());
    println!("  Admin account: {email} (ADMIN_EMAIL / ADMIN_PASSWORD)");
    println!("  Status:   {shop} status");
    println!(
        "  Logs:     {shop} logs -f            (files: {})",
        paths.logs().display()
    );
    println!("  Requests: {shop} req product.get '{{\"id\":\"sku-keyboard\"}}'");
    println!("            {shop} req product.list '{{\"limit\":5}}'");
    println!("  nats CLI: nats{creds} req product.get '{{\"id\":\"sku-keyboard\"}}'");
    match &paths.credentials.dir {
        Some(dir) => println!(
            "  Auth:     on; identities in {} (operator.creds may do everything: keep the directory secret)",
            dir.display()
        ),
        None => println!("  Auth:     OFF (--no-auth): any client may do everything"),
    }
    println!("Press Ctrl-C to stop everything.");
}

/// Runs until a signal, reporting children that exit on their own.
async fn watch_children(system: &mut System, signals: &mut Signals) {
    let mut reported = std::collections::BTreeSet::new();
    loop {
        tokio::select! {
            signal = signals.next() => {
                println!("\nshop up: {signal}");
                return;
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let all = system.services.iter_mut().chain(system.gateway.iter_mut()).chain(system.nats.iter_mut());
                for proc in all {
                    if let Some(status) = proc.try_exit() {
                        if reported.insert(proc.name().to_string()) {
                            eprintln!("shop up: {}", exited(proc, "", status, 10));
                        }
                    }
                }
            }
        }
    }
}

/// The gateway first, then every service at once, then the NATS server.
async fn stop(system: &mut System) {
    let running = system
        .services
        .iter_mut()
        .chain(system.gateway.iter_mut())
        .chain(system.nats.iter_mut())
        .any(|p| p.is_running());
    if !running {
        return;
    }
    println!("shop up: stopping...");
    stop_all(system.gateway.iter_mut()).await;
    stop_all(system.services.iter_mut()).await;
    stop_all(system.nats.iter_mut()).await;
    println!("shop up: stopped");
}

/// SIGTERM to each at once, then waits; SIGKILL to what has not stopped after
/// the grace period.
async fn stop_all(procs: impl Iterator<Item = &mut Process>) {
    let stops = procs.map(|proc| async move {
        match proc.stop(STOP_GRACE).await {
            Ok(Stopped::Exited(status)) if status.success() => {}
            Ok(Stopped::Exited(status)) => println!("shop up: {} stopped ({status})", proc.name()),
            Ok(Stopped::Killed) => {
                eprintln!(
                    "shop up: {} did not stop within {} s; killing it",
                    proc.name(),
                    STOP_GRACE.as_secs()
                );
                println!("shop up: {} stopped (killed)", proc.name());
            }
            Ok(Stopped::NotRunning) => {}
            Err(e) => eprintln!("shop up: stopping {}: {e:#}", proc.name()),
        }
    });
    futures::future::join_all(stops).await;
}

/// SIGINT, SIGTERM and SIGHUP, as one stream of names.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, Failure> {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind| {
            signal(kind)
                .map_err(|e| Failure::new(START_FAILED, format!("listening for signals: {e}")))
        };
        Ok(Self {
            int: listen(SignalKind::interrupt())?,
            term: listen(SignalKind::terminate())?,
            hup: listen(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_of_nats_urls() {
        let hp = |u: &str| nats_host_port(u);
        assert_eq!(
            hp("nats://127.0.0.1:4222"),
            Some(("127.0.0.1".into(), 4222))
        );
        assert_eq!(hp("nats://localhost"), Some(("localhost".into(), 4222)));
        assert_eq!(
            hp("nats://user:secret@10.0.0.5:5222,nats://10.0.0.6:4222"),
            Some(("10.0.0.5".into(), 5222))
        );
        assert_eq!(hp("tls://[::1]:4333"), Some(("::1".into(), 4333)));
        assert_eq!(hp("127.0.0.1:7000"), Some(("127.0.0.1".into(), 7000)));
        assert_eq!(hp("nats://host:notaport"), None);
    }
}
