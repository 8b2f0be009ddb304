//! The JSON results file (`--json-out`); fields are only ever added.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::cpu::CpuUse;
use crate::load::{Model, RunStats};
use crate::machine::{self, Machine, Versions};
use crate::stats::{fmt_ms, fmt_rate, median, Latency};

pub const SCHEMA: &str = "shop-bench/1";

/// One results file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ResultsFile {
    pub schema: String,
    /// When the run started, RFC 3339 UTC.
    pub created_at: String,
    /// The command line that produced it.
    pub command: String,
    pub machine: Machine,
    pub versions: Versions,
    pub settings: Settings,
    pub results: Vec<ScenarioResult>,
    #[serde(default)]
    pub scaling: Vec<ScalingRun>,
    #[serde(default)]
    pub targets: Vec<TargetCheck>,
    /// What was skipped and why, and anything else a reader must know.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Run-wide settings (each result also carries its own model and durations).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Settings {
    /// `suite --quick`: short points, for checking that everything works.
    pub quick: bool,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub timeout_s: f64,
    /// Default requests in flight of closed-loop points.
    pub in_flight: usize,
    /// Set when the run used a system it did not start.
    pub nats_url: Option<String>,
    /// `RUST_LOG` of the services the harness started.
    pub services_rust_log: Option<String>,
    /// Anything else that shaped the run (rates, product counts ...).
    #[serde(default)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// One measured point of a scenario.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScenarioResult {
    /// Unique within a file and stable across runs (`--compare` matches on it).
    pub key: String,
    pub scenario: String,
    pub variant: Option<String>,
    /// The subject(s) or URL under load.
    pub target: String,
    pub model: Model,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Instances of the service under test, when the harness started them.
    pub instances: Option<usize>,
    /// JetStream `sync_interval` of the server (`always`, `default`), if the harness started it.
    pub nats_sync: Option<String>,
    /// Throughput of each round when the point ran in several (the figure is their median).
    #[serde(default)]
    pub rounds: Vec<f64>,
    pub ok: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    /// Successful operations per second.
    pub throughput_per_s: f64,
    /// Seconds the successes were counted over.
    pub measured_s: f64,
    /// Of successful operations (open loop: from the intended send time).
    pub latency_ms: Option<Latency>,
    pub reply_bytes_mean: Option<f64>,
    /// Per operation, when a scenario mixes several.
    #[serde(default)]
    pub ops: Vec<OpResult>,
    /// Intermediate timings, e.g. `order.create` reply within order-place.
    #[serde(default)]
    pub phases: Vec<PhaseResult>,
    /// Open loop: how late the generator sent requests after their due time.
    pub send_lag_ms: Option<Latency>,
    /// CPU each role used during the window (cores busy on average).
    #[serde(default)]
    pub cpu: Vec<CpuUse>,
    /// Messages each JetStream stream stored per second during the window,
    /// when the harness started the server (with `sync_interval: always`,
    /// fsyncs); empty when not measured.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub appends_per_s: BTreeMap<String, f64>,
    /// The streams among those kept in memory: their appends sync nothing.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub memory_streams: BTreeSet<String>,
    /// Invariants checked after the run (e.g. stock never negative).
    #[serde(default)]
    pub checks: Vec<Check>,
    /// Scenario-specific figures, e.g. `conflicts_409`, `wrk_requests_per_s`.
    #[serde(default)]
    pub extra: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpResult {
    pub name: String,
    pub ok: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub throughput_per_s: f64,
    pub latency_ms: Option<Latency>,
    /// Share of all requests, 0..1.
    pub share: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhaseResult {
    pub name: String,
    pub latency_ms: Option<Latency>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// The same scenario at 1, 2, 4 ... instances of its service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScalingRun {
    pub scenario: String,
    pub variant: Option<String>,
    pub model: Model,
    pub service: String,
    pub points: Vec<ScalingPoint>,
}

impl ScalingRun {
    /// `product-get/json (closed 64)`: what was scaled, under which load.
    pub fn title(&self) -> String {
        let name = point_name(&self.scenario, self.variant.as_deref());
        format!("{name} ({})", self.model.describe())
    }
}

/// `scenario` or `scenario/variant`.
fn point_name(scenario: &str, variant: Option<&str>) -> String {
    variant.map_or(scenario.to_string(), |v| format!("{scenario}/{v}"))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScalingPoint {
    pub instances: usize,
    pub throughput_per_s: f64,
    /// Throughput over the one-instance throughput.
    pub speedup: f64,
    /// Speedup over the instance count (1.0 = perfect scaling).
    pub efficiency: f64,
    pub latency_ms: Option<Latency>,
    pub errors: u64,
    #[serde(default)]
    pub cpu: Vec<CpuUse>,
}

/// One of the targets, as measured in this run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetCheck {
    pub name: String,
    pub target: String,
    pub measured: String,
    /// `None` when the run did not measure it.
    pub met: Option<bool>,
}

/// What identifies a point, besides its figures.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub scenario: String,
    pub variant: Option<String>,
    pub target: String,
    pub instances: Option<usize>,
    pub nats_sync: Option<String>,
}

