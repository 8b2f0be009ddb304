//! The JSON results file (`--json-out`): the machine, versions and settings of a
//! run, every figure it measured, and the targets checked against them
//! ([`check_targets`]). `--compare` reads an older one; `report` turns one into
//! tables (crate::report). Schema id: [`SCHEMA`]; fields are only ever added.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::cpu::CpuUse;
use crate::load::{Model, RunStats};
use crate::machine::{self, Machine, Versions};
use crate::stats::{fmt_ms, fmt_rate, median, Latency, Tally};

pub const SCHEMA: &str = "shop-bench/1";

/// One results file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
    /// Unique within a file and stable across runs: what `--compare` matches on,
    /// e.g. `product-get/json c64`.
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
    /// JetStream `sync_interval` of the server, when the harness started it:
    /// `always` (what the project ships) or `default` (every 2 minutes).
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
    /// Of successful operations (closed loop: from the send; open loop: from the
    /// intended send time).
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
        let variant = self
            .variant
            .as_deref()
            .map(|v| format!("/{v}"))
            .unwrap_or_default();
        format!("{}{variant} ({})", self.scenario, self.model.describe())
    }
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
        match &self.variant {
            Some(v) => format!("{}/{v} {}", self.scenario, model.key()),
            None => format!("{} {}", self.scenario, model.key()),
        }
    }
}

impl ScenarioResult {
    /// One point from one or more rounds of the same load: histograms merged,
    /// throughput the median of the rounds.
    pub fn from_runs(meta: Meta, runs: &[RunStats], cpu: Vec<CpuUse>) -> Result<Self> {
        let Some(first) = runs.first() else {
            bail!("no runs to summarize");
        };
        let mut tally = Tally::default();
        runs.iter().for_each(|r| tally.merge(&r.tally));
        let rounds: Vec<f64> = runs.iter().map(RunStats::throughput).collect();
        let measured_s: f64 = runs.iter().map(|r| r.measured_s).sum();
        let all = tally.overall();
        let total_requests = (all.ok() + all.error_count()).max(1) as f64;
        let ops = if tally.ops.len() > 1 {
            tally
                .ops
                .iter()
                .map(|(name, op)| OpResult {
                    name: name.to_string(),
                    ok: op.ok(),
                    errors: op.error_count(),
                    error_kinds: op.errors.clone(),
                    throughput_per_s: if measured_s > 0.0 {
                        op.ok() as f64 / measured_s
                    } else {
                        0.0
                    },
                    latency_ms: Latency::from_histogram_us(&op.ok_us),
                    share: (op.ok() + op.error_count()) as f64 / total_requests,
                })
                .collect()
        } else {
            Vec::new()
        };
        let phases = tally
            .phases
            .iter()
            .map(|(name, h)| PhaseResult {
                name: name.to_string(),
                latency_ms: Latency::from_histogram_us(h),
            })
            .collect();
        let ok = all.ok();
        Ok(ScenarioResult {
            key: meta.key(&first.model),
            scenario: meta.scenario,
            variant: meta.variant,
            target: meta.target,
            model: first.model,
            duration_s: first.schedule.measured().as_secs_f64(),
            warmup_s: first
                .schedule
                .measure_start
                .duration_since(first.schedule.start)
                .as_secs_f64(),
            instances: meta.instances,
            nats_sync: meta.nats_sync,
            rounds: if runs.len() > 1 {
                rounds.clone()
            } else {
                Vec::new()
            },
            ok,
            errors: all.error_count(),
            error_kinds: all.errors.clone(),
            first_error: all.first_error.clone(),
            throughput_per_s: median(&rounds).unwrap_or(0.0),
            measured_s,
            latency_ms: Latency::from_histogram_us(&all.ok_us),
            reply_bytes_mean: (ok > 0).then(|| all.ok_bytes as f64 / ok as f64),
            ops,
            phases,
            send_lag_ms: match first.model {
                Model::Open { .. } => Latency::from_histogram_us(&tally.send_lag_us),
                Model::Closed { .. } => None,
            },
            cpu,
            checks: Vec::new(),
            extra: BTreeMap::new(),
        })
    }

