//! The standard suite: every scenario at its standard settings, in phases that
//! each start a fresh stack (nats-server with the project's configuration,
//! release builds of the services) and stop it afterwards.
//!
//! | phase | stack | points |
//! | --- | --- | --- |
//! | reads | nats (`sync_interval: always`), product ×1, echo | echo and product-get/json alternated over rounds; product-get/bincode; product-get/json open loop; product-list; stock-contention; gateway-get cached, uncached and the Express baseline |
//! | orders | nats (`always`), product, user, payment, notification, order ×1 | mixed (open loop); order-place at each rate |
//! | orders-default-sync | nats (default sync), the same services | order-place at each rate |
//! | scaling | nats (`always`), product ×1, 2, 4 | product-get/json and product-list at each count |

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::Client;

use crate::load::Model;
use crate::machine;
use crate::results::{check_targets, ResultsFile, ScalingRun, ScenarioResult, Settings};
use crate::scenarios::{self, gateway_get::PRODUCT_PATH, reads, Options, Scenario, ECHO_SUBJECT};
use crate::seed::read_id;
use crate::stack::{JetStreamSync, Stack, StackConfig};
use crate::stats::fmt_ms;
use crate::{nats, scaling};

/// Least warm-up of an HTTP point that wrk did not warm up first (V8's JIT
/// needs a few seconds of load before the Express baseline runs at speed).
const HTTP_WARMUP: Duration = Duration::from_secs(5);

/// The gateway's cache switch (`on`/`off`, services/gateway/src/config.rs).
pub const GATEWAY_CACHE_ENV: &str = "GATEWAY_CACHE";

/// What the suite runs and how long.
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    pub stack: StackConfig,
    pub quick: bool,
    pub duration: Duration,
    pub warmup: Duration,
    /// Rounds of echo and product-get/json, alternated.
    pub rounds: usize,
    pub in_flight: usize,
    pub timeout: Duration,
    pub products: usize,
    /// Arrival rate of the open-loop product-get point.
    pub read_rate: f64,
    pub order_rates: Vec<f64>,
    pub mixed_rate: f64,
    pub settle_timeout: Duration,
    pub instances: Vec<usize>,
    /// Run `wrk` against each HTTP target too, when it is installed.
    pub wrk: bool,
    /// Only these scenarios (and `scaling`); empty = all.
    pub only: Vec<String>,
}

/// This program's arguments, as the results file records them.
pub fn command_line() -> String {
    std::env::args().skip(1).collect::<Vec<_>>().join(" ")
}

impl SuiteConfig {
    /// The standard settings (10 s points after 2 s of warm-up), or `--quick`
    /// ones (2 s after 0.5 s: only to see that everything works).
    pub fn standard(stack: StackConfig, quick: bool) -> Self {
        Self {
            stack,
            quick,
            duration: Duration::from_secs(if quick { 2 } else { 10 }),
            warmup: Duration::from_millis(if quick { 500 } else { 2000 }),
            rounds: if quick { 1 } else { 2 },
            in_flight: 64,
            timeout: Duration::from_secs(5),
            products: 1000,
            read_rate: 10_000.0,
            order_rates: vec![250.0, 500.0],
            mixed_rate: 200.0,
            settle_timeout: Duration::from_secs(if quick { 10 } else { 20 }),
            instances: vec![1, 2, 4],
            wrk: true,
            only: Vec::new(),
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }

    fn options(&self, model: Model) -> Options {
        Options {
            model,
            duration: self.duration,
            warmup: self.warmup,
            rounds: 1,
            timeout: self.timeout,
            products: self.products,
            settle_timeout: self.settle_timeout,
            ..Options::default()
        }
    }

    fn closed(&self) -> Model {
        Model::Closed {
            in_flight: self.in_flight,
        }
    }
}

/// Collects results, notes and failures while the suite runs.
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
        match outcome {
            Ok(r) => {
                let problems = r.problems(0.01);
                let problems = match problems.is_empty() {
                    true => String::new(),
                    false => format!(" — {}", problems.join("; ")),
                };
                let p99 = r.latency_ms.map_or("-".to_string(), |l| fmt_ms(l.p99));
                let (key, rate, errors) = (&r.key, r.throughput_per_s, r.errors);
                eprintln!(
                    "         {key}: {rate:.0} ok/s, p99 {p99} ms, {errors} errors{problems}"
                );
                Some(r)
            }
            Err(e) => {
                self.fail(format!("{what} failed: {e:#}"));
                None
            }
        }
    }

    fn fail(&mut self, message: String) {
        eprintln!("         {message}");
        self.file.notes.push(message.clone());
        self.failures.push(message);
    }

    /// Runs one point of `scenario` on `stack` and keeps its result.
    async fn point(&mut self, stack: &Stack, scenario: Scenario, opts: &Options, what: &str) {
        self.progress(what);
        let outcome = match stack.target(Some(1)) {
            Ok(target) => scenarios::run(scenario, &target, opts).await,
            Err(e) => Err(e),
        };
        if let Some(r) = self.record(scenario.name(), outcome) {
            self.file.results.push(r);
        }
    }

    fn note(&mut self, note: String) {
        eprintln!("         note: {note}");
        self.file.notes.push(note);
    }
}