impl Meta {
    pub fn new(scenario: &str, variant: Option<&str>, target: impl Into<String>) -> Self {
        Self {
            scenario: scenario.to_string(),
            variant: variant.map(str::to_string),
            target: target.into(),
            ..Self::default()
        }
    }

    /// `<scenario>[/<variant>] <model>`, e.g. `product-get/json c64`.
    pub fn key(&self, model: &Model) -> String {
        let name = point_name(&self.scenario, self.variant.as_deref());
        format!("{name} {}", model.key())
    }
}

impl ScenarioResult {
    /// The point of one round: its figures from the run's tally.
    pub fn from_run(meta: Meta, run: &RunStats, cpu: Vec<CpuUse>) -> Self {
        let (tally, measured_s) = (&run.tally, run.measured_s);
        let all = tally.overall();
        let requests = (all.ok() + all.error_count()).max(1) as f64;
        let breakdown = (tally.ops.len() > 1).then_some(&tally.ops);
        let ops = breakdown.into_iter().flatten().map(|(name, op)| OpResult {
            name: name.to_string(),
            ok: op.ok(),
            errors: op.error_count(),
            error_kinds: op.errors.clone(),
            throughput_per_s: op.ok() as f64 / measured_s.max(f64::MIN_POSITIVE),
            latency_ms: Latency::from_histogram_us(&op.ok_us),
            share: (op.ok() + op.error_count()) as f64 / requests,
        });
        let phases = tally.phases.iter().map(|(name, h)| PhaseResult {
            name: name.to_string(),
            latency_ms: Latency::from_histogram_us(h),
        });
        let schedule = &run.schedule;
        let warmup = schedule.measure_start.duration_since(schedule.start);
        ScenarioResult {
            key: meta.key(&run.model),
            scenario: meta.scenario,
            variant: meta.variant,
            target: meta.target,
            model: run.model,
            duration_s: schedule.measured().as_secs_f64(),
            warmup_s: warmup.as_secs_f64(),
            instances: meta.instances,
            nats_sync: meta.nats_sync,
            throughput_per_s: run.throughput(),
            rounds: Vec::new(),
            ok: all.ok(),
            errors: all.error_count(),
            error_kinds: all.errors.clone(),
            first_error: all.first_error.clone(),
            measured_s,
            latency_ms: Latency::from_histogram_us(&all.ok_us),
            reply_bytes_mean: (all.ok() > 0).then(|| all.ok_bytes as f64 / all.ok() as f64),
            ops: ops.collect(),
            phases: phases.collect(),
            send_lag_ms: match run.model {
                Model::Open { .. } => Latency::from_histogram_us(&tally.send_lag_us),
                Model::Closed { .. } => None,
            },
            cpu,
            appends_per_s: BTreeMap::new(),
            memory_streams: BTreeSet::new(),
            checks: Vec::new(),
            extra: BTreeMap::new(),
        }
    }

