//! The chaos run: the whole shop with several instances of every service,
//! orders placed over NATS with users' tokens while instances are killed with
//! SIGKILL and nats-server is killed and restarted, then every invariant of
//! [`crate::invariants`] checked from the streams once the system is quiet.
//!
//! Everything the run decides (users, lines, tokens, cancels, retries, which
//! instance dies when) comes from `--seed`; only timing differs between two
//! runs of the same seed.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use async_nats::{jetstream, HeaderMap};
use futures::StreamExt;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};
use testkit::{
    request_json_with_headers, workspace_bin, NatsCluster, NatsServer, Reply, ServiceProcess,
};
use tokio::sync::{watch, Semaphore};

use crate::invariants::{self, Event, History, Outcome, Retried};

const ADMIN_EMAIL: &str = "admin@chaos.test";
const ADMIN_PASSWORD: &str = "chaos-admin-password";
/// The services started, in start order (the user service first: everyone
/// else verifies tokens with its keys).
pub const SERVICES: [&str; 5] = ["user", "product", "payment", "notification", "order"];
/// The streams the invariants are checked from.
const STREAMS: [&str; 4] = ["ORDER", "PRODUCT", "PAYMENT", "NOTIFICATION"];

/// What a run does.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Seeds every choice: users, lines, tokens, cancels, retries, faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Orders to place.
    #[arg(long, default_value_t = 1000)]
    pub orders: usize,
    /// Orders placed per second (open loop).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Creates (with their retries, cancels) in flight at most.
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// Instances of each service.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Users placing orders.
    #[arg(long, default_value_t = 20)]
    pub users: usize,
    /// Products (the first two have little stock, so lines run out).
    #[arg(long, default_value_t = 10)]
    pub products: usize,
    /// Fraction of orders their user cancels (0–3 s after placing).
    #[arg(long, default_value_t = 0.1)]
    pub cancel_ratio: f64,
    /// Fraction of orders created a second time with the same key.
    #[arg(long, default_value_t = 0.1)]
    pub retry_ratio: f64,
    /// Fraction of orders with a line no stock can fill (1000 of a scarce product).
    #[arg(long, default_value_t = 0.05)]
    pub out_of_stock_ratio: f64,
    /// Shortest wait between two instance kills, in seconds (0 with --max-kill-secs 0: none).
    #[arg(long, default_value_t = 3.0)]
    pub min_kill_secs: f64,
    /// Longest wait between two instance kills, in seconds.
    #[arg(long, default_value_t = 6.0)]
    pub max_kill_secs: f64,
    /// nats-server kills (SIGKILL, then started again on the same port and
    /// store), spread over the placing of orders.
    #[arg(long, default_value_t = 2)]
    pub nats_restarts: usize,
    /// NATS nodes: 1 is a single nats-server, killed and restarted; 3 or
    /// more a cluster (JS_REPLICAS=3, every service given every node's URL)
    /// whose nodes are killed in turn, each down for a few seconds.
    #[arg(long, default_value_t = 1)]
    pub nats_nodes: usize,
    /// How long to wait, after the last order, for every order to be final.
    #[arg(long, default_value_t = 300)]
    pub settle_secs: u64,
    /// Where the services' data and logs go (kept); a temporary directory by default.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// `ORDER_SAGA_ACK_WAIT_SECS` of the order instances: how soon a killed
    /// instance's saga step goes to another.
    #[arg(long, default_value_t = 5)]
    pub saga_ack_wait_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            config: Config,
        }
        Defaults::parse_from(["chaos"]).config
    }
}

/// Faults injected.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Faults {
    /// SIGKILLs per service.
    pub kills: BTreeMap<String, usize>,
    pub nats_restarts: usize,
    /// Restarts of a killed instance that failed (each retried, up to 20 times).
    pub failed_restarts: usize,
}

