//! The named scenarios, one file each. A scenario prepares what it needs
//! (seeded products, a user ...), builds an [`Operation`], runs it under the
//! chosen load model and returns one [`ScenarioResult`].

pub mod echo;
pub mod gateway_get;
pub mod mixed;
pub mod order_place;
pub mod product_get;
pub mod product_list;
pub mod stock_contention;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use async_nats::{Client, HeaderMap, Request, Subject};
use bytes::Bytes;
use shop_nats::Encoding;

use crate::cpu::{self, CpuUse, Watched};
use crate::load::{self, Model, OpenLimits, Operation, Outcome, RunStats, Schedule};
use crate::nats;

/// Every scenario `run` and `suite` know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// A raw async-nats responder: the ceiling every NATS figure is divided by.
    Echo,
    /// `product.get` of seeded products (JSON or bincode).
    ProductGet,
    /// `product.list` pages of seeded products.
    ProductList,
    /// Many clients reserving stock of a few products.
    StockContention,
    /// HTTP GET /api/products/{id} through the gateway.
    GatewayGet,
    /// `order.create` until the order is confirmed, through every service.
    OrderPlace,
    /// A shop's traffic: mostly product views and lists, some logins and orders.
    Mixed,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::Echo,
        Scenario::ProductGet,
        Scenario::ProductList,
        Scenario::StockContention,
        Scenario::GatewayGet,
        Scenario::OrderPlace,
        Scenario::Mixed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Echo => "echo",
            Scenario::ProductGet => "product-get",
            Scenario::ProductList => "product-list",
            Scenario::StockContention => "stock-contention",
            Scenario::GatewayGet => "gateway-get",
            Scenario::OrderPlace => "order-place",
            Scenario::Mixed => "mixed",
        }
    }

    /// Services a stack the harness starts must run for this scenario.
    pub fn services(self) -> &'static [&'static str] {
        match self {
            Scenario::Echo => &[],
            Scenario::ProductGet
            | Scenario::ProductList
            | Scenario::StockContention
            | Scenario::GatewayGet => &["product"],
            Scenario::OrderPlace | Scenario::Mixed => {
                &["product", "user", "payment", "notification", "order"]
            }
        }
    }

    /// The load model when none is given: open loop where arrivals matter
    /// (orders, a shop's mixed traffic), else 64 requests in flight.
    pub fn default_model(self) -> Model {
        match self {
            Scenario::OrderPlace => Model::Open { rate: 100.0 },
            Scenario::Mixed => Model::Open { rate: 200.0 },
            _ => Model::Closed { in_flight: 64 },
        }
    }

    /// The service whose instances a scaling run varies.
    pub fn scaled_service(self) -> Option<&'static str> {
        match self {
            Scenario::ProductGet | Scenario::ProductList | Scenario::StockContention => {
                Some("product")
            }
            Scenario::OrderPlace => Some("order"),
            _ => None,
        }
    }
}

/// Subject the echo responder serves.
pub const ECHO_SUBJECT: &str = "bench.echo";
/// Prefix of the products read by product-get, product-list, gateway-get and mixed.
pub const READ_PREFIX: &str = "bench-";

/// What a scenario runs against.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub nats_url: String,
    /// gateway-get: URL with an `{id}` placeholder,
    /// e.g. `http://127.0.0.1:3000/api/products/{id}`.
    pub http_url: Option<String>,
    /// Processes to account CPU for (those the harness started).
    pub watched: Vec<Watched>,
    /// Instances of the service under test, when known.
    pub instances: Option<usize>,
    /// JetStream sync setting, when the harness started the server.
    pub nats_sync: Option<String>,
}

/// Mix of the `mixed` scenario, in relative weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub get: u32,
    pub list: u32,
    pub login: u32,
    pub order: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            get: 70,
            list: 20,
            login: 5,
            order: 5,
        }
    }
}

