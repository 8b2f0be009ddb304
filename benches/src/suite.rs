//! The standard suite: every scenario in phases on fresh stacks (see BENCHMARKS.md).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use async_nats::Client;
use clap::ValueEnum;
use serde_json::json;
use shop_nats::Encoding;

use crate::load::Model;
use crate::machine;
use crate::results::{check_targets, ResultsFile, ScenarioResult};
use crate::scenarios::gateway_get::PRODUCT_PATH;
use crate::scenarios::{self, reads, Mix, Options, Scenario, ECHO_SUBJECT};
use crate::seed::read_id;
use crate::stack::{JetStreamSync, Stack, StackConfig};
use crate::stats::fmt_ms;
use crate::{nats, scaling};

/// Least warm-up of an HTTP point that wrk did not warm up first (V8's JIT).
const HTTP_WARMUP: Duration = Duration::from_secs(5);

/// Requests in flight of the closed-loop points, and wrk's connections.
const IN_FLIGHT: usize = 64;
const CLOSED: Model = Model::Closed {
    in_flight: IN_FLIGHT,
};

/// The gateway's cache switch (`on`/`off`, services/gateway/src/config.rs).
pub const GATEWAY_CACHE_ENV: &str = "GATEWAY_CACHE";

/// What the suite runs and how long; its command-line flags too.
#[derive(Debug, Clone, clap::Args)]
pub struct SuiteConfig {
    /// 2 s points after 0.5 s of warm-up: checks that everything works; the
    /// figures mean little.
    #[arg(long)]
    pub quick: bool,
    /// Only these scenarios (comma-separated; `scaling` for the scaling runs).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Measured time per point (default 10s, quick 2s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Warm-up per point (default 2s, quick 500ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// Rounds of echo and product-get, alternated (default 2, quick 1).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// order-place arrival rates.
    #[arg(long, value_delimiter = ',', default_value = "250,500")]
    pub order_rates: Vec<f64>,
    /// mixed arrival rate.
    #[arg(long, default_value_t = 200.0)]
    pub mixed_rate: f64,
    /// Arrival rate of the open-loop product-get point.
    #[arg(long, default_value_t = 10_000.0)]
    pub read_rate: f64,
    /// Instance counts of the scaling runs.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub instances: Vec<usize>,
    /// No wrk cross-check of gateway-get.
    #[arg(long)]
    pub no_wrk: bool,
}

impl SuiteConfig {
    /// Rounds of echo and product-get/json.
    fn rounds(&self) -> usize {
        self.rounds.unwrap_or(if self.quick { 1 } else { 2 }).max(1)
    }

    fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }

    /// A point's options under `model`: the standard settings, or `--quick` ones.
    pub fn options(&self, model: Model) -> Options {
        let (duration, warmup, settle) = match self.quick {
            true => (2_000, 500, 10),
            false => (10_000, 2_000, 20),
        };
        Options {
            duration: (self.duration).unwrap_or(Duration::from_millis(duration)),
            warmup: (self.warmup).unwrap_or(Duration::from_millis(warmup)),
            settle_timeout: Duration::from_secs(settle),
            ..Options::default()
        }
        .with_model(model)
    }

    /// The options of the closed-loop points ([`IN_FLIGHT`] requests in flight).
    pub fn closed(&self) -> Options {
        self.options(CLOSED)
    }
}

struct Run {
    file: ResultsFile,
    failures: Vec<String>,
    started: Instant,
}

impl Run {
    fn progress(&self, what: &str) {
        eprintln!("[{:>5.0}s] {what}", self.started.elapsed().as_secs_f64());
    }

    /// Reports a point's outcome; a failure is noted (in the file too).
    fn record(&mut self, what: &str, outcome: Result<ScenarioResult>) -> Option<ScenarioResult> {
        let r = outcome
            .map_err(|e| self.fail(format!("{what} failed: {e:#}")))
            .ok()?;
        let problems = r.problems(0.01);
        let problems = match problems.is_empty() {
            true => String::new(),
            false => format!(" — {}", problems.join("; ")),
        };
        let p99 = r.latency_ms.map_or("-".to_string(), |l| fmt_ms(l.p99));
        let (key, rate, errors) = (&r.key, r.throughput_per_s, r.errors);
        eprintln!("         {key}: {rate:.0} ok/s, p99 {p99} ms, {errors} errors{problems}");
        Some(r)
    }

