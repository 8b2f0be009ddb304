//! The closed and open load models (BENCHMARKS.md); open loop counts what is *due* in the window.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::stats::{OpError, Tally};

/// One kind of work a scenario repeats (a request, or a request and its event).
pub trait Operation: Send + Sync + 'static {
    /// Performs request number `seq` (unique within a run) and reports what happened.
    fn call(&self, seq: u64) -> impl Future<Output = Outcome> + Send;

    /// The operation name request `seq` counts under (when dropped before the call).
    fn label(&self, seq: u64) -> &'static str;
}

/// What one request did.
#[derive(Debug)]
pub struct Outcome {
    /// Operation name, e.g. `product.get`.
    pub op: &'static str,
    /// Reply bytes on success.
    pub result: Result<usize, OpError>,
    /// When it completed, if not when `call` returned (e.g. the arrival of an event).
    pub done: Option<Instant>,
    /// Intermediate points, e.g. the `order.create` reply before the confirmation.
    pub phases: Vec<(&'static str, Instant)>,
}

impl Outcome {
    pub fn ok(op: &'static str, bytes: usize) -> Self {
        Self::new(op, Ok(bytes))
    }

    pub fn err(op: &'static str, error: OpError) -> Self {
        Self::new(op, Err(error))
    }

    fn new(op: &'static str, result: Result<usize, OpError>) -> Self {
        Self {
            op,
            result,
            done: None,
            phases: Vec::new(),
        }
    }
}

/// Which load model, with its one parameter.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Model {
    /// `in_flight` requests outstanding at all times.
    Closed { in_flight: usize },
    /// Requests due at a fixed `rate` per second.
    Open { rate: f64 },
}

impl Model {
    /// Short text, e.g. `closed 64` or `open 500/s`.
    pub fn describe(&self) -> String {
        match self {
            Model::Closed { in_flight } => format!("closed {in_flight}"),
            Model::Open { rate } => format!("open {rate:.0}/s"),
        }
    }

    /// Short key part, e.g. `c64` or `r500`.
    pub fn key(&self) -> String {
        match self {
            Model::Closed { in_flight } => format!("c{in_flight}"),
            Model::Open { rate } => format!("r{rate:.0}"),
        }
    }
}

/// When a run starts, when measuring starts and when it ends.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    pub measure_start: Instant,
    pub end: Instant,
}

impl Schedule {
    /// A run starting now: `warmup`, then `duration` measured.
    pub fn starting_now(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now();
        Self {
            start,
            measure_start: start + warmup,
            end: start + warmup + duration,
        }
    }

    pub fn measured(&self) -> Duration {
        self.end.saturating_duration_since(self.measure_start)
    }
}

/// The outcome of one run of a load model.
#[derive(Debug)]
pub struct RunStats {
    pub model: Model,
    pub schedule: Schedule,
    pub tally: Tally,
    /// Seconds the success count is divided by: the window, or up to the last success.
    pub measured_s: f64,
}

impl RunStats {
    /// Successful operations per second.
    pub fn throughput(&self) -> f64 {
        let ok = self.tally.overall().ok() as f64;
        ok / self.measured_s.max(f64::MIN_POSITIVE)
    }
}