    /// One point from rounds of the same load: counts summed, CPU averaged, the rest medians.
    pub fn combine_rounds(rounds: Vec<ScenarioResult>) -> Result<Self> {
        let Some(first) = rounds.first() else {
            bail!("no rounds to combine");
        };
        if let Some(other) = rounds.iter().find(|r| r.key != first.key) {
            bail!("cannot combine {} with {}", first.key, other.key);
        }
        if rounds.len() == 1 {
            return Ok(first.clone());
        }
        let ops = first.ops.iter().map(|op| {
            let named = |o: &&OpResult| o.name == op.name;
            let same = rounds.iter().filter_map(|r| r.ops.iter().find(named));
            let same: Vec<&OpResult> = same.collect();
            OpResult {
                name: op.name.clone(),
                ok: same.iter().map(|o| o.ok).sum(),
                errors: same.iter().map(|o| o.errors).sum(),
                error_kinds: summed(same.iter().map(|o| &o.error_kinds)),
                throughput_per_s: median_of(same.iter().map(|o| o.throughput_per_s)),
                latency_ms: latency_median(same.iter().map(|o| o.latency_ms)),
                share: median_of(same.iter().map(|o| o.share)),
            }
        });
        let phases = first.phases.iter().map(|phase| {
            let all = rounds.iter().flat_map(|r| &r.phases);
            let same = all.filter(|p| p.name == phase.name).map(|p| p.latency_ms);
            let (name, latency_ms) = (phase.name.clone(), latency_median(same));
            PhaseResult { name, latency_ms }
        });
        let throughputs: Vec<f64> = rounds.iter().map(|r| r.throughput_per_s).collect();
        let cpu_rounds: Vec<&[CpuUse]> = rounds.iter().map(|r| r.cpu.as_slice()).collect();
        let replies = rounds.iter().filter_map(|r| r.reply_bytes_mean);
        Ok(ScenarioResult {
            ok: rounds.iter().map(|r| r.ok).sum(),
            errors: rounds.iter().map(|r| r.errors).sum(),
            measured_s: rounds.iter().map(|r| r.measured_s).sum(),
            throughput_per_s: median_of(throughputs.iter().copied()),
            rounds: throughputs,
            latency_ms: latency_median(rounds.iter().map(|r| r.latency_ms)),
            send_lag_ms: latency_median(rounds.iter().map(|r| r.send_lag_ms)),
            reply_bytes_mean: median(&replies.collect::<Vec<_>>()),
            error_kinds: summed(rounds.iter().map(|r| &r.error_kinds)),
            first_error: rounds.iter().find_map(|r| r.first_error.clone()),
            ops: ops.collect(),
            phases: phases.collect(),
            cpu: crate::cpu::average(&first.cpu, &cpu_rounds),
            appends_per_s: mean_by_key(rounds.iter().map(|r| &r.appends_per_s)),
            memory_streams: rounds
                .iter()
                .flat_map(|r| r.memory_streams.clone())
                .collect(),
            ..first.clone()
        })
    }

    /// Errors as a share of all requests in the window.
    pub fn error_rate(&self) -> f64 {
        self.errors as f64 / (self.ok + self.errors).max(1) as f64
    }

    /// What makes this point untrustworthy (errors over `max_error_rate` ...), if anything.
    pub fn problems(&self, max_error_rate: f64) -> Vec<String> {
        let first_error = self.first_error.as_deref().unwrap_or("none");
        let (rate, kinds) = (self.throughput_per_s, &self.error_kinds);
        let error_rate = self.error_rate() * 100.0;
        let problems = [
            (self.ok == 0).then(|| format!("no successful requests (first error: {first_error})")),
            (self.error_rate() > max_error_rate).then(|| {
                let max = max_error_rate * 100.0;
                format!(
                    "error rate {error_rate:.1}% over {max:.1}% ({kinds:?}; first: {first_error})"
                )
            }),
            match &self.latency_ms {
                Some(l) if !l.is_ordered() => Some(format!("percentiles out of order: {l:?}")),
                None if self.ok > 0 => Some("no latency recorded".to_string()),
                _ => None,
            },
            (!(rate.is_finite() && rate >= 0.0))
                .then(|| format!("throughput {rate} is not a number")),
        ];
        let failed = self.checks.iter().filter(|c| !c.passed);
        let failed = failed.map(|c| format!("check {} failed: {}", c.name, c.detail));
        let problems = problems.into_iter().flatten().chain(failed);
        problems.map(|p| format!("{}: {p}", self.key)).collect()
    }
}