    fn fail(&mut self, message: String) {
        eprintln!("         {message}");
        self.file.notes.push(message.clone());
        self.failures.push(message);
    }

    fn note(&mut self, note: String) {
        eprintln!("         note: {note}");
        self.file.notes.push(note);
    }

    /// Runs one point of `scenario` on `stack`; its result, unless it failed.
    async fn measure(
        &mut self,
        stack: &Stack,
        scenario: Scenario,
        opts: &Options,
        what: Option<String>,
    ) -> Option<ScenarioResult> {
        let name = scenario.name();
        let what = what.unwrap_or_else(|| format!("{name} ({})", opts.model.describe()));
        self.progress(&what);
        let run = async { scenarios::run(scenario, &stack.target(Some(1))?, opts).await };
        self.record(&name, run.await)
    }

    /// Runs each of `points` that the configuration wants and keeps their results.
    async fn points(
        &mut self,
        cfg: &SuiteConfig,
        stack: &mut Stack,
        points: &[(Scenario, Options)],
    ) -> Result<()> {
        for (scenario, opts) in points.iter().filter(|(s, _)| cfg.wants(&s.name())) {
            stack.check_alive()?;
            let kept = self.measure(stack, *scenario, opts, None).await;
            self.file.results.extend(kept);
        }
        stack.check_alive()
    }
}

/// Runs the suite; returns the results file and the failures (also in its notes).
pub async fn run(cfg: &SuiteConfig, stack: &StackConfig) -> Result<(ResultsFile, Vec<String>)> {
    for name in &cfg.only {
        if name != "scaling" && !Scenario::value_variants().iter().any(|s| s.name() == *name) {
            bail!("--only {name}: not a scenario (or `scaling`)");
        }
    }
    let opts = cfg.closed();
    let mut settings = opts.settings([
        ("rounds_echo_product_get", json!(cfg.rounds())),
        ("products", json!(opts.products)),
        ("read_rate", json!(cfg.read_rate)),
        ("order_rates", json!(cfg.order_rates)),
        ("mixed_rate", json!(cfg.mixed_rate)),
        ("mix", json!(Mix::default().describe())),
        ("settle_timeout_s", json!(opts.settle_timeout.as_secs_f64())),
        ("instances", json!(scaling::counts(&cfg.instances)?)),
        ("nats_auth", json!(stack.auth)),
    ]);
    settings.quick = cfg.quick;
    settings.services_rust_log = Some(stack.services_rust_log.clone());
    let mut run = Run {
        file: ResultsFile::new(settings),
        failures: Vec::new(),
        started: Instant::now(),
    };
    let reads = [
        "echo",
        "product-get",
        "product-list",
        "stock-contention",
        "gateway-get",
    ];
    let phases: [(&str, &[&str]); 4] = [
        ("reads", &reads),
        ("orders", &["mixed", "order-place"]),
        ("orders-default-sync", &["order-place"]),
        ("scaling", &["scaling"]),
    ];
    for (phase, scenarios) in phases {
        if !scenarios.iter().any(|s| cfg.wants(s)) {
            continue;
        }
        run.progress(&format!("phase {phase}"));
        let mut config = stack.clone();
        config.logs_dir = stack.logs_dir.join(phase);
        let mut stack = Stack::new(config)?;
        let outcome = match phase {
            "reads" => reads_phase(cfg, &mut run, &mut stack).await,
            "orders" => orders(cfg, &mut run, &mut stack, JetStreamSync::Always).await,
            "orders-default-sync" => {
                orders(cfg, &mut run, &mut stack, JetStreamSync::Default).await
            }
            _ => scaling_phase(cfg, &mut run, &mut stack).await,
        };
        if let Err(e) = outcome {
            run.fail(format!("phase {phase} failed: {e:#}"));
        }
        stack.stop().await;
    }
    run.file.targets = check_targets(&run.file);
    run.progress("suite done");
    Ok((run.file, run.failures))
}

/// Starts the stack's nats-server; the first one's version goes in the file.
async fn start_nats(run: &mut Run, stack: &mut Stack, sync: JetStreamSync) -> Result<Client> {
    let url = stack.start_nats(sync).await?;
    let client = nats::connect(&url, "shop-bench-suite", Duration::from_secs(10)).await?;
    let version = client.server_info().version;
    run.file.versions.nats_server.get_or_insert(version);
    Ok(client)
}