    /// One point from rounds measured separately (e.g. alternated with another
    /// scenario so that drift affects both): throughput and each percentile are
    /// the median over rounds, counts are summed, CPU is averaged.
    pub fn combine_rounds(rounds: Vec<ScenarioResult>) -> Result<Self> {
        let mut iter = rounds.into_iter();
        let Some(mut combined) = iter.next() else {
            bail!("no rounds to combine");
        };
        let rest: Vec<ScenarioResult> = iter.collect();
        if rest.is_empty() {
            return Ok(combined);
        }
        if let Some(other) = rest.iter().find(|r| r.key != combined.key) {
            bail!("cannot combine {} with {}", combined.key, other.key);
        }
        let all: Vec<&ScenarioResult> = std::iter::once(&combined).chain(&rest).collect();
        let throughputs: Vec<f64> = all.iter().map(|r| r.throughput_per_s).collect();
        let latencies: Vec<Latency> = all.iter().filter_map(|r| r.latency_ms).collect();
        let med = |f: fn(&Latency) -> f64| {
            median(&latencies.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        let latency = (!latencies.is_empty()).then(|| Latency {
            p50: med(|l| l.p50),
            p90: med(|l| l.p90),
            p99: med(|l| l.p99),
            p99_9: med(|l| l.p99_9),
            max: med(|l| l.max),
            mean: med(|l| l.mean),
        });
        let mut error_kinds = BTreeMap::new();
        for (k, n) in all.iter().flat_map(|r| &r.error_kinds) {
            *error_kinds.entry(k.clone()).or_insert(0) += n;
        }
        let cpu_rounds: Vec<&[CpuUse]> = all.iter().map(|r| r.cpu.as_slice()).collect();
        let cpu = crate::cpu::average(&combined.cpu, &cpu_rounds);
        let first_error = all.iter().find_map(|r| r.first_error.clone());
        let ok = all.iter().map(|r| r.ok).sum();
        let errors = all.iter().map(|r| r.errors).sum();
        let measured_s = all.iter().map(|r| r.measured_s).sum();
        combined.ok = ok;
        combined.errors = errors;
        combined.measured_s = measured_s;
        combined.throughput_per_s = median(&throughputs).unwrap_or(0.0);
        combined.rounds = throughputs;
        combined.latency_ms = latency;
        combined.error_kinds = error_kinds;
        combined.first_error = first_error;
        combined.cpu = cpu;
        Ok(combined)
    }

    /// Errors as a share of all requests in the window.
    pub fn error_rate(&self) -> f64 {
        let total = self.ok + self.errors;
        if total == 0 {
            0.0
        } else {
            self.errors as f64 / total as f64
        }
    }

    /// What makes this point untrustworthy, if anything: no successes, an error
    /// rate above `max_error_rate`, disordered percentiles, a failed check.
    pub fn problems(&self, max_error_rate: f64) -> Vec<String> {
        let mut problems = Vec::new();
        if self.ok == 0 {
            problems.push(format!(
                "{}: no successful requests (first error: {})",
                self.key,
                self.first_error.as_deref().unwrap_or("none")
            ));
        }
        if self.error_rate() > max_error_rate {
            problems.push(format!(
                "{}: error rate {:.1}% over {:.1}% ({:?}; first: {})",
                self.key,
                self.error_rate() * 100.0,
                max_error_rate * 100.0,
                self.error_kinds,
                self.first_error.as_deref().unwrap_or("none")
            ));
        }
        match &self.latency_ms {
            Some(l) if !l.is_ordered() => {
                problems.push(format!("{}: percentiles out of order: {l:?}", self.key))
            }
            None if self.ok > 0 => problems.push(format!("{}: no latency recorded", self.key)),
            _ => {}
        }
        if !(self.throughput_per_s.is_finite() && self.throughput_per_s >= 0.0) {
            problems.push(format!(
                "{}: throughput {} is not a number",
                self.key, self.throughput_per_s
            ));
        }
        for c in self.checks.iter().filter(|c| !c.passed) {
            problems.push(format!(
                "{}: check {} failed: {}",
                self.key, c.name, c.detail
            ));
        }
        problems
    }
}

impl ResultsFile {
    /// An empty file of this run: now, this machine, the versions known
    /// without a server (the caller fills in `nats_server` and `node`).
    pub fn new(command: String, settings: Settings) -> Self {
        Self {
            schema: SCHEMA.to_string(),
            created_at: now_rfc3339(),
            command,
            machine: machine::machine(),
            versions: machine::versions(&shop_process::workspace_root()),
            settings,
            results: Vec::new(),
            scaling: Vec::new(),
            targets: Vec::new(),
            notes: Vec::new(),
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

    pub fn read(path: &Path) -> Result<Self> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: ResultsFile = serde_json::from_str(&text)
            .with_context(|| format!("parsing {} as a shop-bench results file", path.display()))?;
        if file.schema != SCHEMA {
            bail!(
                "{} has schema {:?}; this shop-bench reads {SCHEMA:?}",
                path.display(),
                file.schema
            );
        }
        Ok(file)
    }

    pub fn result(&self, key: &str) -> Option<&ScenarioResult> {
        self.results.iter().find(|r| r.key == key)
    }
}

/// Now, RFC 3339 in UTC, to the second.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".to_string())
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
/// "Sustained": at least this share of the offered rate confirmed, and at most
/// this share of orders failed or unsettled.
const SUSTAINED_SHARE: f64 = 0.98;
const MAX_ORDER_ERRORS: f64 = 0.001;

fn find<'a>(
    file: &'a ResultsFile,
    scenario: &str,
    variant: &str,
    model: Model,
) -> Option<&'a ScenarioResult> {
    file.results.iter().find(|r| {
        r.scenario == scenario && r.variant.as_deref() == Some(variant) && r.model == model
    })
}

fn ratio_check(
    name: &str,
    target: String,
    num: Option<&ScenarioResult>,
    den: Option<&ScenarioResult>,
    at_least: f64,
    percent: bool,
) -> TargetCheck {
    match (num, den) {
        (Some(n), Some(d)) if d.throughput_per_s > 0.0 => {
            let ratio = n.throughput_per_s / d.throughput_per_s;
            TargetCheck {
                name: name.to_string(),
                target,
                measured: format!(
                    "{} ({} vs {} ok/s)",
                    if percent {
                        format!("{:.0}%", ratio * 100.0)
                    } else {
                        format!("{ratio:.1}×")
                    },
                    fmt_rate(n.throughput_per_s),
                    fmt_rate(d.throughput_per_s)
                ),
                met: Some(ratio >= at_least && n.errors == 0),
            }
        }
        _ => TargetCheck {
            name: name.to_string(),
            target,
            measured: "-".to_string(),
            met: None,
        },
    }
}

/// The uncached gateway's p99 at 64 connections, against [`GATEWAY_P99_MS`].
fn gateway_p99_check(uncached: Option<&ScenarioResult>) -> TargetCheck {
    let p99 = uncached.and_then(|r| r.latency_ms.map(|l| l.p99));
    TargetCheck {
        name: "gateway-get uncached p99 (64 connections)".to_string(),
        target: format!("< {GATEWAY_P99_MS:.0} ms"),
        measured: p99.map_or_else(|| "-".to_string(), |p| format!("{p:.2} ms")),
        met: p99.map(|p| p < GATEWAY_P99_MS),
    }
}

/// Every one of the targets, measured or not, from one file.
pub fn check_targets(file: &ResultsFile) -> Vec<TargetCheck> {
    let c64 = Model::Closed { in_flight: 64 };
    let echo = file
        .results
        .iter()
        .find(|r| r.scenario == "echo" && r.model == c64);
    let mut checks = vec![ratio_check(
        "product-get vs echo (64 in flight)",
        format!("≥ {:.0}% of echo", PRODUCT_GET_VS_ECHO * 100.0),
        find(file, "product-get", "json", c64),
        echo,
        PRODUCT_GET_VS_ECHO,
        true,
    )];
    // The stack the target names, express-http-proxy as such guides set it up
    // (a new upstream connection per request), and the same stack tuned with
    // keep-alive upstream connections, so the ratio is also shown against the
    // stronger configuration.
    let uncached = find(file, "gateway-get", "uncached", c64);
    for (variant, how, stack) in [
        ("express", "express-http-proxy defaults", "Express"),
        ("express-keepalive", "keep-alive upstream", "tuned Express"),
    ] {
        checks.push(ratio_check(
            &format!("gateway-get uncached vs Express ({how})"),
            format!("≥ {GATEWAY_VS_EXPRESS:.0}× {stack} + express-http-proxy"),
            uncached,
            find(file, "gateway-get", variant, c64),
            GATEWAY_VS_EXPRESS,
            false,
        ));
    }
    checks.push(gateway_p99_check(uncached));
    let orders: Vec<&ScenarioResult> = file
        .results
        .iter()
        .filter(|r| r.scenario == "order-place" && r.model == Model::Open { rate: ORDER_RATE })
        .collect();
    let wanted = format!("{ORDER_RATE:.0}/s sustained, p99 to confirmed < {ORDER_P99_MS:.0} ms");
    if orders.is_empty() {
        checks.push(TargetCheck {
            name: "order-place".to_string(),
            target: wanted.clone(),
            measured: "-".to_string(),
            met: None,
        });
    }
    for r in orders {
        let p99 = r.latency_ms.map(|l| l.p99);
        let met = r.throughput_per_s >= ORDER_RATE * SUSTAINED_SHARE
            && r.error_rate() <= MAX_ORDER_ERRORS
            && p99.is_some_and(|p| p < ORDER_P99_MS);
        checks.push(TargetCheck {
            name: format!(
                "order-place ({})",
                r.nats_sync
                    .as_deref()
                    .map(|s| format!("sync {s}"))
                    .or_else(|| r.variant.clone())
                    .unwrap_or_default()
            ),
            target: wanted.clone(),
            measured: format!(
                "{}/s confirmed, p99 {} ms, {} failed or unsettled",
                fmt_rate(r.throughput_per_s),
                p99.map_or("-".to_string(), fmt_ms),
                r.errors
            ),
            met: Some(met),
        });
    }
    checks
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::load::Schedule;
    use crate::stats::OpError;
    use std::time::Duration;

    pub fn run_stats(model: Model, oks: &[(&'static str, u64)], errors: u64) -> RunStats {
        let mut tally = Tally::default();
        for (op, us) in oks {
            tally.op(op).record_ok(*us, 200);
        }
        for _ in 0..errors {
            let not_found = OpError::new("service_404", "not found");
            tally.op("product.get").record_error(&not_found);
        }
        RunStats {
            model,
            schedule: Schedule::starting_now(Duration::from_secs(1), Duration::from_secs(2)),
            tally,
            measured_s: 2.0,
        }
    }

    #[test]
    fn rounds_merge_into_one_point() {
        let model = Model::Closed { in_flight: 64 };
        let a = run_stats(model, &[("product.get", 1000); 10], 0);
        let b = run_stats(model, &[("product.get", 3000); 30], 2);
        let c = run_stats(model, &[("product.get", 2000); 20], 0);
        let meta = Meta::new("product-get", Some("json"), "product.get");
        let r = ScenarioResult::from_runs(meta, &[a, b, c], Vec::new()).unwrap();
        assert_eq!(r.key, "product-get/json c64");
        assert_eq!(r.rounds, vec![5.0, 15.0, 10.0]);
        assert_eq!(r.throughput_per_s, 10.0);
        assert_eq!(r.ok, 60);
        assert_eq!(r.errors, 2);
        assert!((r.warmup_s - 1.0).abs() < 1e-9 && (r.duration_s - 2.0).abs() < 1e-9);
        assert!(r.ops.is_empty(), "one operation: no breakdown");
        assert!(r.problems(0.05).is_empty(), "{:?}", r.problems(0.05));
        assert_eq!(r.problems(0.01).len(), 1);
    }

    #[test]
    fn mixed_operations_are_broken_down() {
        let run = run_stats(
            Model::Open { rate: 100.0 },
            &[
                ("product.get", 1000),
                ("product.get", 1000),
                ("user.login", 30_000),
            ],
            1,
        );
        let r =
            ScenarioResult::from_runs(Meta::new("mixed", None, "mix"), &[run], Vec::new()).unwrap();
        assert_eq!(r.ops.len(), 2);
        let get = r.ops.iter().find(|o| o.name == "product.get").unwrap();
        assert_eq!((get.ok, get.errors), (2, 1));
        assert!((get.share - 0.75).abs() < 1e-9);
    }

    #[test]
    fn separate_rounds_combine_by_median() {
        let model = Model::Closed { in_flight: 64 };
        let point = |n: usize, us: u64| {
            let oks: Vec<(&'static str, u64)> = vec![("product.get", us); n];
            let meta = Meta::new("echo", None, "bench.echo");
            ScenarioResult::from_runs(meta, &[run_stats(model, &oks, 1)], Vec::new()).unwrap()
        };
        let r =
            ScenarioResult::combine_rounds(vec![point(10, 1000), point(30, 3000), point(20, 2000)])
                .unwrap();
        assert_eq!(r.rounds, vec![5.0, 15.0, 10.0]);
        assert_eq!(r.throughput_per_s, 10.0);
        assert_eq!((r.ok, r.errors), (60, 3));
        assert!((r.latency_ms.unwrap().p50 - 2.0).abs() < 0.01);
        let other = ScenarioResult::from_runs(
            Meta::new("product-get", None, "product.get"),
            &[run_stats(model, &[("product.get", 1)], 0)],
            Vec::new(),
        )
        .unwrap();
        assert!(ScenarioResult::combine_rounds(vec![point(1, 1), other]).is_err());
    }

    #[test]
    fn no_successes_is_a_problem() {
        let run = run_stats(Model::Closed { in_flight: 1 }, &[], 3);
        let r = ScenarioResult::from_runs(Meta::new("echo", None, "bench.echo"), &[run], vec![])
            .unwrap();
        let problems = r.problems(1.0);
        assert!(
            problems[0].contains("no successful requests"),
            "{problems:?}"
        );
    }

    /// One point of `scenario` with one success of `p99_us` µs at `rps` ok/s.
    pub fn point(
        scenario: &str,
        variant: Option<&str>,
        model: Model,
        rps: f64,
        p99_us: u64,
    ) -> ScenarioResult {
        let mut r = ScenarioResult::from_runs(
            Meta::new(scenario, variant, "x"),
            &[run_stats(model, &[("op", p99_us)], 0)],
            Vec::new(),
        )
        .unwrap();
        r.throughput_per_s = rps;
        r
    }

    #[test]
    fn targets_from_one_file() {
        let c64 = Model::Closed { in_flight: 64 };
        let r500 = Model::Open { rate: 500.0 };
        let file = ResultsFile {
            results: vec![
                point("echo", None, c64, 50_000.0, 1000),
                point("product-get", Some("json"), c64, 31_000.0, 1000),
                point("gateway-get", Some("uncached"), c64, 9_000.0, 1000),
                point("gateway-get", Some("express"), c64, 1_000.0, 1000),
                point("order-place", Some("sync-always"), r500, 495.0, 300_000),
                point("order-place", Some("sync-default"), r500, 499.0, 120_000),
            ],
            ..ResultsFile::new(String::new(), Settings::default())
        };
        let checks = check_targets(&file);
        assert_eq!(checks.len(), 6);
        assert_eq!(checks[0].met, Some(true), "{:?}", checks[0]);
        assert!(checks[0].measured.starts_with("62%"), "{:?}", checks[0]);
        assert_eq!(checks[1].met, Some(false), "9× is short of 10×");
        assert_eq!(checks[2].met, None, "no keep-alive baseline measured");
        assert_eq!(checks[3].met, Some(true), "p99 1 ms: {:?}", checks[3]);
        assert_eq!(checks[4].met, Some(false), "p99 300 ms");
        assert_eq!(checks[5].met, Some(true), "{:?}", checks[5]);
    }

    #[test]
    fn unmeasured_targets_say_so() {
        let file = ResultsFile::new(String::new(), Settings::default());
        assert!(check_targets(&file).iter().all(|c| c.met.is_none()));
    }
}