impl Mix {
    /// Parses `get=70,list=20,login=5,order=5` (missing names weigh 0).
    pub fn parse(s: &str) -> Result<Self> {
        let mut mix = Mix {
            get: 0,
            list: 0,
            login: 0,
            order: 0,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .with_context(|| format!("mix entry {part:?}: expected name=weight"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .with_context(|| format!("mix entry {part:?}: weight must be a whole number"))?;
            match name.trim() {
                "get" => mix.get = weight,
                "list" => mix.list = weight,
                "login" => mix.login = weight,
                "order" => mix.order = weight,
                other => anyhow::bail!("mix entry {other:?}: use get, list, login or order"),
            }
        }
        if mix.get + mix.list + mix.login + mix.order == 0 {
            anyhow::bail!("the mix {s:?} has no weight");
        }
        Ok(mix)
    }

    pub fn describe(&self) -> String {
        format!(
            "get={},list={},login={},order={}",
            self.get, self.list, self.login, self.order
        )
    }
}

/// How a scenario is run.
#[derive(Debug, Clone)]
pub struct Options {
    pub model: Model,
    pub duration: Duration,
    pub warmup: Duration,
    /// Repetitions of the measurement; the reported throughput is their median.
    pub rounds: usize,
    /// Per request.
    pub timeout: Duration,
    /// NATS connections of the load generator.
    pub connections: usize,
    /// product-get: JSON or bincode.
    pub encoding: Encoding,
    /// Products seeded for the read scenarios.
    pub products: usize,
    /// product-list: page size.
    pub list_limit: u32,
    /// stock-contention: how many products, and the stock of each.
    pub contention_products: usize,
    pub contention_stock: i64,
    /// order-place: how long to wait for an order to be confirmed.
    pub settle_timeout: Duration,
    pub mix: Mix,
    /// A label for this point (gateway-get: `cached`, `uncached`, `express`).
    pub variant: Option<String>,
    /// gateway-get: seed products through NATS first (not for the Express baseline).
    pub seed: bool,
    pub open_limits: OpenLimits,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            model: Model::Closed { in_flight: 64 },
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            rounds: 1,
            timeout: Duration::from_secs(5),
            connections: 1,
            encoding: Encoding::Json,
            products: 1000,
            list_limit: 20,
            contention_products: 4,
            contention_stock: crate::seed::DEFAULT_STOCK,
            settle_timeout: Duration::from_secs(30),
            mix: Mix::default(),
            variant: None,
            seed: true,
            open_limits: OpenLimits::default(),
        }
    }
}

/// Runs `scenario` against `target`.
pub async fn run(
    scenario: Scenario,
    target: &Target,
    opts: &Options,
) -> Result<crate::results::ScenarioResult> {
    let result = match scenario {
        Scenario::Echo => echo::run(target, opts).await,
        Scenario::ProductGet => product_get::run(target, opts).await,
        Scenario::ProductList => product_list::run(target, opts).await,
        Scenario::StockContention => stock_contention::run(target, opts).await,
        Scenario::GatewayGet => gateway_get::run(target, opts).await,
        Scenario::OrderPlace => order_place::run(target, opts).await,
        Scenario::Mixed => mixed::run(target, opts).await,
    };
    result.with_context(|| format!("scenario {}", scenario.name()))
}

/// Runs `op` for `opts.rounds` rounds under `opts.model`, sampling CPU of the
/// watched processes in each measurement window (averaged over rounds).
pub async fn measure<O: Operation>(
    op: Arc<O>,
    target: &Target,
    opts: &Options,
) -> Result<(Vec<RunStats>, Vec<CpuUse>)> {
    let mut runs = Vec::with_capacity(opts.rounds.max(1));
    let mut cpu_rounds: Vec<Vec<CpuUse>> = Vec::new();
    for _ in 0..opts.rounds.max(1) {
        let schedule = Schedule::starting_now(opts.warmup, opts.duration);
        let sampler = tokio::spawn(cpu::measure(target.watched.clone(), schedule));
        runs.push(load::run(op.clone(), opts.model, schedule, opts.open_limits).await?);
        cpu_rounds.push(sampler.await.context("CPU sampler")?);
    }
    Ok((runs, average_cpu(&cpu_rounds)))
}