async fn reads_phase(cfg: &SuiteConfig, run: &mut Run, stack: &mut Stack) -> Result<()> {
    let client = start_nats(run, stack, JetStreamSync::Always).await?;
    stack.start_service("product", &[]).await?;
    let c = cfg.closed();
    reads::seed_reads(&client, c.products).await?;
    // The echo reply is as big as a product's: the difference is product.get's work.
    let reply_bytes = reads::probe(&client, &read_id(0), Encoding::Json, c.timeout).await?;
    stack.start_echo(ECHO_SUBJECT, reply_bytes).await?;
    let extra = &mut run.file.settings.extra;
    extra.insert("echo_reply_bytes".into(), json!(reply_bytes));

    let (mut rounds, n) = (vec![Vec::new(), Vec::new()], cfg.rounds());
    for round in 0..n {
        // ABBA: echo first in even rounds, product-get first in odd ones.
        let mut order = [Scenario::Echo, Scenario::ProductGet];
        order.rotate_left(round % 2);
        for s in order.into_iter().filter(|s| cfg.wants(&s.name())) {
            let model = c.model.describe();
            let what = format!("{} ({model}) round {}/{n}", s.name(), round + 1);
            let kept = run.measure(stack, s, &c, Some(what)).await;
            rounds[usize::from(s == Scenario::ProductGet)].extend(kept);
        }
    }
    for rounds in rounds.into_iter().filter(|r| !r.is_empty()) {
        let combined = ScenarioResult::combine_rounds(rounds)?;
        run.file.results.push(combined);
    }
    let mut bincode = c.clone();
    bincode.encoding = Encoding::Bincode;
    let rate = cfg.read_rate;
    let open = cfg.options(Model::Open { rate });
    let points = [
        (Scenario::ProductGet, bincode),
        (Scenario::ProductGet, open),
        (Scenario::ProductList, c.clone()),
        (Scenario::StockContention, c),
    ];
    run.points(cfg, stack, &points).await?;
    if cfg.wants("gateway-get") {
        gateway(cfg, run, stack).await;
    }
    stack.check_alive()
}

/// The gateway points, Rust and Express; what cannot run is noted, a failure recorded.
async fn gateway(cfg: &SuiteConfig, run: &mut Run, stack: &mut Stack) {
    let wrk = (!cfg.no_wrk).then(|| find_on_path("wrk")).flatten();
    if !cfg.no_wrk && wrk.is_none() {
        let note = "wrk is not installed: no wrk cross-check of gateway-get (apt-get install wrk)";
        run.note(note.into());
    }
    let mut variants = Vec::new();
    let gateway = stack.config.gateway_bin();
    let shown = gateway.display();
    let skipped = format!("gateway-get (Rust gateway) skipped: {shown} is not built");
    match gateway.exists() {
        true => variants.extend(["cached", "uncached"]),
        false => run.note(skipped),
    }
    if stack.config.express_available() {
        run.file.versions.node = machine::program_version(&stack.config.node);
        variants.extend(["express", "express-keepalive"]);
    } else {
        let dir = stack.config.express_dir.display();
        let skipped = format!("gateway-get Express baseline skipped: run `npm ci` in {dir}");
        run.note(skipped);
    }
    for variant in variants {
        run.progress(&format!("gateway-get {variant} (closed {IN_FLIGHT})"));
        let role = format!("gateway-{variant}");
        let outcome = http_point(cfg, stack, &role, variant, wrk.as_deref()).await;
        let kept = run.record(&format!("gateway-get {variant}"), outcome);
        run.file.results.extend(kept);
        for role in [role.as_str(), "express-gateway", "express-product"] {
            stack.stop_role(role).await;
        }
    }
}