/// What a run did and found.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub orders: usize,
    pub rate: f64,
    pub replicas: usize,
    /// Creates answered with an order.
    pub acknowledged: usize,
    /// Creates answered with a 4xx, by code.
    pub refused: BTreeMap<u16, usize>,
    /// Creates never answered within their 90 s.
    pub gave_up: usize,
    /// Create attempts repeated (same key) after a timeout or a 5xx.
    pub create_retries: usize,
    /// Creates sent twice on purpose with the same key.
    pub retried_same_key: usize,
    /// `order.cancel` sent by users, and how many were answered.
    pub cancels: usize,
    pub cancels_answered: usize,
    pub faults: Faults,
    /// Final orders by `status/reason`.
    pub outcomes: BTreeMap<String, usize>,
    /// Events read per stream.
    pub events: BTreeMap<String, usize>,
    pub settled: bool,
    pub load_secs: f64,
    pub settle_secs: f64,
    pub duration_secs: f64,
    pub invariants: Vec<Outcome>,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.invariants.iter().all(Outcome::held)
    }

    /// A markdown report: the run, the faults, one line per invariant.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let kills: Vec<String> = self
            .faults
            .kills
            .iter()
            .map(|(service, n)| format!("{service} {n}"))
            .collect();
        s += &format!(
            "chaos run: seed {}, {} orders at {}/s, {} instances per service\n\n",
            self.seed, self.orders, self.rate, self.replicas
        );
        s += &format!(
            "- placed: {} acknowledged, refused {:?}, gave up {}, {} create retries after errors, {} sent twice with the same key, {} user cancels ({} answered)\n",
            self.acknowledged, self.refused, self.gave_up, self.create_retries, self.retried_same_key, self.cancels, self.cancels_answered
        );
        s += &format!(
            "- faults: {} instance kills ({}), {} nats-server kills, {} failed restarts\n",
            self.faults.kills.values().sum::<usize>(),
            kills.join(", "),
            self.faults.nats_restarts,
            self.faults.failed_restarts
        );
        s += &format!("- final orders: {:?}\n", self.outcomes);
        s += &format!("- events read: {:?}\n", self.events);
        s += &format!(
            "- time: {:.0} s placing, {:.0} s settling ({}), {:.0} s in all\n\n",
            self.load_secs,
            self.settle_secs,
            if self.settled {
                "every order final"
            } else {
                "NOT settled"
            },
            self.duration_secs
        );
        s += "| invariant | checked | violations |\n| --- | ---: | ---: |\n";
        for o in &self.invariants {
            s += &format!("| {} | {} | {} |\n", o.name, o.checked, o.violations);
        }
        for o in self.invariants.iter().filter(|o| !o.held()) {
            s += &format!("\n{} — first violations:\n", o.name);
            for e in &o.examples {
                s += &format!("- {e}\n");
            }
        }
        s
    }
}

// ---- the system --------------------------------------------------------------

/// nats-server and every service instance.
struct System {
    nats: Bus,
    instances: Vec<(&'static str, ServiceProcess)>,
}

/// How long a killed cluster node stays down before it is started again.
const NODE_DOWN: Duration = Duration::from_secs(5);

/// What the system runs on: one nats-server, or a cluster whose nodes are
/// killed in turn (`next`).
enum Bus {
    Single(Box<NatsServer>),
    Cluster { cluster: NatsCluster, next: usize },
}

impl Bus {
    async fn start(nodes: usize) -> anyhow::Result<Self> {
        match nodes {
            1 => Ok(Self::Single(Box::new(
                NatsServer::start().await.context("starting nats-server")?,
            ))),
            n if n >= 3 => Ok(Self::Cluster {
                cluster: NatsCluster::start(n)
                    .await
                    .with_context(|| format!("starting a cluster of {n} nats-servers"))?,
                next: 0,
            }),
            n => anyhow::bail!("--nats-nodes {n}: 1, or a cluster of 3 or more"),
        }
    }

    /// `NATS_URL` for the services: every node's URL with a cluster.
    fn url(&self) -> String {
        match self {
            Self::Single(server) => server.url(),
            Self::Cluster { cluster, .. } => cluster.url(),
        }
    }

