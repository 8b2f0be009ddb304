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

use crate::load::Model;
use crate::machine;
use crate::report::fmt_ms;
use crate::results::{check_targets, ResultsFile, ScalingRun, ScenarioResult, Settings};
use crate::scenarios::{self, gateway_get::PRODUCT_PATH, reads, Options, Scenario, ECHO_SUBJECT};
use crate::seed::read_id;
use crate::stack::{JetStreamSync, Stack, StackConfig};
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

    fn record(&mut self, what: &str, outcome: Result<ScenarioResult>) -> Option<ScenarioResult> {
        match outcome {
            Ok(r) => {
                let problems = r.problems(0.01);
                eprintln!(
                    "         {}: {:.0} ok/s, p99 {} ms, {} errors{}",
                    r.key,
                    r.throughput_per_s,
                    r.latency_ms.map_or("-".to_string(), |l| fmt_ms(l.p99)),
                    r.errors,
                    if problems.is_empty() {
                        String::new()
                    } else {
                        format!(" — {}", problems.join("; "))
                    }
                );
                Some(r)
            }
            Err(e) => {
                let message = format!("{what} failed: {e:#}");
                eprintln!("         {message}");
                self.file.notes.push(message.clone());
                self.failures.push(message);
                None
            }
        }
    }

    fn push(&mut self, r: Option<ScenarioResult>) {
        if let Some(r) = r {
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

    let phases: [(&str, &[&str]); 4] = [
        (
            "reads",
            &[
                "echo",
                "product-get",
                "product-list",
                "stock-contention",
                "gateway-get",
            ],
        ),
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
        let outcome = match phase {
            "reads" => reads(cfg, &mut run, &mut stack).await,
            "orders" => orders(cfg, &mut run, &mut stack, JetStreamSync::Always).await,
            "orders-default-sync" => {
                orders(cfg, &mut run, &mut stack, JetStreamSync::Default).await
            }
            _ => scaling_phase(cfg, &mut run, &mut stack).await,
        };
        if let Err(e) = outcome {
            let message = format!("phase {phase} failed: {e:#}");
            eprintln!("{message}");
            run.file.notes.push(message.clone());
            run.failures.push(message);
        }
        stack.stop().await;
    }
    run.file.targets = check_targets(&run.file);
    run.progress("suite done");
    Ok((run.file, run.failures))
}

async fn start_nats(
    run: &mut Run,
    stack: &mut Stack,
    sync: JetStreamSync,
) -> Result<async_nats::Client> {
    let url = stack.start_nats(sync).await?;
    let client = nats::connect(&url, "shop-bench-suite", Duration::from_secs(10)).await?;
    if run.file.versions.nats_server.is_none() {
        run.file.versions.nats_server = Some(client.server_info().version);
    }
    Ok(client)
}

async fn reads(cfg: &SuiteConfig, run: &mut Run, stack: &mut Stack) -> Result<()> {
    let client = start_nats(run, stack, JetStreamSync::Always).await?;
    stack.start_service("product", &[]).await?;
    reads::seed_reads(&client, cfg.products).await?;
    // The echo reply is as big as a product's, so the only difference between
    // the two is the work product.get does.
    let json = shop_nats::Encoding::Json;
    let reply_bytes = reads::probe(&client, &read_id(0), json, cfg.timeout).await?;
    stack.start_echo(ECHO_SUBJECT, reply_bytes).await?;
    run.file
        .settings
        .extra
        .insert("echo_reply_bytes".into(), serde_json::json!(reply_bytes));

    let c = cfg.closed();
    if cfg.wants("echo") || cfg.wants("product-get") {
        let (mut echoes, mut gets) = (Vec::new(), Vec::new());
        for round in 0..cfg.rounds.max(1) {
            // ABBA: echo first in even rounds, product-get first in odd ones.
            let order = if round % 2 == 0 {
                [Scenario::Echo, Scenario::ProductGet]
            } else {
                [Scenario::ProductGet, Scenario::Echo]
            };
            for s in order {
                if !cfg.wants(s.name()) {
                    continue;
                }
                run.progress(&format!(
                    "{} ({}) round {}/{}",
                    s.name(),
                    c.describe(),
                    round + 1,
                    cfg.rounds
                ));
                let t = stack.target(Some(1))?;
                let outcome = scenarios::run(s, &t, &cfg.options(c)).await;
                if let Some(r) = run.record(s.name(), outcome) {
                    if s == Scenario::Echo {
                        echoes.push(r)
                    } else {
                        gets.push(r)
                    }
                }
            }
        }
        for rounds in [echoes, gets] {
            if !rounds.is_empty() {
                run.push(Some(ScenarioResult::combine_rounds(rounds)?));
            }
        }
    }
    let mut points: Vec<(Scenario, Options)> = Vec::new();
    if cfg.wants("product-get") {
        points.push((
            Scenario::ProductGet,
            Options {
                encoding: shop_nats::Encoding::Bincode,
                ..cfg.options(c)
            },
        ));
        points.push((
            Scenario::ProductGet,
            cfg.options(Model::Open {
                rate: cfg.read_rate,
            }),
        ));
    }
    if cfg.wants("product-list") {
        points.push((Scenario::ProductList, cfg.options(c)));
    }
    if cfg.wants("stock-contention") {
        points.push((Scenario::StockContention, cfg.options(c)));
    }
    for (s, opts) in points {
        stack.check_alive()?;
        run.progress(&format!("{} ({})", s.name(), opts.model.describe()));
        let t = stack.target(Some(1))?;
        let outcome = scenarios::run(s, &t, &opts).await;
        let r = run.record(s.name(), outcome);
        run.push(r);
    }
    if cfg.wants("gateway-get") {
        gateway(cfg, run, stack).await;
    }
    stack.check_alive()
}

/// The gateway points; a part that cannot start is recorded as a failure and
/// the others still run.
async fn gateway(cfg: &SuiteConfig, run: &mut Run, stack: &mut Stack) {
    let c = cfg.closed();
    let wrk = cfg.wrk.then(find_wrk).flatten();
    if cfg.wrk && wrk.is_none() {
        run.note(
            "wrk is not installed: no wrk cross-check of gateway-get (apt-get install wrk)".into(),
        );
    }
    if stack.config.gateway_bin().exists() {
        for (variant, cache) in [("cached", "on"), ("uncached", "off")] {
            let role = format!("gateway-{variant}");
            run.progress(&format!("gateway-get {variant} ({})", c.describe()));
            let outcome = match stack
                .start_gateway(&role, &[(GATEWAY_CACHE_ENV, cache)])
                .await
            {
                Ok(base) => http_point(cfg, stack, &base, variant, true, wrk.as_ref()).await,
                Err(e) => Err(e.context("starting the gateway")),
            };
            let r = run.record(&format!("gateway-get {variant}"), outcome);
            run.push(r);
            stack.stop_role(&role).await;
        }
    } else {
        run.note(format!(
            "gateway-get (Rust gateway) skipped: {} is not built",
            stack.config.gateway_bin().display()
        ));
    }
    if stack.config.express_available() {
        run.file.versions.node = machine::program_version(&stack.config.node);
        for (variant, keep_alive) in [("express", false), ("express-keepalive", true)] {
            run.progress(&format!("gateway-get {variant} ({})", c.describe()));
            let outcome = match stack.start_express(keep_alive).await {
                Ok(base) => http_point(cfg, stack, &base, variant, false, wrk.as_ref()).await,
                Err(e) => Err(e.context("starting the Express baseline")),
            };
            let r = run.record(&format!("gateway-get {variant}"), outcome);
            run.push(r);
            stack.stop_role("express-gateway").await;
            stack.stop_role("express-product").await;
        }
    } else {
        run.note(format!(
            "gateway-get Express baseline skipped: run `npm ci` in {}",
            stack.config.express_dir.display()
        ));
    }
}

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
    // wrk first: a cross-check, and a warm-up for what it measures (the
    // Express baseline's JIT in particular), so no target is measured cold.
    let mut wrk_rps = None;
    if let Some(wrk) = wrk {
        let url = format!("{base}{}", PRODUCT_PATH.replace("{id}", &read_id(0)));
        match run_wrk(
            wrk,
            &url,
            cfg.in_flight,
            cfg.duration.min(Duration::from_secs(5)),
        )
        .await
        {
            Ok(rps) => wrk_rps = Some(rps),
            Err(e) => eprintln!("         wrk failed: {e:#}"),
        }
    }
    let opts = Options {
        variant: Some(variant.to_string()),
        seed,
        warmup: if wrk_rps.is_some() {
            cfg.warmup
        } else {
            cfg.warmup.max(HTTP_WARMUP)
        },
        ..cfg.options(cfg.closed())
    };
    let mut r = scenarios::run(Scenario::GatewayGet, &t, &opts).await?;
    if let Some(rps) = wrk_rps {
        r.extra.insert("wrk_requests_per_s".into(), rps);
    }
    Ok(r)
}

