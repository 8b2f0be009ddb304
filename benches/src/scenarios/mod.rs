//! The named scenarios. A scenario prepares what it needs (seeded products, a
//! user ...), builds an [`Operation`], runs it under the chosen load model and
//! returns one [`ScenarioResult`]. `reads` holds echo, product-get and
//! product-list; the others have a file each.

pub mod gateway_get;
pub mod mixed;
pub mod order_place;
pub mod reads;
pub mod stock_contention;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use async_nats::{Client, HeaderMap, Message, Request, Subject};
use bytes::Bytes;
use shop_nats::Encoding;

use crate::cpu::{self, CpuUse, Watched};
use crate::load::{self, Model, OpenLimits, Operation, Outcome, RunStats, Schedule};
use crate::nats;
use crate::results::{Meta, ScenarioResult};
pub use crate::seed::READ_PREFIX;
pub use mixed::Mix;
pub use reads::ECHO_SUBJECT;

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
            Scenario::OrderPlace | Scenario::Mixed => {
                &["product", "user", "payment", "notification", "order"]
            }
            _ => &["product"],
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

impl Target {
    /// One point of `scenario` against this target, from its rounds.
    pub fn result(
        &self,
        scenario: &str,
        variant: Option<&str>,
        under_load: impl Into<String>,
        runs: &[RunStats],
        cpu: Vec<CpuUse>,
    ) -> Result<ScenarioResult> {
        let meta = Meta {
            instances: self.instances,
            nats_sync: self.nats_sync.clone(),
            ..Meta::new(scenario, variant, under_load)
        };
        ScenarioResult::from_runs(meta, runs, cpu)
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
pub async fn run(scenario: Scenario, target: &Target, opts: &Options) -> Result<ScenarioResult> {
    let result = match scenario {
        Scenario::Echo => reads::echo(target, opts).await,
        Scenario::ProductGet => reads::product_get(target, opts).await,
        Scenario::ProductList => reads::product_list(target, opts).await,
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
    let rounds: Vec<&[CpuUse]> = cpu_rounds.iter().map(Vec::as_slice).collect();
    Ok((
        runs,
        cpu::average(rounds.first().copied().unwrap_or_default(), &rounds),
    ))
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
    let pid = u64::from(std::process::id()).rotate_left(40);
    format!("{:x}", (nanos as u64) ^ pid)
}

/// SplitMix64: a cheap, well-spread hash of a request number (for choosing
/// products and operations without a shared random generator).
pub fn spread(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One of `items`, picked by request number `seq`.
pub fn pick<T>(items: &[T], seq: u64) -> &T {
    &items[(spread(seq) % items.len() as u64) as usize]
}

/// A NATS request with a timeout, its reply as an outcome of `op`.
pub async fn request(
    client: &Client,
    op: &'static str,
    subject: impl Into<Subject>,
    request: Request,
) -> Result<Message, Outcome> {
    nats::reply_outcome(client.send_request(subject.into(), request).await)
        .map_err(|e| Outcome::err(op, e))
}

/// A request-reply to one subject, payloads taken in turn; a reply with error
/// headers counts as an error of its code.
pub struct NatsRequest {
    pub name: &'static str,
    pub clients: Vec<Client>,
    pub payloads: Vec<Bytes>,
    pub headers: Option<HeaderMap>,
    pub timeout: Duration,
}

impl Operation for NatsRequest {
    async fn call(&self, seq: u64) -> Outcome {
        let client = &self.clients[(seq % self.clients.len() as u64) as usize];
        let mut req = Request::new()
            .payload(pick(&self.payloads, seq).clone())
            .timeout(Some(self.timeout));
        if let Some(h) = &self.headers {
            req = req.headers(h.clone());
        }
        match request(client, self.name, Subject::from_static(self.name), req).await {
            Ok(reply) => Outcome::ok(self.name, reply.payload.len()),
            Err(failed) => failed,
        }
    }

    fn label(&self, _seq: u64) -> &'static str {
        self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