    /// An operator client.
    async fn client(&self) -> anyhow::Result<async_nats::Client> {
        match self {
            Self::Single(server) => server.client().await,
            Self::Cluster { cluster, .. } => cluster.client().await,
        }
    }
}

impl System {
    async fn start(config: &Config, dir: &Path) -> anyhow::Result<Self> {
        let nats = Bus::start(config.nats_nodes).await?;
        let clustered = matches!(nats, Bus::Cluster { .. });
        let mut system = Self {
            nats,
            instances: Vec::new(),
        };
        let ack_wait = config.saga_ack_wait_secs.to_string();
        for service in SERVICES {
            let bin = workspace_bin(&format!("{service}-service"))?;
            for n in 1..=config.replicas {
                let id = format!("{service}-{n}");
                let mut env: Vec<(&str, &str)> = match service {
                    "user" => vec![
                        ("ARGON2_MEMORY_KIB", "1024"),
                        ("ARGON2_ITERATIONS", "1"),
                        ("ADMIN_EMAIL", ADMIN_EMAIL),
                        ("ADMIN_PASSWORD", ADMIN_PASSWORD),
                    ],
                    "order" => vec![("ORDER_SAGA_ACK_WAIT_SECS", ack_wait.as_str())],
                    _ => vec![],
                };
                if clustered {
                    env.push(("JS_REPLICAS", "3"));
                }
                let process =
                    ServiceProcess::start(&bin, &system.nats.url(), &id, &dir.join(&id), &env)
                        .await
                        .with_context(|| format!("starting {id}"))?;
                tracing::info!(instance = %id, "started");
                system.instances.push((service, process));
            }
        }
        Ok(system)
    }