/// Runs `op` under `model`; open loop counts a request over `max_in_flight` as `overload`.
pub async fn run<O: Operation>(
    op: Arc<O>,
    model: Model,
    schedule: Schedule,
    max_in_flight: usize,
) -> Result<RunStats> {
    match model {
        Model::Closed { in_flight } => closed(op, in_flight, schedule).await,
        Model::Open { rate } => open(op, rate, max_in_flight, schedule).await,
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Records `outcome` of a request whose latency runs from `from`.
fn record(tally: &mut Tally, outcome: Outcome, from: Instant, done: Instant) {
    for (phase, at) in &outcome.phases {
        tally.record_phase(phase, micros(at.saturating_duration_since(from)));
    }
    let op = tally.op(outcome.op);
    match &outcome.result {
        Ok(bytes) => op.record_ok(micros(done.saturating_duration_since(from)), *bytes),
        Err(e) => op.record_error(e),
    }
}

async fn closed<O: Operation>(op: Arc<O>, in_flight: usize, s: Schedule) -> Result<RunStats> {
    if in_flight == 0 {
        bail!("--in-flight must be at least 1");
    }
    let seq = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..in_flight {
        let (op, seq) = (op.clone(), seq.clone());
        workers.spawn(async move {
            let mut tally = Tally::default();
            while let Some(sent) = Some(Instant::now()).filter(|now| *now < s.end) {
                let outcome = op.call(seq.fetch_add(1, Ordering::Relaxed)).await;
                let done = outcome.done.unwrap_or_else(Instant::now);
                if (s.measure_start..s.end).contains(&done) {
                    record(&mut tally, outcome, sent, done);
                }
            }
            tally
        });
    }
    let mut tally = Tally::default();
    while let Some(joined) = workers.join_next().await {
        tally.merge(&joined.context("load worker panicked")?);
    }
    Ok(RunStats {
        model: Model::Closed { in_flight },
        schedule: s,
        tally,
        measured_s: s.measured().as_secs_f64(),
    })
}

async fn open<O: Operation>(op: Arc<O>, rate: f64, limit: usize, s: Schedule) -> Result<RunStats> {
    if !(rate.is_finite() && rate > 0.0) {
        bail!("--rate must be a positive number, got {rate}");
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (mut tally, mut last_done) = (Tally::default(), None::<Instant>);
    // A request due at `intended`, sent at `sent`, counts if due in the window.
    let mut keep = |intended: Instant, sent: Instant, outcome: Outcome| {
        if !(s.measure_start..s.end).contains(&intended) {
            return;
        }
        let done = outcome.done.unwrap_or(sent);
        if outcome.result.is_ok() {
            last_done = Some(last_done.map_or(done, |l| l.max(done)));
        }
        let lag = micros(sent.saturating_duration_since(intended));
        tally.send_lag_us.record(lag);
        record(&mut tally, outcome, intended, done);
    };
    let mut requests = JoinSet::new();
    for i in 0u64.. {
        let intended = s.start + interval.mul_f64(i as f64);
        if intended >= s.end {
            break;
        }
        if intended > Instant::now() {
            tokio::time::sleep_until(intended.into()).await;
        }
        let sent = Instant::now();
        if in_flight.load(Ordering::Relaxed) >= limit {
            let message = format!("{limit} requests outstanding: the generator dropped this one");
            let mut dropped = Outcome::err(op.label(i), OpError::new("overload", message));
            dropped.done = Some(sent);
            keep(intended, sent, dropped);
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (op, in_flight) = (op.clone(), in_flight.clone());
        requests.spawn(async move {
            let sent = Instant::now();
            let mut outcome = op.call(i).await;
            outcome.done.get_or_insert_with(Instant::now);
            in_flight.fetch_sub(1, Ordering::Relaxed);
            (intended, sent, outcome)
        });
    }
    while let Some(joined) = requests.join_next().await {
        let (intended, sent, outcome) = joined.context("a request of the open loop panicked")?;
        keep(intended, sent, outcome);
    }
    let window = s.measured().as_secs_f64();
    let late = last_done.map(|l| l.saturating_duration_since(s.measure_start).as_secs_f64());
    Ok(RunStats {
        model: Model::Open { rate },
        schedule: s,
        tally,
        measured_s: late.map_or(window, |late| late.max(window)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Latency;
    use tokio::sync::Semaphore;

    /// Answers after `delay`, one at a time when `serial`; every fifth fails.
    struct Sleepy {
        delay: Duration,
        serial: Semaphore,
    }

    impl Operation for Sleepy {
        async fn call(&self, seq: u64) -> Outcome {
            let _one = self.serial.acquire().await;
            tokio::time::sleep(self.delay).await;
            match seq % 5 {
                4 => Outcome::err("sleep", OpError::new("service_409", "conflict")),
                _ => Outcome::ok("sleep", 10),
            }
        }

        fn label(&self, _seq: u64) -> &'static str {
            "sleep"
        }
    }

    /// [`Sleepy`] answering after `delay_ms` under `model`, at most `max_in_flight` outstanding.
    async fn load(delay_ms: u64, serial: bool, model: Model, max_in_flight: usize) -> RunStats {
        let delay = Duration::from_millis(delay_ms);
        let serial = Semaphore::new(if serial { 1 } else { Semaphore::MAX_PERMITS });
        let (warmup, measured) = match model {
            Model::Closed { .. } => (100, 500),
            Model::Open { .. } => (0, 300),
        };
        let ms = Duration::from_millis;
        let s = Schedule::starting_now(ms(warmup), ms(measured));
        let op = Arc::new(Sleepy { delay, serial });
        run(op, model, s, max_in_flight).await.unwrap()
    }

    #[tokio::test]
    async fn closed_loop_throughput_follows_concurrency_over_latency() {
        let stats = load(10, false, Model::Closed { in_flight: 4 }, 20_000).await;
        let all = stats.tally.overall();
        // 4 in flight / ~10 ms each ≈ 400/s, 80% of them successes.
        let rate = stats.throughput();
        assert!((60.0..=340.0).contains(&rate), "rate {rate}");
        assert!(all.error_count() > 0);
        let l = Latency::from_histogram_us(&all.ok_us).unwrap();
        assert!(l.p50 >= 10.0 && l.is_ordered(), "{l:?}");
    }

    #[tokio::test]
    async fn open_loop_counts_latency_from_the_intended_time() {
        // One request is served per 20 ms, due every 5 ms: waiting for replies would hide it.
        let stats = load(20, true, Model::Open { rate: 200.0 }, 20_000).await;
        let all = stats.tally.overall();
        assert_eq!(all.ok() + all.error_count(), 60);
        let l = Latency::from_histogram_us(&all.ok_us).unwrap();
        // The last one waited for the 59 before it: about 60 × 20 ms − 300 ms.
        assert!(l.max > 800.0, "max {} ms", l.max);
        // Achieved rate is what the server managed (~50/s), not the offered 200/s.
        let rate = stats.throughput();
        assert!(rate < 80.0, "rate {rate}");
        let lag = Latency::from_histogram_us(&stats.tally.send_lag_us).unwrap();
        assert!(lag.p99 < 50.0, "send lag {lag:?}");
    }

    #[tokio::test]
    async fn open_loop_drops_beyond_the_in_flight_limit() {
        let stats = load(500, false, Model::Open { rate: 100.0 }, 5).await;
        let all = stats.tally.overall();
        assert_eq!(all.ok() + all.error_count(), 30);
        assert_eq!(all.errors.get("overload"), Some(&25));
    }
}