/// Runs the suite; returns the results file and the failures (also in its notes).
pub async fn run(cfg: &SuiteConfig) -> Result<(ResultsFile, Vec<String>)> {
    let extra = [
        ("rounds_echo_product_get", serde_json::json!(cfg.rounds)),
        ("products", serde_json::json!(cfg.products)),
        ("read_rate", serde_json::json!(cfg.read_rate)),
        ("order_rates", serde_json::json!(cfg.order_rates)),
        ("mixed_rate", serde_json::json!(cfg.mixed_rate)),
        (
            "mix",
            serde_json::json!(scenarios::Mix::default().describe()),
        ),
        (
            "settle_timeout_s",
            serde_json::json!(cfg.settle_timeout.as_secs_f64()),
        ),
        ("instances", serde_json::json!(cfg.instances)),
        ("nats_auth", serde_json::json!(cfg.stack.auth)),
    ];
    let settings = Settings {
        quick: cfg.quick,
        duration_s: cfg.duration.as_secs_f64(),
        warmup_s: cfg.warmup.as_secs_f64(),
        timeout_s: cfg.timeout.as_secs_f64(),
        in_flight: cfg.in_flight,
        nats_url: None,
        services_rust_log: Some(cfg.stack.services_rust_log.clone()),
        extra: extra.map(|(k, v)| (k.to_string(), v)).into_iter().collect(),
    };
    let mut run = Run {
        file: ResultsFile::new(command_line(), settings),
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
        let mut stack_cfg = cfg.stack.clone();
        stack_cfg.logs_dir = cfg.stack.logs_dir.join(phase);
        let mut stack = Stack::new(stack_cfg)?;
        let (stack_ref, run_ref) = (&mut stack, &mut run);
        let outcome = match phase {
            "reads" => reads_phase(cfg, run_ref, stack_ref).await,
            "orders" => orders(cfg, run_ref, stack_ref, JetStreamSync::Always).await,
            "orders-default-sync" => orders(cfg, run_ref, stack_ref, JetStreamSync::Default).await,
            _ => scaling_phase(cfg, run_ref, stack_ref).await,
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
    reads::seed_reads(&client, cfg.products).await?;
    // The echo reply is as big as a product's, so the only difference between
    // the two is the work product.get does.
    let json = shop_nats::Encoding::Json;
    let reply_bytes = reads::probe(&client, &read_id(0), json, cfg.timeout).await?;
    stack.start_echo(ECHO_SUBJECT, reply_bytes).await?;
    let extra = &mut run.file.settings.extra;
    extra.insert("echo_reply_bytes".into(), serde_json::json!(reply_bytes));

    let c = cfg.closed();
    let (mut echoes, mut gets) = (Vec::new(), Vec::new());
    for round in 0..cfg.rounds.max(1) {
        // ABBA: echo first in even rounds, product-get first in odd ones.
        let mut order = [Scenario::Echo, Scenario::ProductGet];
        if round % 2 == 1 {
            order.reverse();
        }
        for s in order.into_iter().filter(|s| cfg.wants(s.name())) {
            let rounds = cfg.rounds;
            run.progress(&format!(
                "{} ({}) round {}/{rounds}",
                s.name(),
                c.describe(),
                round + 1
            ));
            let t = stack.target(Some(1))?;
            let outcome = scenarios::run(s, &t, &cfg.options(c)).await;
            let kept = if s == Scenario::Echo {
                &mut echoes
            } else {
                &mut gets
            };
            kept.extend(run.record(s.name(), outcome));
        }
    }
    for rounds in [echoes, gets].into_iter().filter(|r| !r.is_empty()) {
        run.file
            .results
            .push(ScenarioResult::combine_rounds(rounds)?);
    }
    let bincode = Options {
        encoding: shop_nats::Encoding::Bincode,
        ..cfg.options(c)
    };
    let points = [
        (Scenario::ProductGet, bincode),
        (
            Scenario::ProductGet,
            cfg.options(Model::Open {
                rate: cfg.read_rate,
            }),
        ),
        (Scenario::ProductList, cfg.options(c)),
        (Scenario::StockContention, cfg.options(c)),
    ];
    for (s, opts) in points.iter().filter(|(s, _)| cfg.wants(s.name())) {
        stack.check_alive()?;
        let what = format!("{} ({})", s.name(), opts.model.describe());
        run.point(stack, *s, opts, &what).await;
    }
    if cfg.wants("gateway-get") {
        gateway(cfg, run, stack).await;
    }
    stack.check_alive()
}

/// The gateway points; a part that cannot start is recorded as a failure and
/// the others still run.
async fn gateway(cfg: &SuiteConfig, run: &mut Run, stack: &mut Stack) {
    let c = cfg.closed().describe();
    let wrk = cfg.wrk.then(|| find_on_path("wrk")).flatten();
    if cfg.wrk && wrk.is_none() {
        run.note(
            "wrk is not installed: no wrk cross-check of gateway-get (apt-get install wrk)".into(),
        );
    }
    let gateway = stack.config.gateway_bin();
    if !gateway.exists() {
        let skipped = format!(
            "gateway-get (Rust gateway) skipped: {} is not built",
            gateway.display()
        );
        run.note(skipped);
    }
    let rust = [("cached", "on"), ("uncached", "off")].map(|(v, cache)| (v, Some(cache)));
    let rust = rust.into_iter().filter(|_| gateway.exists());
    let express_dir = stack.config.express_dir.display().to_string();
    let express = stack.config.express_available();
    if express {
        run.file.versions.node = machine::program_version(&stack.config.node);
    } else {
        run.note(format!(
            "gateway-get Express baseline skipped: run `npm ci` in {express_dir}"
        ));
    }
    let node = [("express", None), ("express-keepalive", None)];
    for (variant, cache) in rust.chain(node.into_iter().filter(|_| express)) {
        run.progress(&format!("gateway-get {variant} ({c})"));
        let role = format!("gateway-{variant}");
        let started = match cache {
            Some(cache) => {
                stack
                    .start_gateway(&role, &[(GATEWAY_CACHE_ENV, cache)])
                    .await
            }
            None => stack.start_express(variant == "express-keepalive").await,
        };
        let outcome = match started {
            Ok(base) => http_point(cfg, stack, &base, variant, cache.is_some(), wrk.as_ref()).await,
            Err(e) => Err(e.context(match cache {
                Some(_) => "starting the gateway",
                None => "starting the Express baseline",
            })),
        };
        let kept = run.record(&format!("gateway-get {variant}"), outcome);
        run.file.results.extend(kept);
        for role in [role.as_str(), "express-gateway", "express-product"] {
            stack.stop_role(role).await;
        }
    }
}

/// gateway-get against `base`, after `wrk` when it is installed: a
/// cross-check, and a warm-up for what it measures (the Express baseline's
/// JIT in particular), so no target is measured cold.
async fn http_point(
    cfg: &SuiteConfig,
    stack: &Stack,
    base: &str,
    variant: &str,
    seed: bool,
    wrk: Option<&PathBuf>,
) -> Result<ScenarioResult> {
    let mut t = stack.target(Some(1))?;
    t.http_url = Some(format!("{base}{PRODUCT_PATH}"));
    let mut wrk_rps = None;
    if let Some(wrk) = wrk {
        let url = format!("{base}{}", PRODUCT_PATH.replace("{id}", &read_id(0)));
        let duration = cfg.duration.min(Duration::from_secs(5));
        match run_wrk(wrk, &url, cfg.in_flight, duration).await {
            Ok(rps) => wrk_rps = Some(rps),
            Err(e) => eprintln!("         wrk failed: {e:#}"),
        }
    }
    let warmup = match wrk_rps {
        Some(_) => cfg.warmup,
        None => cfg.warmup.max(HTTP_WARMUP),
    };
    let opts = Options {
        variant: Some(variant.to_string()),
        seed,
        warmup,
        ..cfg.options(cfg.closed())
    };
    let mut r = scenarios::run(Scenario::GatewayGet, &t, &opts).await?;
    r.extra
        .extend(wrk_rps.map(|rps| ("wrk_requests_per_s".to_string(), rps)));
    Ok(r)
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|p| p.join(program))
        .find(|p| p.is_file())
}

/// `wrk -t1 -c<n> -d<s>` against one URL; its requests per second.
async fn run_wrk(wrk: &PathBuf, url: &str, connections: usize, duration: Duration) -> Result<f64> {
    let secs = duration.as_secs().max(1);
    let args = [
        "-t1".to_string(),
        format!("-c{connections}"),
        format!("-d{secs}s"),
        url.into(),
    ];
    let out =
        (tokio::process::Command::new(wrk).args(args).output().await).context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))
}