/// The median of `values` (0 when there are none).
fn median_of(values: impl Iterator<Item = f64>) -> f64 {
    median(&values.collect::<Vec<_>>()).unwrap_or(0.0)
}

/// Each percentile the median over the `latencies` measured.
fn latency_median(latencies: impl Iterator<Item = Option<Latency>>) -> Option<Latency> {
    Latency::median(&latencies.flatten().collect::<Vec<_>>())
}

fn summed<'a>(counts: impl Iterator<Item = &'a BTreeMap<String, u64>>) -> BTreeMap<String, u64> {
    let mut sum = BTreeMap::new();
    for (kind, n) in counts.flatten() {
        *sum.entry(kind.clone()).or_insert(0) += n;
    }
    sum
}

/// Each key's mean over the maps (a key missing from a map counts as 0 there).
fn mean_by_key<'a>(maps: impl Iterator<Item = &'a BTreeMap<String, f64>>) -> BTreeMap<String, f64> {
    let (mut sum, mut n) = (BTreeMap::new(), 0usize);
    for map in maps {
        n += 1;
        for (key, v) in map {
            *sum.entry(key.clone()).or_insert(0.0) += v;
        }
    }
    sum.into_iter()
        .map(|(k, v)| (k, v / n.max(1) as f64))
        .collect()
}

impl ResultsFile {
    /// An empty file of this run: now, this command, this machine, the versions known.
    pub fn new(settings: Settings) -> Self {
        Self {
            schema: SCHEMA.to_string(),
            created_at: shop_nats::clock::now_rfc3339(),
            command: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
            machine: machine::machine(),
            versions: machine::versions(&shop_process::workspace_root()),
            settings,
            ..Self::default()
        }
    }

    /// Pretty-printed JSON to `path`, creating parent directories.
    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut text = serde_json::to_string_pretty(self).context("serializing JSON")?;
        text.push('\n');
        fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Reads a results file of this schema (any version of it).
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: ResultsFile = serde_json::from_str(&text)
            .with_context(|| format!("parsing {} as a shop-bench results file", path.display()))?;
        if file.schema != SCHEMA {
            let (shown, schema) = (path.display(), &file.schema);
            bail!("{shown} has schema {schema:?}; this shop-bench reads {SCHEMA:?}");
        }
        Ok(file)
    }

    /// The point with this key.
    pub fn result(&self, key: &str) -> Option<&ScenarioResult> {
        self.results.iter().find(|r| r.key == key)
    }

    /// The closed-loop point of `scenario` at 64 in flight, of `variant` if given.
    fn c64(&self, scenario: &str, variant: Option<&str>) -> Option<&ScenarioResult> {
        let c64 = Model::Closed { in_flight: 64 };
        self.results.iter().find(|r| {
            r.scenario == scenario
                && r.model == c64
                && variant.is_none_or(|v| r.variant.as_deref() == Some(v))
        })
    }
}

/// product-get at 64 in flight: at least this share of echo's requests per second.
pub const PRODUCT_GET_VS_ECHO: f64 = 0.60;
/// gateway-get uncached: at least this many times the Express gateway.
pub const GATEWAY_VS_EXPRESS: f64 = 10.0;
/// Issue 6: the uncached gateway's p99 at 64 connections, in ms.
pub const GATEWAY_P99_MS: f64 = 10.0;
/// order-place: this many orders per second, sustained ...
pub const ORDER_RATE: f64 = 500.0;
/// ... with p99 time-to-confirmed under this (ms).
pub const ORDER_P99_MS: f64 = 250.0;
/// "Sustained": this share of the offered rate confirmed, at most this share failed.
const SUSTAINED_SHARE: f64 = 0.98;
const MAX_ORDER_ERRORS: f64 = 0.001;

impl TargetCheck {
    fn new(name: &str, target: &str, measured: Option<String>, met: Option<bool>) -> Self {
        Self {
            name: name.to_string(),
            target: target.to_string(),
            measured: measured.unwrap_or_else(|| "-".to_string()),
            met,
        }
    }
}