    /// SIGKILL of nats-server, then the same server again (port, store);
    /// with a cluster, of the next node, started again after [`NODE_DOWN`].
    async fn nats_kill(&mut self) -> anyhow::Result<()> {
        let server = match &mut self.nats {
            Bus::Single(server) => server,
            Bus::Cluster { cluster, next } => {
                let node = *next % cluster.nodes.len();
                *next += 1;
                cluster.kill9(node).context("kill -9 of a NATS node")?;
                tracing::info!(node = %cluster.nodes[node].name, "NATS node killed");
                // The fault lasts this long: the other nodes elect new leaders.
                tokio::time::sleep(NODE_DOWN).await;
                return cluster
                    .restart(node)
                    .await
                    .with_context(|| format!("restarting NATS node {}", cluster.nodes[node].name));
            }
        };
        let pid = server.pid().context("nats-server is not running")?;
        let status = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .context("running kill -9")?;
        anyhow::ensure!(status.success(), "kill -9 {pid}: {status}");
        // Reaps the killed server (at once) and starts it again.
        tokio::task::block_in_place(|| server.stop()).context("reaping nats-server")?;
        let mut tries = 0;
        loop {
            match server.restart().await {
                Ok(()) => return Ok(()),
                Err(e) if tries < 5 => {
                    tries += 1;
                    tracing::warn!(error = %format!("{e:#}"), "nats-server restart failed; trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e.context("restarting nats-server")),
            }
        }
    }

    /// Starts every instance that is not running (a restart that failed).
    async fn revive(&mut self, faults: &mut Faults) {
        for (_, process) in &mut self.instances {
            if process.pid().is_none() {
                restart(process, faults).await;
            }
        }
    }
}

/// How often a killed instance is started again before the run gives up on it.
const RESTART_ATTEMPTS: usize = 20;

/// Starts a killed instance again, retrying (a restart can fail while
/// nats-server is down) until it is up or [`RESTART_ATTEMPTS`] failed.
async fn restart(process: &mut ServiceProcess, faults: &mut Faults) {
    for attempt in 1..=RESTART_ATTEMPTS {
        match process.restart().await {
            Ok(()) => return,
            Err(e) => {
                faults.failed_restarts += 1;
                tracing::warn!(instance = %process.instance_id, attempt, error = %format!("{e:#}"), "restart failed; trying again");
                let _ = process.kill9();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    tracing::error!(instance = %process.instance_id, "giving up on restarting it");
}

/// Kills random instances every few seconds and nats-server at its times,
/// until `stop` turns true; returns the system and what it did.
async fn inject_faults(
    mut system: System,
    config: Config,
    mut stop: watch::Receiver<bool>,
) -> (System, Faults) {
    let mut faults = Faults::default();
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0xfa17_5eed);
    let start = tokio::time::Instant::now();
    let placing = Duration::from_secs_f64(config.orders as f64 / config.rate.max(0.001));
    let mut nats_at: Vec<tokio::time::Instant> = (1..=config.nats_restarts)
        .map(|k| start + placing.mul_f64(k as f64 / (config.nats_restarts + 1) as f64))
        .collect();
    nats_at.reverse();
    let kills = config.max_kill_secs > 0.0;
    let next_kill = |rng: &mut StdRng| {
        let low = config.min_kill_secs.max(0.1);
        let high = config.max_kill_secs.max(low + 0.001);
        tokio::time::Instant::now() + Duration::from_secs_f64(rng.random_range(low..high))
    };
    let mut kill_at = next_kill(&mut rng);
    loop {
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        let nats_next = nats_at.last().copied().unwrap_or(far);
        let kill_next = if kills { kill_at } else { far };
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep_until(nats_next.min(kill_next)) => {}
        }
        if *stop.borrow() {
            break;
        }
        let now = tokio::time::Instant::now();
        if now >= nats_next {
            nats_at.pop();
            tracing::info!("fault: kill -9 nats-server");
            match system.nats_kill().await {
                Ok(()) => faults.nats_restarts += 1,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "nats-server did not come back")
                }
            }
        } else if now >= kill_next {
            let pick = rng.random_range(0..system.instances.len());
            let (service, process) = &mut system.instances[pick];
            tracing::info!(instance = %process.instance_id, "fault: kill -9");
            match process.kill9() {
                Ok(()) => {
                    *faults.kills.entry(service.to_string()).or_default() += 1;
                    restart(process, &mut faults).await;
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "kill -9 failed"),
            }
            kill_at = next_kill(&mut rng);
        }
    }
    system.revive(&mut faults).await;
    (system, faults)
}

// ---- the orders --------------------------------------------------------------

/// One order the run places, all decided up front from the seed.
#[derive(Debug, Clone)]
struct Plan {
    index: usize,
    user: usize,
    items: Vec<(String, i64)>,
    token: &'static str,
    /// Create again with the same key after this long.
    repeat_after: Option<Duration>,
    /// The user cancels after this long.
    cancel_after: Option<Duration>,
}

/// Payment tokens and their weights (see docs/payment.md).
const TOKENS: [(&str, u32); 6] = [
    ("tok_ok", 72),
    ("tok_flaky", 8),
    ("tok_decline", 8),
    ("tok_insufficient_funds", 5),
    ("tok_timeout", 4),
    ("tok_stolen", 3),
];

fn product_id(n: usize) -> String {
    format!("chaos-p{n:02}")
}

/// The stock of product `n`: the first two are scarce.
fn initial_stock(config: &Config, n: usize) -> i64 {
    if n < 2 {
        (config.orders as i64 / 25).clamp(20, 900)
    } else {
        1_000_000
    }
}

fn plans(config: &Config) -> Vec<Plan> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let weights: u32 = TOKENS.iter().map(|(_, w)| w).sum();
    (0..config.orders)
        .map(|index| {
            let lines = rng.random_range(1..=3usize).min(config.products);
            let mut items: Vec<(String, i64)> = Vec::new();
            while items.len() < lines {
                let mut n = rng.random_range(0..config.products);
                // Scarce products come up less often, so they run out late
                // and most orders have stock.
                if n < 2 && rng.random_bool(0.7) {
                    n = rng.random_range(2..config.products);
                }
                let id = product_id(n);
                if !items.iter().any(|(p, _)| *p == id) {
                    items.push((id, rng.random_range(1..=3)));
                }
            }
            if rng.random_bool(config.out_of_stock_ratio) {
                let scarce = product_id(rng.random_range(0..2usize.min(config.products)));
                items.retain(|(p, _)| *p != scarce);
                items.push((scarce, 1000));
            }
            let mut pick = rng.random_range(0..weights);
            let token = TOKENS
                .iter()
                .find(|(_, w)| {
                    let hit = pick < *w;
                    pick = pick.saturating_sub(*w);
                    hit
                })
                .map(|(t, _)| *t)
                .unwrap_or("tok_ok");
            let repeat_after = rng
                .random_bool(config.retry_ratio)
                .then(|| Duration::from_millis(rng.random_range(0..1000)));
            let cancel_after = rng
                .random_bool(config.cancel_ratio)
                .then(|| Duration::from_millis(rng.random_range(0..3000)));
            Plan {
                index,
                user: rng.random_range(0..config.users),
                items,
                token,
                repeat_after,
                cancel_after,
            }
        })
        .collect()
}

/// A user placing orders: id and `Authorization` headers.
#[derive(Clone)]
struct User {
    id: String,
    auth: HeaderMap,
}

/// How a request ended after its retries.
enum Answer {
    Ok(Value),
    /// A 4xx: the request itself was refused.
    Refused(u16, String),
    /// Only timeouts and 5xx until the deadline.
    Unanswered(String),
}

/// Sends a request until it is answered with a result or a 4xx, retrying
/// timeouts, "no responders" and 5xx (with the same payload: the same key)
/// with backoff until `within` has passed. Counts the retries in `retries`.
async fn call(
    client: &async_nats::Client,
    subject: &str,
    headers: &HeaderMap,
    body: &Value,
    within: Duration,
    retries: &mut usize,
) -> Answer {
    let deadline = Instant::now() + within;
    let mut wait = Duration::from_millis(200);
    loop {
        let last =
            match request_json_with_headers(client, subject, headers.clone(), body.to_string())
                .await
            {
                Ok(Reply {
                    error_code: None,
                    body,
                    ..
                }) => return Answer::Ok(body),
                Ok(Reply {
                    error_code: Some(code),
                    error,
                    ..
                }) if (400..500).contains(&code) && code != 408 && code != 429 => {
                    return Answer::Refused(code, error.unwrap_or_default())
                }
                Ok(reply) => format!(
                    "{}: {}",
                    reply.error_code.unwrap_or_default(),
                    reply.error.unwrap_or_default()
                ),
                Err(e) => format!("{e:#}"),
            };
        if Instant::now() + wait > deadline {
            return Answer::Unanswered(last);
        }
        *retries += 1;
        tracing::debug!(subject, error = %last, "retrying");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

/// What placing one order came to.
#[derive(Default)]
struct Placed {
    id: Option<String>,
    refused: Option<u16>,
    retries: usize,
    repeat: Option<Retried>,
    cancel_sent: bool,
    cancel_answered: bool,
}

const CREATE_WITHIN: Duration = Duration::from_secs(90);

async fn place(client: async_nats::Client, user: User, plan: Plan, seed: u64) -> Placed {
    let key = format!("chaos-{seed}-{}", plan.index);
    let items: Vec<Value> = plan
        .items
        .iter()
        .map(|(p, q)| json!({"product_id": p, "quantity": q}))
        .collect();
    let body = json!({"user_id": user.id, "items": items, "payment_token": plan.token, "idempotency_key": key});
    let mut placed = Placed::default();
    let first = call(
        &client,
        "order.create",
        &user.auth,
        &body,
        CREATE_WITHIN,
        &mut placed.retries,
    )
    .await;
    let id = match first {
        Answer::Ok(order) => order["id"].as_str().map(str::to_string),
        Answer::Refused(code, message) => {
            tracing::warn!(key, code, message, "create refused");
            placed.refused = Some(code);
            return placed;
        }
        Answer::Unanswered(last) => {
            tracing::warn!(key, last, "create never answered");
            return placed;
        }
    };
    let Some(id) = id else {
        placed.refused = Some(0);
        return placed;
    };
    placed.id = Some(id.clone());
    let repeat = async {
        let after = plan.repeat_after?;
        tokio::time::sleep(after).await;
        let mut retries = 0;
        match call(
            &client,
            "order.create",
            &user.auth,
            &body,
            CREATE_WITHIN,
            &mut retries,
        )
        .await
        {
            Answer::Ok(order) => Some(Retried {
                key: key.clone(),
                first: id.clone(),
                second: order["id"].as_str().unwrap_or_default().to_string(),
            }),
            Answer::Refused(code, message) => Some(Retried {
                key: key.clone(),
                first: id.clone(),
                second: format!("refused {code}: {message}"),
            }),
            Answer::Unanswered(_) => None,
        }
    };
    let cancel = async {
        let after = plan.cancel_after?;
        tokio::time::sleep(after).await;
        let mut retries = 0;
        let answer = call(
            &client,
            "order.cancel",
            &user.auth,
            &json!({"id": id}),
            CREATE_WITHIN,
            &mut retries,
        )
        .await;
        match &answer {
            Answer::Ok(_) => {}
            Answer::Refused(code, message) => {
                tracing::warn!(order = %id, code, message, "user cancel refused")
            }
            Answer::Unanswered(last) => {
                tracing::warn!(order = %id, last, "user cancel never answered")
            }
        }
        Some(matches!(answer, Answer::Ok(_)))
    };
    let (repeat, cancel) = tokio::join!(repeat, cancel);
    placed.repeat = repeat;
    placed.cancel_sent = cancel.is_some();
    placed.cancel_answered = cancel.unwrap_or(false);
    placed
}

// ---- reading the streams -----------------------------------------------------

/// Everything read so far of one stream, read on from where it stopped.
struct StreamLog {
    name: &'static str,
    events: Vec<Event>,
    next: u64,
}

impl StreamLog {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            events: Vec::new(),
            next: 1,
        }
    }

    /// Reads what the stream holds past what was read, with an ordered
    /// consumer from the next sequence.
    async fn catch_up(&mut self, js: &jetstream::Context) -> anyhow::Result<()> {
        let mut stream = js
            .get_stream(self.name)
            .await
            .with_context(|| format!("stream {}", self.name))?;
        let last = stream.info().await?.state.last_sequence;
        if last < self.next {
            return Ok(());
        }
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: self.next,
                },
                ..Default::default()
            })
            .await
            .with_context(|| format!("consumer on {}", self.name))?;
        let mut messages = consumer.messages().await?;
        while self.next <= last {
            let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .with_context(|| format!("reading {} at {}", self.name, self.next))?
                .with_context(|| format!("{} ended at {}", self.name, self.next))?
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", self.name))?;
            let seq = message
                .info()
                .map_err(|e| anyhow::anyhow!("{} message info: {e}", self.name))?
                .stream_sequence;
            let body = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
            self.events.push(Event::new(seq, body));
            self.next = seq + 1;
        }
        Ok(())
    }
}