/// `Requests/sec:  12345.67` from wrk's output.
pub fn parse_wrk(text: &str) -> Option<f64> {
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"));
    rate.and_then(|v| v.trim().parse().ok())
}

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
    if sync == JetStreamSync::Always && cfg.wants("mixed") {
        let opts = cfg.options(Model::Open {
            rate: cfg.mixed_rate,
        });
        let what = format!("mixed ({})", opts.model.describe());
        run.point(stack, Scenario::Mixed, &opts, &what).await;
    }
    for &rate in cfg.order_rates.iter().filter(|_| cfg.wants("order-place")) {
        stack.check_alive()?;
        let opts = cfg.options(Model::Open { rate });
        let what = format!(
            "order-place ({}, sync {})",
            opts.model.describe(),
            sync.name()
        );
        run.point(stack, Scenario::OrderPlace, &opts, &what).await;
    }
    stack.check_alive()
}

async fn scaling_phase(cfg: &SuiteConfig, run: &mut Run, stack: &mut Stack) -> Result<()> {
    start_nats(run, stack, JetStreamSync::Always).await?;
    let c = cfg.closed();
    let plans = [
        (Scenario::ProductGet, cfg.options(c)),
        (Scenario::ProductList, cfg.options(c)),
    ];
    let started = run.started;
    let progress = |what: &str| eprintln!("[{:>5.0}s] {what}", started.elapsed().as_secs_f64());
    let runs: Vec<ScalingRun> = scaling::run_on(stack, &plans, &cfg.instances, progress).await?;
    run.file.scaling.extend(runs);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let out = "Running 5s test @ http://127.0.0.1:3000/x\n  1 threads and 64 connections\n  Latency   1.00ms\nRequests/sec:  12345.67\nTransfer/sec:      2.00MB\n";
        assert_eq!(parse_wrk(out), Some(12345.67));
        assert_eq!(parse_wrk("nothing"), None);
    }

    #[test]
    fn quick_mode_is_short() {
        let stack = StackConfig::new(PathBuf::from("bin"), PathBuf::from("logs"));
        let quick = SuiteConfig::standard(stack.clone(), true);
        let full = SuiteConfig::standard(stack, false);
        assert!(quick.duration < full.duration && quick.rounds <= full.rounds);
        assert!(full.wants("echo"));
        let only = SuiteConfig {
            only: vec!["echo".into()],
            ..quick
        };
        assert!(only.wants("echo") && !only.wants("mixed"));
    }
}
