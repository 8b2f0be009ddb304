//! The named scenarios: each runs an [`Operation`] under a load model to a [`ScenarioResult`].

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

use crate::appends;
use crate::cpu::{self, Watched};
use crate::load::{self, Model, Operation, Outcome, Schedule};
use crate::nats;
use crate::results::{Meta, ScenarioResult, Settings};
pub use mixed::Mix;
pub use reads::ECHO_SUBJECT;

/// Open loop: requests outstanding at most (beyond: counted as `overload` errors).
const MAX_IN_FLIGHT: usize = 20_000;

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
    /// Its command-line name, e.g. `product-get`.
    pub fn name(self) -> String {
        let value = clap::ValueEnum::to_possible_value(&self);
        value.map_or_else(String::new, |v| v.get_name().to_string())
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

    /// The load model when none is given: open loop for orders and mixed, else closed 64.
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
            Scenario::OrderPlace => Some("order"),
            Scenario::Echo | Scenario::GatewayGet | Scenario::Mixed => None,
            _ => Some("product"),
        }
    }
}

/// What a scenario runs against.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub nats_url: String,
    /// gateway-get: URL with an `{id}` placeholder.
    pub http_url: Option<String>,
    /// Processes to account CPU for (those the harness started).
    pub watched: Vec<Watched>,
    /// Instances of the service under test, when known.
    pub instances: Option<usize>,
    /// JetStream sync setting, when the harness started the server.
    pub nats_sync: Option<String>,
    /// The monitoring address (`host:port`) of the server the load generator
    /// uses, when the harness started it: appends per stream are read there.
    pub monitor: Option<String>,
}

fn parse_encoding(s: &str) -> Result<Encoding> {
    match s {
        "json" => Ok(Encoding::Json),
        "bincode" => Ok(Encoding::Bincode),
        other => anyhow::bail!("{other:?}: json or bincode"),
    }
}

/// How a scenario is run; its command-line flags too (`run`, `scaling`).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Set from --model, --in-flight and --rate (see [`Options::with_model`]).
    #[arg(skip = Model::Closed { in_flight: 64 })]
    pub model: Model,
    /// Measured time per round (e.g. 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Warm-up before measuring.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Rounds; the throughput reported is their median.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// product-get: request encoding (json or bincode).
    #[arg(long, default_value = "json", value_parser = parse_encoding)]
    pub encoding: Encoding,
    /// Products seeded for the read scenarios.
    #[arg(long, default_value_t = 1000)]
    pub products: usize,
    /// product-list: page size.
    #[arg(long = "limit", default_value_t = 20)]
    pub list_limit: u32,
    /// stock-contention: number of products.
    #[arg(long, default_value_t = 4)]
    pub contention_products: usize,
    /// stock-contention: stock of each (small values exercise running out).
    #[arg(long = "stock", default_value_t = crate::seed::DEFAULT_STOCK)]
    pub contention_stock: i64,
    /// order-place: how long an order may take to be confirmed.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub settle_timeout: Duration,
    /// mixed: weights, e.g. get=70,list=20,login=5,order=5.
    #[arg(long, default_value = "get=70,list=20,login=5,order=5", value_parser = Mix::parse)]
    pub mix: Mix,
    /// Label of this point (gateway-get: cached, uncached, express).
    #[arg(long)]
    pub variant: Option<String>,
    /// gateway-get: seed products through NATS first (--no-seed: not, e.g.
    /// against the Express baseline, which has them in memory).
    #[arg(long = "no-seed", action = clap::ArgAction::SetFalse)]
    pub seed: bool,
}

impl Options {
    /// These options under `model`, with every count at least one.
    pub fn with_model(mut self, model: Model) -> Self {
        self.model = model;
        self.rounds = self.rounds.max(1);
        self.products = self.products.max(1);
        self.contention_products = self.contention_products.max(1);
        self
    }

    /// The settings of points run with these options, and `extra` ones.
    pub fn settings<const N: usize>(&self, extra: [(&str, serde_json::Value); N]) -> Settings {
        Settings {
            duration_s: self.duration.as_secs_f64(),
            warmup_s: self.warmup.as_secs_f64(),
            timeout_s: self.timeout.as_secs_f64(),
            in_flight: match self.model {
                Model::Closed { in_flight } => in_flight,
                Model::Open { .. } => 0,
            },
            extra: extra.map(|(k, v)| (k.to_string(), v)).into(),
            ..Settings::default()
        }
    }
}