struct Streams {
    logs: Vec<StreamLog>,
}

impl Streams {
    fn new() -> Self {
        Self {
            logs: STREAMS.into_iter().map(StreamLog::new).collect(),
        }
    }

    async fn catch_up(&mut self, js: &jetstream::Context) -> anyhow::Result<()> {
        for log in &mut self.logs {
            log.catch_up(js).await?;
        }
        Ok(())
    }

    fn last(&self) -> Vec<u64> {
        self.logs.iter().map(|l| l.next).collect()
    }

    fn history(&self, acknowledged: Vec<String>, retried: Vec<Retried>) -> History {
        let take = |name: &str| {
            self.logs
                .iter()
                .find(|l| l.name == name)
                .map(|l| l.events.clone())
                .unwrap_or_default()
        };
        History {
            acknowledged,
            retried,
            order: take("ORDER"),
            product: take("PRODUCT"),
            payment: take("PAYMENT"),
            notification: take("NOTIFICATION"),
        }
    }
}

/// Why `history` is not quiet yet, or `None`: every order final and every
/// final event notified.
fn unsettled(history: &History) -> Option<String> {
    let mut last: BTreeMap<&str, &str> = BTreeMap::new();
    let mut finals = 0;
    for e in &history.order {
        if let (Some(id), Some(status)) = (
            e.body["order"]["id"].as_str(),
            e.body["order"]["status"].as_str(),
        ) {
            last.insert(id, status);
        }
        if matches!(
            e.body["type"].as_str(),
            Some("order.confirmed" | "order.cancelled")
        ) {
            finals += 1;
        }
    }
    let open = last
        .values()
        .filter(|s| !matches!(**s, "confirmed" | "cancelled"))
        .count();
    let missing = history
        .acknowledged
        .iter()
        .filter(|id| !last.contains_key(id.as_str()))
        .count();
    let notified = history
        .notification
        .iter()
        .filter(|e| {
            e.body["type"] == "notification.sent"
                && e.body["notification"]["source_event"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("ORDER:"))
        })
        .count();
    (open > 0 || missing > 0 || notified < finals).then(|| {
        format!(
            "{open} orders unfinished, {missing} acknowledged not in ORDER, {notified} of {finals} final events notified"
        )
    })
}