/// Measures gateway-get through the gateway of `variant`, after `wrk` if installed.
async fn http_point(
    cfg: &SuiteConfig,
    stack: &mut Stack,
    role: &str,
    variant: &str,
    wrk: Option<&Path>,
) -> Result<ScenarioResult> {
    let rust_gateway = matches!(variant, "cached" | "uncached");
    let base = if rust_gateway {
        let cache = if variant == "cached" { "on" } else { "off" };
        let env = [(GATEWAY_CACHE_ENV, cache)];
        let started = stack.start_gateway(role, &env).await;
        started.context("starting the gateway")?
    } else {
        let started = stack.start_express(variant == "express-keepalive").await;
        started.context("starting the Express baseline")?
    };
    let mut opts = cfg.closed();
    let mut wrk_rps = None;
    if let Some(wrk) = wrk {
        let url = format!("{base}{}", PRODUCT_PATH.replace("{id}", &read_id(0)));
        let duration = opts.duration.min(Duration::from_secs(5));
        match run_wrk(wrk, &url, IN_FLIGHT, duration).await {
            Ok(rps) => wrk_rps = Some(rps),
            Err(e) => eprintln!("         wrk failed: {e:#}"),
        }
    }
    (opts.variant, opts.seed) = (Some(variant.to_string()), rust_gateway);
    if wrk_rps.is_none() {
        opts.warmup = opts.warmup.max(HTTP_WARMUP);
    }
    let mut target = stack.target(Some(1))?;
    target.http_url = Some(format!("{base}{PRODUCT_PATH}"));
    let mut r = scenarios::run(Scenario::GatewayGet, &target, &opts).await?;
    let wrk_rps = wrk_rps.map(|rps| ("wrk_requests_per_s".to_string(), rps));
    r.extra.extend(wrk_rps);
    Ok(r)
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    let mut found = std::env::split_paths(&paths).map(|p| p.join(program));
    found.find(|p| p.is_file())
}

/// `wrk -t1 -c<n> -d<s>` against one URL; its requests per second.
async fn run_wrk(wrk: &Path, url: &str, connections: usize, duration: Duration) -> Result<f64> {
    let c = format!("-c{connections}");
    let d = format!("-d{}s", duration.as_secs().max(1));
    let out = tokio::process::Command::new(wrk)
        .args(["-t1", &c, &d, url])
        .output();
    let out = out.await.context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))
}

/// `Requests/sec:  12345.67` from wrk's output.
pub fn parse_wrk(text: &str) -> Option<f64> {
    let mut lines = text.lines().map(str::trim);
    let rate = lines.find_map(|l| l.strip_prefix("Requests/sec:"))?;
    rate.trim().parse().ok()
}

/// mixed (with the project's sync only) and order-place at each rate.
async fn orders(
    cfg: &SuiteConfig,
    run: &mut Run,
    stack: &mut Stack,
    sync: JetStreamSync,
) -> Result<()> {
    start_nats(run, stack, sync).await?;
    for service in Scenario::OrderPlace.services() {
        stack.start_service(service, &[]).await?;
    }
    let open = |s, rate| (s, cfg.options(Model::Open { rate }));
    let mut points = Vec::new();
    if sync == JetStreamSync::Always {
        points.push(open(Scenario::Mixed, cfg.mixed_rate));
    }
    points.extend(
        cfg.order_rates
            .iter()
            .map(|r| open(Scenario::OrderPlace, *r)),
    );
    run.points(cfg, stack, &points).await
}

async fn scaling_phase(cfg: &SuiteConfig, run: &mut Run, stack: &mut Stack) -> Result<()> {
    start_nats(run, stack, JetStreamSync::Always).await?;
    let c = cfg.closed();
    let plans = [
        (Scenario::ProductGet, c.clone()),
        (Scenario::ProductList, c),
    ];
    let progress = |what: &str| run.progress(what);
    let runs = scaling::run_on(stack, &plans, &cfg.instances, progress).await?;
    run.file.scaling.extend(runs);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::from_flags;

    #[test]
    fn reads_wrk_output() {
        let out = "Running 5s test @ http://127.0.0.1:3000/x\n  1 threads and 64 connections\n  Latency   1.00ms\nRequests/sec:  12345.67\nTransfer/sec:      2.00MB\n";
        assert_eq!(parse_wrk(out), Some(12345.67));
        assert_eq!(parse_wrk("nothing"), None);
    }

    #[test]
    fn quick_mode_is_short() {
        let parse = |flags: &str| from_flags::<SuiteConfig>(flags).unwrap();
        let (quick, full) = (parse("--quick"), parse(""));
        let (q, f) = (quick.closed(), full.closed());
        assert!(q.duration < f.duration && quick.rounds() <= full.rounds());
        let (ten, two) = (Duration::from_secs(10), Duration::from_secs(2));
        assert_eq!((f.duration, f.warmup), (ten, two));
        assert_eq!(full.instances, vec![1, 2, 4]);
        assert!(full.wants("echo"));
        let only = parse("--only echo --duration 1s");
        assert!(only.wants("echo") && !only.wants("mixed"));
        assert_eq!(only.closed().duration, Duration::from_secs(1));
    }
}