impl Default for Options {
    /// The command line's defaults.
    fn default() -> Self {
        // Without flags every field takes its default, and those parse.
        from_flags("").expect("the default flags parse")
    }
}

/// `T`'s command-line flags parsed from `flags` (split at white space).
pub fn from_flags<T: clap::Args>(flags: &str) -> Result<T, clap::Error> {
    #[derive(clap::Parser)]
    struct Flags<T: clap::Args> {
        #[command(flatten)]
        flags: T,
    }
    let args = std::iter::once("shop-bench").chain(flags.split_whitespace());
    <Flags<T> as clap::Parser>::try_parse_from(args).map(|f| f.flags)
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

/// Runs `op` for `opts.rounds` rounds, sampling CPU in each window; the rounds combined.
pub async fn measure<O: Operation>(
    op: Arc<O>,
    target: &Target,
    opts: &Options,
    mut meta: Meta,
) -> Result<ScenarioResult> {
    meta.instances = target.instances;
    meta.nats_sync = target.nats_sync.clone();
    let mut rounds = Vec::with_capacity(opts.rounds.max(1));
    for _ in 0..opts.rounds.max(1) {
        let schedule = Schedule::starting_now(opts.warmup, opts.duration);
        let sampler = tokio::spawn(cpu::measure(target.watched.clone(), schedule));
        let appends = (target.monitor.clone()).map(|m| tokio::spawn(appends::measure(m, schedule)));
        let run = load::run(op.clone(), opts.model, schedule, MAX_IN_FLIGHT).await?;
        let cpu = sampler.await.context("CPU sampler")?;
        let mut result = ScenarioResult::from_run(meta.clone(), &run, cpu);
        if let Some(appends) = appends {
            let appends = appends.await.context("appends sampler")?;
            let appends = appends.unwrap_or_default();
            (result.appends_per_s, result.memory_streams) = (appends.per_s, appends.memory);
        }
        rounds.push(result);
    }
    ScenarioResult::combine_rounds(rounds)
}

/// The load generator's NATS connection.
pub async fn connect(target: &Target, opts: &Options) -> Result<Client> {
    nats::connect(&target.nats_url, "shop-bench", opts.timeout).await
}

/// A short id unique to this run, for idempotency keys and fresh entities.
pub fn run_id() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH);
    let nanos = now.map_or(0, |d| d.as_nanos() as u64);
    let pid = u64::from(std::process::id()).rotate_left(40);
    format!("{:x}", nanos ^ pid)
}

/// SplitMix64: a cheap, well-spread hash of a request number.
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

/// A request-reply to one subject, payloads taken in turn.
pub struct NatsRequest {
    pub name: &'static str,
    pub client: Client,
    pub payloads: Vec<Bytes>,
    pub headers: Option<HeaderMap>,
    pub timeout: Duration,
}

impl Operation for NatsRequest {
    async fn call(&self, seq: u64) -> Outcome {
        let payload = pick(&self.payloads, seq).clone();
        let mut req = Request::new().payload(payload).timeout(Some(self.timeout));
        if let Some(h) = &self.headers {
            req = req.headers(h.clone());
        }
        match request(&self.client, self.name, self.name, req).await {
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
    fn options_are_flags() {
        let given: Options =
            from_flags("--no-seed --stock 5 --limit 7 --encoding bincode").unwrap();
        assert!(!given.seed && given.contention_stock == 5 && given.list_limit == 7);
        assert_eq!(given.encoding, Encoding::Bincode);
        let defaults = Options::default();
        assert!(defaults.seed && defaults.mix == Mix::default());
        assert_eq!(defaults.duration, Duration::from_secs(10));
        assert!(from_flags::<Options>("--encoding xml").is_err());
        let mut no_rounds = defaults;
        no_rounds.rounds = 0;
        assert_eq!(no_rounds.with_model(Model::Open { rate: 1.0 }).rounds, 1);
    }

    #[test]
    fn spread_covers_buckets_evenly() {
        let mut buckets = [0u32; 10];
        for seq in 0..100_000u64 {
            buckets[(spread(seq) % 10) as usize] += 1;
        }
        let even = buckets.iter().all(|b| (9_500..10_500).contains(b));
        assert!(even, "{buckets:?}");
    }
}