// ---- the run -------------------------------------------------------------------

async fn admin_token(client: &async_nats::Client) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match shop_nats::login::login(client, ADMIN_EMAIL, ADMIN_PASSWORD, Duration::from_secs(10))
            .await
        {
            Ok(token) => return Ok(token),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "admin not there yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => anyhow::bail!("admin login: {e}"),
        }
    }
}

async fn setup(client: &async_nats::Client, config: &Config) -> anyhow::Result<Vec<User>> {
    let admin = shop_nats::auth::bearer_headers(&admin_token(client).await?);
    let mut price = StdRng::seed_from_u64(config.seed ^ 0x9e1c);
    for n in 0..config.products {
        let id = product_id(n);
        let body = json!({"id": id, "name": format!("Chaos product {n}"), "price_cents": price.random_range(100..5000), "currency": "USD", "stock": initial_stock(config, n)});
        match call(
            client,
            "product.create",
            &admin,
            &body,
            Duration::from_secs(30),
            &mut 0,
        )
        .await
        {
            Answer::Ok(_) => {}
            Answer::Refused(code, message) => anyhow::bail!("creating {id}: {code} {message}"),
            Answer::Unanswered(last) => anyhow::bail!("creating {id}: {last}"),
        }
    }
    let mut users = Vec::new();
    for n in 0..config.users {
        let email = format!("chaos-{}-{n}@shop.test", config.seed);
        let password = format!("chaos-password-{n}");
        let body = json!({"email": email, "password": password, "name": format!("Chaos {n}")});
        let id = match call(
            client,
            "user.register",
            &HeaderMap::new(),
            &body,
            Duration::from_secs(30),
            &mut 0,
        )
        .await
        {
            Answer::Ok(user) => user["id"]
                .as_str()
                .map(str::to_string)
                .context("user.register answered without an id")?,
            Answer::Refused(code, message) => {
                anyhow::bail!("registering {email}: {code} {message}")
            }
            Answer::Unanswered(last) => anyhow::bail!("registering {email}: {last}"),
        };
        let token = shop_nats::login::login(client, &email, &password, Duration::from_secs(10))
            .await
            .map_err(|e| anyhow::anyhow!("logging in {email}: {e}"))?;
        users.push(User {
            id,
            auth: shop_nats::auth::bearer_headers(&token),
        });
    }
    Ok(users)
}