fn average_cpu(rounds: &[Vec<CpuUse>]) -> Vec<CpuUse> {
    let Some(first) = rounds.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|c| {
            let samples: Vec<f64> = rounds
                .iter()
                .filter_map(|r| r.iter().find(|x| x.role == c.role).map(|x| x.cores))
                .collect();
            CpuUse {
                role: c.role.clone(),
                processes: c.processes,
                cores: samples.iter().sum::<f64>() / samples.len().max(1) as f64,
            }
        })
        .collect()
}

/// `n` NATS connections for the load generator.
pub async fn connect_clients(url: &str, n: usize, timeout: Duration) -> Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(n.max(1));
    for i in 0..n.max(1) {
        clients.push(nats::connect(url, &format!("shop-bench-{i}"), timeout).await?);
    }
    Ok(clients)
}

/// A short id unique to this run, for idempotency keys and fresh entities.
pub fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}",
        (nanos as u64) ^ u64::from(std::process::id()).rotate_left(40)
    )
}

/// SplitMix64: a cheap, well-spread hash of a request number (for choosing
/// products and operations without a shared random generator).
pub fn spread(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A request-reply to one subject, payloads taken in turn; a reply with error
/// headers counts as an error of its code.
pub struct NatsRequest {
    pub name: &'static str,
    pub clients: Vec<Client>,
    pub subject: Subject,
    pub payloads: Vec<Bytes>,
    pub headers: Option<HeaderMap>,
    pub timeout: Duration,
}

impl Operation for NatsRequest {
    async fn call(&self, seq: u64) -> Outcome {
        let client = &self.clients[(seq % self.clients.len() as u64) as usize];
        let payload = self.payloads[(spread(seq) % self.payloads.len() as u64) as usize].clone();
        let mut request = Request::new().payload(payload).timeout(Some(self.timeout));
        if let Some(h) = &self.headers {
            request = request.headers(h.clone());
        }
        match nats::reply_outcome(client.send_request(self.subject.clone(), request).await) {
            Ok(reply) => Outcome::ok(self.name, reply.payload.len()),
            Err(e) => Outcome::err(self.name, e),
        }
    }

    fn label(&self, _seq: u64) -> &'static str {
        self.name
    }
}

/// `{"id":"<id>"}` payloads of products `0..count` with `prefix`.
pub fn id_payloads(prefix: &str, count: usize) -> Vec<Bytes> {
    (0..count.max(1))
        .map(|i| {
            Bytes::from(serde_json::json!({ "id": crate::seed::product_id(prefix, i) }).to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse() {
        assert_eq!(
            Mix::parse("get=70,list=20,login=5,order=5").unwrap(),
            Mix::default()
        );
        let m = Mix::parse("get=1").unwrap();
        assert_eq!((m.get, m.list, m.login, m.order), (1, 0, 0, 0));
        assert!(Mix::parse("get=0").is_err());
        assert!(Mix::parse("browse=3").is_err());
        assert!(Mix::parse("get=x").is_err());
    }

    #[test]
    fn spread_covers_buckets_evenly() {
        let mut buckets = [0u32; 10];
        for seq in 0..100_000u64 {
            buckets[(spread(seq) % 10) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|b| (9_500..10_500).contains(b)),
            "{buckets:?}"
        );
    }

    #[test]
    fn names_are_the_cli_names() {
        use clap::ValueEnum;
        for s in Scenario::ALL {
            let v = s.to_possible_value().unwrap();
            assert_eq!(v.get_name(), s.name());
        }
    }
}
