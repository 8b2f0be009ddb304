//! What a run observed: latency histograms and errors per operation; figures for people.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use thousands::Separable;

/// Highest latency the histograms track, in microseconds (1 hour).
pub const MAX_TRACKABLE_US: u64 = 3_600_000_000;
/// Significant figures kept by the histograms (0.1% resolution).
pub const SIGFIGS: u8 = 3;

/// A latency histogram in microseconds, 1 µs .. 1 h; all made by `Default`, so they add up.
#[derive(Debug, Clone)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        // Only bounds that contradict each other fail, and these are constants.
        let h = Histogram::new_with_bounds(1, MAX_TRACKABLE_US, SIGFIGS);
        Hist(h.expect("valid histogram bounds"))
    }
}

impl Hist {
    /// Records `us`, at least 1 µs and at most the highest trackable value.
    pub fn record(&mut self, us: u64) {
        self.0.saturating_record(us.max(1));
    }

    /// Adds `other` (of the same bounds: `add` fails only beyond this one's range).
    pub fn add(&mut self, other: &Hist) {
        self.0.add(&other.0).expect("histograms of the same bounds");
    }
}

/// Latency percentiles in milliseconds.
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
    pub fn from_histogram_us(Hist(h): &Hist) -> Option<Self> {
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

    /// Each figure the median of the same figure of `rounds`; `None` if empty.
    pub fn median(rounds: &[Latency]) -> Option<Self> {
        let med = |f: fn(&Latency) -> f64| {
            median(&rounds.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        (!rounds.is_empty()).then(|| Latency {
            p50: med(|l| l.p50),
            p90: med(|l| l.p90),
            p99: med(|l| l.p99),
            p99_9: med(|l| l.p99_9),
            max: med(|l| l.max),
            mean: med(|l| l.mean),
        })
    }

    /// p50, p90, p99, p99.9 and max, in that order.
    pub fn percentiles(&self) -> [f64; 5] {
        [self.p50, self.p90, self.p99, self.p99_9, self.max]
    }

    /// p50 ≤ p90 ≤ p99 ≤ p99.9 ≤ max, all finite and non-negative.
    pub fn is_ordered(&self) -> bool {
        let v = self.percentiles();
        v.iter().all(|x| x.is_finite() && *x >= 0.0) && v.windows(2).all(|w| w[0] <= w[1])
    }
}

/// A failed request: a short kind to count by (`service_409`, `timeout`) and a message.
#[derive(Debug, Clone, PartialEq)]
pub struct OpError {
    pub kind: String,
    pub message: String,
}

impl OpError {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

/// One operation's successes, failures and latencies.
#[derive(Debug, Clone, Default)]
pub struct OpTally {
    /// Latencies of successful requests, microseconds.
    pub ok_us: Hist,
    /// Reply bytes of successful requests (a suspiciously small reply shows here).
    pub ok_bytes: u64,
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
}

impl OpTally {
    pub fn ok(&self) -> u64 {
        self.ok_us.0.len()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn record_ok(&mut self, latency_us: u64, bytes: usize) {
        self.ok_us.record(latency_us);
        self.ok_bytes += bytes as u64;
    }

    pub fn record_error(&mut self, error: &OpError) {
        *self.errors.entry(error.kind.clone()).or_default() += 1;
        self.first_error
            .get_or_insert_with(|| error.message.clone());
    }

    pub fn merge(&mut self, other: &OpTally) {
        self.ok_us.add(&other.ok_us);
        self.ok_bytes += other.ok_bytes;
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

/// Everything a run (or one worker of it) observed inside the measurement window.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Per operation (a scenario with one kind of request has one entry).
    pub ops: BTreeMap<&'static str, OpTally>,
    /// Intermediate timings (µs from the same start as the operation's latency).
    pub phases: BTreeMap<&'static str, Hist>,
    /// Open loop only: how late each request was sent after its intended time.
    pub send_lag_us: Hist,
}

impl Tally {
    pub fn op(&mut self, name: &'static str) -> &mut OpTally {
        self.ops.entry(name).or_default()
    }

    pub fn record_phase(&mut self, name: &'static str, us: u64) {
        self.phases.entry(name).or_default().record(us);
    }

    pub fn merge(&mut self, other: &Tally) {
        for (name, op) in &other.ops {
            self.op(name).merge(op);
        }
        for (name, h) in &other.phases {
            self.phases.entry(name).or_default().add(h);
        }
        self.send_lag_us.add(&other.send_lag_us);
    }

    /// All operations together.
    pub fn overall(&self) -> OpTally {
        let mut all = OpTally::default();
        self.ops.values().for_each(|op| all.merge(op));
        all
    }
}

/// Median: the mean of the two middle values (one value twice for an odd count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let (low, high) = (v[(v.len() - 1) / 2], v[v.len() / 2]);
    Some((low + high) / 2.0)
}

/// Milliseconds with about three significant digits.
pub fn fmt_ms(v: f64) -> String {
    match v {
        v if v < 1.0 => format!("{v:.3}"),
        v if v < 10.0 => format!("{v:.2}"),
        v if v < 100.0 => format!("{v:.1}"),
        v => (v.round() as u64).separate_with_commas(),
    }
}

/// Seconds without needless decimals: `2`, `0.5`.
pub fn fmt_secs(v: f64) -> String {
    let text = format!("{v:.1}");
    text.strip_suffix(".0").map(str::to_string).unwrap_or(text)
}

/// A rate: whole numbers with thousands separators, one decimal below 100.
pub fn fmt_rate(v: f64) -> String {
    match v < 100.0 {
        true => format!("{v:.1}"),
        false => (v.round() as u64).separate_with_commas(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_from_uniform_histogram() {
        let mut h = Hist::default();
        (1..=10_000u64).for_each(|us| h.record(us));
        let l = Latency::from_histogram_us(&h).unwrap();
        let actual = [l.p50, l.p90, l.p99, l.p99_9, l.max, l.mean];
        for (actual, ms) in actual.into_iter().zip([5.0, 9.0, 9.9, 9.99, 10.0, 5.0005]) {
            // 3 significant figures: relative error below 0.1%, and a little slack.
            assert!((actual - ms).abs() <= ms * 0.002, "{actual} ms, not {ms}");
        }
        assert!(l.is_ordered());
        assert!(!Latency { p90: 1.0, ..l }.is_ordered(), "p90 below p50");
        assert!(Latency::from_histogram_us(&Hist::default()).is_none());
    }

    #[test]
    fn tallies_merge_per_operation() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        for _ in 0..500 {
            a.op("get").record_ok(250, 200);
            b.op("get").record_ok(250, 100);
        }
        b.op("login").record_ok(30_000, 500);
        for _ in 0..7 {
            a.op("get")
                .record_error(&OpError::new("service_404", "not found"));
        }
        b.record_phase("reply", 100);
        a.merge(&b);
        let get = &a.ops["get"];
        assert_eq!(get.ok(), 1000);
        assert_eq!(get.ok_bytes, 300 * 500);
        assert_eq!(get.errors.get("service_404"), Some(&7));
        assert_eq!(get.first_error.as_deref(), Some("not found"));
        assert_eq!(a.ops["login"].ok(), 1);
        assert_eq!(a.phases["reply"].0.len(), 1);
        let all = a.overall();
        assert_eq!(all.ok(), 1001);
        assert_eq!(all.error_count(), 7);
    }
}
