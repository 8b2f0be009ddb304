//! Result summaries: HDR histogram percentiles, one-line text, JSON files, and
//! the multi-round comparison table.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency the histograms track, in microseconds (1 hour).
pub const MAX_TRACKABLE_US: u64 = 3_600_000_000;
/// Significant figures kept by the histograms.
pub const SIGFIGS: u8 = 3;

/// New latency histogram in microseconds, 1 µs .. 1 h, 3 significant figures.
pub fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_TRACKABLE_US, SIGFIGS).context("creating latency histogram")
}

/// What a load task (or a whole run, after merging) observed in the window.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latencies of successful requests, microseconds.
    pub ok_latencies_us: Histogram<u64>,
    /// Payload bytes of successful replies (to catch suspiciously small replies).
    pub ok_reply_bytes: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub first_error: Option<String>,
}

impl Tally {
    pub fn new() -> Result<Self> {
        Ok(Tally {
            ok_latencies_us: new_histogram()?,
            ok_reply_bytes: 0,
            error_kinds: BTreeMap::new(),
            first_error: None,
        })
    }

    pub fn record_ok(&mut self, latency_us: u64, reply_bytes: usize) {
        self.ok_latencies_us.saturating_record(latency_us.max(1));
        self.ok_reply_bytes += reply_bytes as u64;
    }

    pub fn record_error(&mut self, kind: String, message: String) {
        *self.error_kinds.entry(kind).or_default() += 1;
        self.first_error.get_or_insert(message);
    }

    pub fn merge(&mut self, other: Tally) -> Result<()> {
        self.ok_latencies_us
            .add(&other.ok_latencies_us)
            .context("merging latency histograms")?;
        self.ok_reply_bytes += other.ok_reply_bytes;
        for (kind, n) in other.error_kinds {
            *self.error_kinds.entry(kind).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }
}

/// Load-run settings echoed into the result so files are self-describing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    pub nats_url: String,
    pub concurrency: usize,
    pub connections: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub timeout_s: f64,
    /// Number of distinct payloads cycled through.
    pub payloads: usize,
    /// Request headers as `K:V`.
    pub headers: Vec<String>,
}

/// Latency percentiles of successful requests, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// Percentiles of a histogram recorded in microseconds; `None` if it is empty.
    pub fn from_histogram_us(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        })
    }
}

/// Result of one `load` run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub label: String,
    pub subject: String,
    pub settings: Settings,
    /// Length of the measurement window (after warm-up), seconds.
    pub measured_s: f64,
    /// Successful replies completed inside the measurement window.
    pub ok: u64,
    /// Failed requests inside the window (service error replies, timeouts, ...).
    pub errors: u64,
    /// Error counts by kind, e.g. `service_404`, `timeout`, `no_responders`.
    pub error_kinds: BTreeMap<String, u64>,
    /// First error seen, for diagnosis.
    pub first_error: Option<String>,
    /// Successful replies per second (errors are not counted as throughput).
    pub requests_per_sec: f64,
    /// Mean payload size of successful replies, bytes.
    pub reply_bytes_mean: Option<f64>,
    /// Latency of successful requests; `None` when there were none.
    pub latency_ms: Option<Latency>,
    pub unix_time_s: u64,
    pub shop_bench_version: String,
}