fn find_wrk() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("wrk"))
            .find(|p| p.is_file())
    })
}

/// `wrk -t1 -c<n> -d<s>` against one URL; its requests per second.
async fn run_wrk(wrk: &PathBuf, url: &str, connections: usize, duration: Duration) -> Result<f64> {
    let out = tokio::process::Command::new(wrk)
        .args([
            "-t1".to_string(),
            format!("-c{connections}"),
            format!("-d{}s", duration.as_secs().max(1)),
            url.to_string(),
        ])
        .output()
        .await
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))
}

/// `Requests/sec:  12345.67` from wrk's output.
pub fn parse_wrk(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
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
        run.progress(&format!("mixed ({})", opts.model.describe()));
        let t = stack.target(Some(1))?;
        let outcome = scenarios::run(Scenario::Mixed, &t, &opts).await;
        let r = run.record("mixed", outcome);
        run.push(r);
    }
    if cfg.wants("order-place") {
        for &rate in &cfg.order_rates {
            stack.check_alive()?;
            let opts = cfg.options(Model::Open { rate });
            run.progress(&format!(
                "order-place ({}, sync {})",
                opts.model.describe(),
                sync.name()
            ));
            let t = stack.target(Some(1))?;
            let outcome = scenarios::run(Scenario::OrderPlace, &t, &opts).await;
            let r = run.record("order-place", outcome);
            run.push(r);
        }
    }
    stack.check_alive()
}

async fn scaling_phase(cfg: &SuiteConfig, run: &mut Run, stack: &mut Stack) -> Result<()> {
    start_nats(run, stack, JetStreamSync::Always).await?;
    let c = cfg.closed();
    let plans = vec![
        (Scenario::ProductGet, cfg.options(c)),
        (Scenario::ProductList, cfg.options(c)),
    ];
    let started = run.started;
    let runs: Vec<ScalingRun> = scaling::run_on(stack, &plans, &cfg.instances, |what| {
        eprintln!("[{:>5.0}s] {what}", started.elapsed().as_secs_f64());
    })
    .await?;
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