/// `num`'s throughput over `den`'s, against `at_least` (as a percentage or a multiple).
fn ratio_check(
    name: &str,
    target: &str,
    (num, den): (Option<&ScenarioResult>, Option<&ScenarioResult>),
    at_least: f64,
    percent: bool,
) -> TargetCheck {
    let (Some(n), Some(d)) = (num, den.filter(|d| d.throughput_per_s > 0.0)) else {
        return TargetCheck::new(name, target, None, None);
    };
    let ratio = n.throughput_per_s / d.throughput_per_s;
    let shown = match percent {
        true => format!("{:.0}%", ratio * 100.0),
        false => format!("{ratio:.1}×"),
    };
    let (n_rate, d_rate) = (fmt_rate(n.throughput_per_s), fmt_rate(d.throughput_per_s));
    let measured = format!("{shown} ({n_rate} vs {d_rate} ok/s)");
    let met = ratio >= at_least && n.errors == 0;
    TargetCheck::new(name, target, Some(measured), Some(met))
}

/// Every one of the targets, measured or not, from one file.
pub fn check_targets(file: &ResultsFile) -> Vec<TargetCheck> {
    let get = file.c64("product-get", Some("json"));
    let echo = file.c64("echo", None);
    let wanted = format!("≥ {:.0}% of echo", PRODUCT_GET_VS_ECHO * 100.0);
    let name = "product-get vs echo (64 in flight)";
    let get_vs_echo = ratio_check(name, &wanted, (get, echo), PRODUCT_GET_VS_ECHO, true);
    let mut checks = vec![get_vs_echo];
    // Express as express-http-proxy sets it up, and tuned with keep-alive upstream.
    let uncached = file.c64("gateway-get", Some("uncached"));
    for (variant, how, stack) in [
        ("express", "express-http-proxy defaults", "Express"),
        ("express-keepalive", "keep-alive upstream", "tuned Express"),
    ] {
        let name = format!("gateway-get uncached vs Express ({how})");
        let wanted = format!("≥ {GATEWAY_VS_EXPRESS:.0}× {stack} + express-http-proxy");
        let pair = (uncached, file.c64("gateway-get", Some(variant)));
        checks.push(ratio_check(&name, &wanted, pair, GATEWAY_VS_EXPRESS, false));
    }
    let p99 = uncached.and_then(|r| r.latency_ms.map(|l| l.p99));
    checks.push(TargetCheck::new(
        "gateway-get uncached p99 (64 connections)",
        &format!("< {GATEWAY_P99_MS:.0} ms"),
        p99.map(|p| format!("{p:.2} ms")),
        p99.map(|p| p < GATEWAY_P99_MS),
    ));
    let wanted = format!("{ORDER_RATE:.0}/s sustained, p99 to confirmed < {ORDER_P99_MS:.0} ms");
    let at_rate = Model::Open { rate: ORDER_RATE };
    let orders = file.results.iter().filter(|r| r.scenario == "order-place");
    let orders: Vec<&ScenarioResult> = orders.filter(|r| r.model == at_rate).collect();
    if orders.is_empty() {
        checks.push(TargetCheck::new("order-place", &wanted, None, None));
    }
    for r in orders {
        let p99 = r.latency_ms.map(|l| l.p99);
        let met = r.throughput_per_s >= ORDER_RATE * SUSTAINED_SHARE
            && r.error_rate() <= MAX_ORDER_ERRORS
            && p99.is_some_and(|p| p < ORDER_P99_MS);
        let sync = r.nats_sync.as_deref().map(|s| format!("sync {s}"));
        let which = sync.or_else(|| r.variant.clone()).unwrap_or_default();
        let (rate, errors) = (fmt_rate(r.throughput_per_s), r.errors);
        let p99_ms = p99.map_or("-".to_string(), fmt_ms);
        let measured = format!("{rate}/s confirmed, p99 {p99_ms} ms, {errors} failed or unsettled");
        let name = format!("order-place ({which})");
        checks.push(TargetCheck::new(&name, &wanted, Some(measured), Some(met)));
    }
    checks
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::load::Schedule;
    use crate::stats::{OpError, Tally};
    use std::time::Duration;

    const C64: Model = Model::Closed { in_flight: 64 };

    /// A 2 s round after 1 s of warm-up: a success per `oks` (op, µs), `errors` failed gets.
    pub fn run_stats(model: Model, oks: &[(&'static str, u64)], errors: u64) -> RunStats {
        let mut tally = Tally::default();
        for (op, us) in oks {
            tally.op(op).record_ok(*us, 200);
        }
        for _ in 0..errors {
            let not_found = OpError::new("service_404", "not found");
            tally.op("product.get").record_error(&not_found);
        }
        let schedule = Schedule::starting_now(Duration::from_secs(1), Duration::from_secs(2));
        RunStats {
            model,
            schedule,
            tally,
            measured_s: 2.0,
        }
    }

    /// One point of `scenario` with one success of `p99_us` µs at `rps` ok/s.
    pub fn point(
        scenario: &str,
        variant: Option<&str>,
        model: Model,
        rps: f64,
        p99_us: u64,
    ) -> ScenarioResult {
        let runs = [run_stats(model, &[("op", p99_us)], 0)];
        let meta = Meta::new(scenario, variant, "x");
        let mut r = ScenarioResult::from_run(meta, &runs[0], Vec::new());
        r.throughput_per_s = rps;
        r
    }

    #[test]
    fn rounds_make_one_point() {
        // 10, 30 and 20 successes of 1, 3 and 2 ms in 2 s rounds, an error in each.
        let round = |n: usize, us: u64| run_stats(C64, &vec![("product.get", us); n], 1);
        let rounds = [round(10, 1000), round(30, 3000), round(20, 2000)];
        let meta = || Meta::new("product-get", Some("json"), "product.get");
        let apart = rounds
            .iter()
            .map(|r| ScenarioResult::from_run(meta(), r, Vec::new()));
        let r = ScenarioResult::combine_rounds(apart.collect()).unwrap();
        assert_eq!(r.key, "product-get/json c64");
        assert_eq!(r.rounds, [5.0, 15.0, 10.0]);
        assert_eq!(r.throughput_per_s, 10.0);
        assert_eq!((r.ok, r.errors), (60, 3));
        assert!((r.warmup_s - 1.0).abs() < 1e-9 && (r.duration_s - 2.0).abs() < 1e-9);
        assert!(r.ops.is_empty(), "one operation: no breakdown");
        assert!(r.problems(0.05).is_empty(), "{:?}", r.problems(0.05));
        assert_eq!(r.problems(0.01).len(), 1, "4.8% errors");
        let p50 = r.latency_ms.unwrap().p50;
        assert!((p50 - 2.0).abs() < 0.01, "median of p50s");
        let echo = point("echo", None, C64, 1.0, 1);
        assert!(ScenarioResult::combine_rounds(vec![r, echo]).is_err());
    }

    #[test]
    fn mixed_operations_are_broken_down() {
        let (get, login) = (("product.get", 1000), ("user.login", 30_000));
        let oks = [get, get, login];
        let run = run_stats(Model::Open { rate: 100.0 }, &oks, 1);
        let meta = Meta::new("mixed", None, "mix");
        let r = ScenarioResult::from_run(meta, &run, Vec::new());
        assert_eq!(r.ops.len(), 2);
        let get = r.ops.iter().find(|o| o.name == "product.get").unwrap();
        assert_eq!((get.ok, get.errors), (2, 1));
        assert!((get.share - 0.75).abs() < 1e-9);
        let two = ScenarioResult::combine_rounds(vec![r.clone(), r]).unwrap();
        let get = two.ops.iter().find(|o| o.name == "product.get").unwrap();
        let not_found = get.error_kinds["service_404"];
        assert_eq!((get.ok, get.errors, not_found), (4, 2, 2));
        assert!((get.share - 0.75).abs() < 1e-9 && (get.throughput_per_s - 1.0).abs() < 1e-9);
    }

    #[test]
    fn no_successes_is_a_problem() {
        let run = run_stats(Model::Closed { in_flight: 1 }, &[], 3);
        let meta = Meta::new("echo", None, "bench.echo");
        let r = ScenarioResult::from_run(meta, &run, vec![]);
        let problems = r.problems(1.0);
        let first = &problems[0];
        assert!(first.contains("no successful requests"), "{problems:?}");
    }
}