/// Runs the whole thing and returns what it found.
pub async fn run(config: &Config) -> anyhow::Result<Summary> {
    anyhow::ensure!(config.rate > 0.0, "--rate must be above 0");
    anyhow::ensure!(
        config.users > 0 && config.products >= 2,
        "at least 1 user and 2 products"
    );
    let started = Instant::now();
    let temp;
    let dir = match &config.dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir().context("creating a data directory")?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    tracing::info!(dir = %dir.display(), replicas = config.replicas, "starting the system");
    let system = System::start(config, &dir).await?;
    let client = system.nats.client().await?;
    let users = setup(&client, config).await?;
    tracing::info!(
        users = users.len(),
        products = config.products,
        "set up; placing orders"
    );

    let (stop, stopped) = watch::channel(false);
    let faults = tokio::spawn(inject_faults(system, config.clone(), stopped));

    let load_started = Instant::now();
    let slots = Arc::new(Semaphore::new(config.in_flight.max(1)));
    let mut tasks = Vec::new();
    let start = tokio::time::Instant::now();
    for plan in plans(config) {
        let at = start + Duration::from_secs_f64(plan.index as f64 / config.rate);
        tokio::time::sleep_until(at).await;
        let slot = slots.clone().acquire_owned().await?;
        let user = users[plan.user % users.len()].clone();
        let client = client.clone();
        let seed = config.seed;
        tasks.push(tokio::spawn(async move {
            let placed = place(client, user, plan, seed).await;
            drop(slot);
            placed
        }));
        if plan_index_logged(tasks.len()) {
            tracing::info!(placed = tasks.len(), "placing");
        }
    }
    let mut summary_placed = Vec::new();
    for task in tasks {
        summary_placed.push(task.await.context("an order task panicked")?);
    }
    let load_secs = load_started.elapsed().as_secs_f64();
    stop.send(true).ok();
    let (system, faults) = faults.await.context("the fault task panicked")?;
    tracing::info!(
        ?faults,
        "orders placed; waiting for every order to be final"
    );

    let mut acknowledged = Vec::new();
    let mut retried = Vec::new();
    let mut refused = BTreeMap::new();
    let (mut gave_up, mut create_retries, mut cancels, mut cancels_answered) = (0, 0, 0, 0);
    for p in summary_placed {
        create_retries += p.retries;
        match (&p.id, p.refused) {
            (Some(id), _) => acknowledged.push(id.clone()),
            (None, Some(code)) => *refused.entry(code).or_default() += 1,
            (None, None) => gave_up += 1,
        }
        retried.extend(p.repeat);
        cancels += usize::from(p.cancel_sent);
        cancels_answered += usize::from(p.cancel_answered);
    }

    // Quiescence: every order final, every final event notified, and the
    // streams unchanged over one poll.
    let settle_started = Instant::now();
    let js = jetstream::new(client.clone());
    let mut streams = Streams::new();
    let deadline = settle_started + Duration::from_secs(config.settle_secs);
    let mut seen = Vec::new();
    let settled = loop {
        if let Err(e) = streams.catch_up(&js).await {
            tracing::warn!(error = %format!("{e:#}"), "reading the streams; trying again");
        }
        let now = streams.last();
        let why = unsettled(&streams.history(acknowledged.clone(), Vec::new()));
        if why.is_none() && now == seen {
            break true;
        }
        if Instant::now() > deadline {
            tracing::warn!(why = ?why, "not settled in time; checking anyway");
            break false;
        }
        tracing::info!(why = ?why, "settling");
        seen = now;
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let settle_secs = settle_started.elapsed().as_secs_f64();
    streams
        .catch_up(&js)
        .await
        .context("reading the streams for the checks")?;
    let history = streams.history(acknowledged.clone(), retried.clone());
    let invariants = invariants::check(&history);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut last: BTreeMap<&str, &Value> = BTreeMap::new();
    for e in &history.order {
        if let Some(id) = e.body["order"]["id"].as_str() {
            last.insert(id, &e.body["order"]);
        }
    }
    for order in last.values() {
        let status = order["status"].as_str().unwrap_or("?");
        let key = match order["reason"].as_str() {
            Some(reason) => format!("{status}/{reason}"),
            None => status.to_string(),
        };
        *outcomes.entry(key).or_default() += 1;
    }
    let events = streams
        .logs
        .iter()
        .map(|l| (l.name.to_string(), l.events.len()))
        .collect();
    drop(system);
    Ok(Summary {
        seed: config.seed,
        orders: config.orders,
        rate: config.rate,
        replicas: config.replicas,
        acknowledged: acknowledged.len(),
        refused,
        gave_up,
        create_retries,
        retried_same_key: retried.len(),
        cancels,
        cancels_answered,
        faults,
        outcomes,
        events,
        settled,
        load_secs,
        settle_secs,
        duration_secs: started.elapsed().as_secs_f64(),
        invariants,
    })
}

fn plan_index_logged(n: usize) -> bool {
    n.is_multiple_of(500)
}