impl Summary {
    /// Builds the summary from the merged tally of a run.
    pub fn new(
        label: String,
        subject: String,
        settings: Settings,
        measured_s: f64,
        tally: Tally,
        unix_time_s: u64,
    ) -> Self {
        let ok = tally.ok_latencies_us.len();
        let errors = tally.error_kinds.values().sum();
        let requests_per_sec = if measured_s > 0.0 {
            ok as f64 / measured_s
        } else {
            0.0
        };
        let reply_bytes_mean = (ok > 0).then(|| tally.ok_reply_bytes as f64 / ok as f64);
        Summary {
            label,
            subject,
            settings,
            measured_s,
            ok,
            errors,
            latency_ms: Latency::from_histogram_us(&tally.ok_latencies_us),
            error_kinds: tally.error_kinds,
            first_error: tally.first_error,
            requests_per_sec,
            reply_bytes_mean,
            unix_time_s,
            shop_bench_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    pub fn one_line(&self) -> String {
        let latency = match &self.latency_ms {
            Some(l) => format!(
                "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
                l.p50, l.p90, l.p99, l.p99_9, l.max
            ),
            None => "no successful requests".to_owned(),
        };
        let reply = match self.reply_bytes_mean {
            Some(b) => format!(", reply {b:.0} B"),
            None => String::new(),
        };
        let mut line = format!(
            "{}: {:.0} req/s, {} ok, {} errors, {} (c={}, {:.1}s{reply})",
            self.label,
            self.requests_per_sec,
            self.ok,
            self.errors,
            latency,
            self.settings.concurrency,
            self.measured_s,
        );
        if !self.error_kinds.is_empty() {
            let kinds: Vec<String> = self
                .error_kinds
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            line.push_str(&format!(" [errors: {}]", kinds.join(", ")));
        }
        line
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }

    pub fn read_json(path: &Path) -> Result<Self> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Pretty-printed JSON to `path`, creating parent directories.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut text = serde_json::to_string_pretty(value).context("serializing JSON")?;
    text.push('\n');
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Median; the mean of the two middle values for an even count. `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// One scenario (label) aggregated over its rounds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScenarioRow {
    pub scenario: String,
    pub rounds: usize,
    pub requests_per_sec_rounds: Vec<f64>,
    pub requests_per_sec_median: f64,
    pub p50_ms_median: Option<f64>,
    pub p99_ms_median: Option<f64>,
    pub errors_total: u64,
    /// Median req/s as a percentage of the baseline's median req/s.
    pub pct_of_baseline: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Comparison {
    pub baseline: String,
    pub target_pct: Option<f64>,
    pub rows: Vec<ScenarioRow>,
}

impl Comparison {
    /// Groups results by label (in order of first appearance) and takes medians.
    pub fn build(results: &[Summary], baseline: &str, target_pct: Option<f64>) -> Result<Self> {
        let mut order: Vec<&str> = Vec::new();
        let mut groups: BTreeMap<&str, Vec<&Summary>> = BTreeMap::new();
        for r in results {
            if !groups.contains_key(r.label.as_str()) {
                order.push(&r.label);
            }
            groups.entry(&r.label).or_default().push(r);
        }
        let mut rows: Vec<ScenarioRow> = order
            .iter()
            .filter_map(|label| groups.get(label).map(|g| (label, g)))
            .map(|(label, g)| {
                let rps: Vec<f64> = g.iter().map(|s| s.requests_per_sec).collect();
                let p50: Vec<f64> = g
                    .iter()
                    .filter_map(|s| s.latency_ms.map(|l| l.p50))
                    .collect();
                let p99: Vec<f64> = g
                    .iter()
                    .filter_map(|s| s.latency_ms.map(|l| l.p99))
                    .collect();
                ScenarioRow {
                    scenario: (*label).to_owned(),
                    rounds: g.len(),
                    requests_per_sec_median: median(&rps).unwrap_or(0.0),
                    requests_per_sec_rounds: rps,
                    p50_ms_median: median(&p50),
                    p99_ms_median: median(&p99),
                    errors_total: g.iter().map(|s| s.errors).sum(),
                    pct_of_baseline: None,
                }
            })
            .collect();
        let Some(base_rps) = rows
            .iter()
            .find(|r| r.scenario == baseline)
            .map(|r| r.requests_per_sec_median)
        else {
            bail!("baseline scenario {baseline:?} not found among the results");
        };
        for row in &mut rows {
            if base_rps > 0.0 {
                row.pct_of_baseline = Some(row.requests_per_sec_median / base_rps * 100.0);
            }
        }
        Ok(Comparison {
            baseline: baseline.to_owned(),
            target_pct,
            rows,
        })
    }

    pub fn markdown(&self) -> String {
        let opt = |v: Option<f64>, prec: usize| match v {
            Some(x) => format!("{x:.prec$}"),
            None => "-".to_owned(),
        };
        let pct = |v: Option<f64>| match v {
            Some(x) => format!("{x:.1}%"),
            None => "n/a".to_owned(),
        };
        let mut out = format!(
            "| scenario | rounds | req/s (median) | req/s per round | p50 ms | p99 ms | errors | % of {} |\n",
            self.baseline
        );
        out.push_str("|---|---:|---:|---|---:|---:|---:|---:|\n");
        for r in &self.rows {
            let per_round: Vec<String> = r
                .requests_per_sec_rounds
                .iter()
                .map(|x| format!("{x:.0}"))
                .collect();
            out.push_str(&format!(
                "| {} | {} | {:.0} | {} | {} | {} | {} | {} |\n",
                r.scenario,
                r.rounds,
                r.requests_per_sec_median,
                per_round.join(" / "),
                opt(r.p50_ms_median, 3),
                opt(r.p99_ms_median, 3),
                r.errors_total,
                pct(r.pct_of_baseline),
            ));
        }
        if let Some(target) = self.target_pct {
            for r in self.rows.iter().filter(|r| r.scenario != self.baseline) {
                let verdict = match r.pct_of_baseline {
                    Some(p) if p >= target && r.errors_total == 0 => "PASS",
                    Some(p) if p >= target => "PASS (throughput) but with errors",
                    _ => "FAIL",
                };
                out.push_str(&format!(
                    "\n{}: {} of {} req/s (target >= {target:.0}%): {verdict}\n",
                    r.scenario,
                    pct(r.pct_of_baseline),
                    self.baseline,
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            nats_url: "nats://127.0.0.1:4222".into(),
            concurrency: 64,
            connections: 1,
            duration_s: 2.0,
            warmup_s: 0.0,
            timeout_s: 5.0,
            payloads: 1,
            headers: vec![],
        }
    }

    fn close(actual: f64, expected: f64) -> bool {
        // 3 significant figures => relative error below 0.1%; allow a little slack.
        (actual - expected).abs() <= expected * 0.002
    }

    #[test]
    fn percentiles_from_uniform_histogram() {
        let mut h = new_histogram().unwrap();
        for us in 1..=10_000u64 {
            h.record(us).unwrap();
        }
        let l = Latency::from_histogram_us(&h).unwrap();
        assert!(close(l.p50, 5.0), "p50 {}", l.p50);
        assert!(close(l.p90, 9.0), "p90 {}", l.p90);
        assert!(close(l.p99, 9.9), "p99 {}", l.p99);
        assert!(close(l.p99_9, 9.99), "p99.9 {}", l.p99_9);
        assert!(close(l.max, 10.0), "max {}", l.max);
        assert!(close(l.mean, 5.0005), "mean {}", l.mean);
    }

    #[test]
    fn summary_counts_only_successes_as_throughput() {
        // Two tasks' tallies merged, as the load runner does.
        let mut a = Tally::new().unwrap();
        let mut b = Tally::new().unwrap();
        for _ in 0..500 {
            a.record_ok(250, 200);
            b.record_ok(250, 100);
        }
        for _ in 0..7 {
            a.record_error("service_404".into(), "service error 404: not found".into());
        }
        for _ in 0..3 {
            b.record_error("timeout".into(), "request timed out".into());
        }
        a.merge(b).unwrap();
        let s = Summary::new(
            "product-get".into(),
            "product.get".into(),
            settings(),
            2.0,
            a,
            0,
        );
        assert_eq!(s.error_kinds.get("service_404"), Some(&7));
        assert_eq!(
            s.first_error.as_deref(),
            Some("service error 404: not found")
        );
        assert_eq!(s.reply_bytes_mean, Some(150.0));
        assert_eq!(s.ok, 1000);
        assert_eq!(s.errors, 10);
        assert!((s.requests_per_sec - 500.0).abs() < 1e-9);
        let l = s.latency_ms.unwrap();
        assert!(close(l.p50, 0.25) && close(l.max, 0.25));
        let line = s.one_line();
        assert!(
            line.starts_with("product-get: 500 req/s, 1000 ok, 10 errors"),
            "{line}"
        );
        assert!(line.contains("service_404=7"), "{line}");

        // Round-trips through JSON unchanged.
        let json = serde_json::to_string(&s).unwrap();
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn empty_histogram_has_no_latency() {
        let mut t = Tally::new().unwrap();
        t.record_error("no_responders".into(), "no responders".into());
        let s = Summary::new("x".into(), "x".into(), settings(), 1.0, t, 0);
        assert_eq!(s.errors, 1);
        assert_eq!(s.latency_ms, None);
        assert_eq!(s.reply_bytes_mean, None);
        assert_eq!(s.requests_per_sec, 0.0);
        assert!(s.one_line().contains("no successful requests"));
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn comparison_uses_medians_relative_to_baseline() {
        let mk = |label: &str, rps: f64, p50_us: u64| {
            let mut t = Tally::new().unwrap();
            t.record_ok(p50_us, 10);
            Summary::new(label.into(), label.into(), settings(), 1.0, t, 0).with_rps(rps)
        };
        let results = vec![
            mk("echo", 100.0, 1000),
            mk("get", 70.0, 2000),
            mk("echo", 120.0, 1000),
            mk("get", 50.0, 3000),
            mk("echo", 110.0, 1000),
            mk("get", 66.0, 2000),
        ];
        let c = Comparison::build(&results, "echo", Some(60.0)).unwrap();
        assert_eq!(c.rows.len(), 2);
        assert_eq!(c.rows[0].scenario, "echo");
        assert_eq!(c.rows[0].requests_per_sec_median, 110.0);
        assert_eq!(c.rows[1].requests_per_sec_median, 66.0);
        assert!((c.rows[1].pct_of_baseline.unwrap() - 60.0).abs() < 1e-9);
        assert_eq!(c.rows[1].p50_ms_median, Some(2.0));
        let md = c.markdown();
        assert!(md.contains("| get | 3 | 66 |"), "{md}");
        assert!(
            md.contains("get: 60.0% of echo req/s (target >= 60%): PASS"),
            "{md}"
        );
        assert!(Comparison::build(&results, "nope", None).is_err());
    }

    impl Summary {
        fn with_rps(mut self, rps: f64) -> Self {
            self.requests_per_sec = rps;
            self
        }
    }
}
