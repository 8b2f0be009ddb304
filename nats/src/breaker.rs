//! A circuit breaker: after repeated failures of a downstream service, calls fail
//! fast for a while instead of each waiting for a timeout; then one probe call is
//! let through and its outcome closes or re-opens the circuit.
//!
//! Every call that goes through holds a [`Permit`], and the permit records the
//! call's outcome exactly once. A permit dropped without an outcome (its caller
//! gave up, its task was cancelled) still settles: a probe counts as failed, so
//! the probe slot is never left taken and no interleaving of callers can leave the
//! breaker refusing every call for good.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit rejects calls before letting a probe through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// How long a half-open breaker asks callers to wait while its probe is out.
const PROBE_RETRY_AFTER: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Inner {
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    probe_in_flight: bool,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

/// Leave to make one call. Settle it with [`Permit::success`], [`Permit::failure`]
/// or [`Permit::inconclusive`]; dropping it unsettled is an abandoned call (see
/// the module documentation).
#[derive(Debug)]
#[must_use = "a permit records the outcome of the call it allowed"]
pub struct Permit {
    breaker: Arc<CircuitBreaker>,
    probe: bool,
    settled: bool,
}

/// What a call showed about the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    /// Nothing about the target (e.g. this process's own connection was down).
    Inconclusive,
}

impl Permit {
    /// Whether this call is the half-open probe whose outcome closes or re-opens
    /// the circuit.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The target answered: the circuit closes.
    pub fn success(mut self) {
        self.settle(Outcome::Success);
    }

    /// The target failed: counts towards opening; a failed probe re-opens.
    pub fn failure(mut self) {
        self.settle(Outcome::Failure);
    }

    /// The call says nothing about the target: counts are unchanged, and a
    /// probe's slot is freed so the next call probes.
    pub fn inconclusive(mut self) {
        self.settle(Outcome::Inconclusive);
    }

    fn settle(&mut self, outcome: Outcome) {
        if !std::mem::replace(&mut self.settled, true) {
            self.breaker.record(self.probe, outcome, Instant::now());
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // An abandoned probe is a failed one: nothing showed the target is back.
        // An abandoned ordinary call shows nothing about the target.
        let outcome = if self.probe {
            Outcome::Failure
        } else {
            Outcome::Inconclusive
        };
        self.settle(outcome);
    }
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                consecutive_failures: 0,
                opened_at: None,
                probe_in_flight: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// May a call go through now? A [`Permit`] for it, or `Err(retry_after)`
    /// when the circuit is open (or half-open with its probe out).
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit, Duration> {
        self.try_acquire_at(Instant::now())
    }

    fn try_acquire_at(self: &Arc<Self>, now: Instant) -> Result<Permit, Duration> {
        let mut inner = self.lock();
        let probe = match inner.opened_at {
            None => false,
            Some(opened_at) => {
                let elapsed = now.saturating_duration_since(opened_at);
                if elapsed < self.config.open_for {
                    return Err(self.config.open_for - elapsed);
                }
                if inner.probe_in_flight {
                    return Err(PROBE_RETRY_AFTER);
                }
                inner.probe_in_flight = true;
                true
            }
        };
        Ok(Permit {
            breaker: self.clone(),
            probe,
            settled: false,
        })
    }

    fn record(&self, probe: bool, outcome: Outcome, now: Instant) {
        let mut inner = self.lock();
        if probe {
            inner.probe_in_flight = false;
        }
        match outcome {
            Outcome::Success => {
                inner.consecutive_failures = 0;
                inner.opened_at = None;
            }
            Outcome::Failure => {
                inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
                if probe || inner.consecutive_failures >= self.config.failure_threshold {
                    inner.opened_at = Some(now);
                }
            }
            Outcome::Inconclusive => {}
        }
    }

    pub fn state(&self) -> BreakerState {
        let inner = self.lock();
        match inner.opened_at {
            None => BreakerState::Closed,
            Some(at) if at.elapsed() < self.config.open_for => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(open_for: Duration) -> Arc<CircuitBreaker> {
        Arc::new(CircuitBreaker::new(BreakerConfig {
            failure_threshold: 3,
            open_for,
        }))
    }

    /// A failed call at `now` (not at the real time the permit settles).
    fn fail_at(b: &Arc<CircuitBreaker>, now: Instant) {
        let mut permit = b.try_acquire_at(now).expect("closed");
        permit.settled = true;
        b.record(permit.probe, Outcome::Failure, now);
    }

    /// As many failures at `now` as open the circuit.
    fn open_at(b: &Arc<CircuitBreaker>, now: Instant) {
        for _ in 0..b.config.failure_threshold {
            fail_at(b, now);
        }
    }

    /// At `at` a probe gets through (not wedged), and its success closes the circuit.
    fn probe_closes(b: &Arc<CircuitBreaker>, at: Instant) {
        let probe = b.try_acquire_at(at).expect("a probe");
        assert!(probe.is_probe());
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(!b.try_acquire_at(at).expect("closed").is_probe());
    }

    #[test]
    fn opens_after_threshold_and_fails_fast() {
        let b = breaker(Duration::from_secs(10));
        let t0 = Instant::now();
        open_at(&b, t0);
        assert_eq!(b.state(), BreakerState::Open);
        let retry_after = b.try_acquire_at(t0 + Duration::from_secs(4)).unwrap_err();
        assert_eq!(retry_after, Duration::from_secs(6));
    }

    #[test]
    fn success_resets_the_failure_count() {
        let b = breaker(Duration::from_secs(10));
        let t0 = Instant::now();
        fail_at(&b, t0);
        fail_at(&b, t0);
        b.try_acquire_at(t0).unwrap().success();
        fail_at(&b, t0);
        fail_at(&b, t0);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_lets_one_probe_through() {
        let b = breaker(Duration::from_secs(10));
        let t0 = Instant::now();
        open_at(&b, t0);
        let later = t0 + Duration::from_secs(11);
        let probe = b.try_acquire_at(later).expect("probe allowed");
        assert!(probe.is_probe());
        assert_eq!(
            b.try_acquire_at(later).unwrap_err(),
            PROBE_RETRY_AFTER,
            "only one probe"
        );
        probe.failure();
        assert!(
            b.try_acquire_at(Instant::now() + Duration::from_secs(1))
                .is_err(),
            "re-opened"
        );
        let much_later = Instant::now() + Duration::from_secs(11);
        probe_closes(&b, much_later);
    }

    #[test]
    fn a_dropped_probe_frees_its_slot_and_counts_as_failed() {
        let b = breaker(Duration::from_millis(1));
        let t0 = Instant::now();
        open_at(&b, t0);
        let probe = b.try_acquire_at(t0 + Duration::from_secs(1)).unwrap();
        drop(probe);
        probe_closes(&b, Instant::now() + Duration::from_secs(1));
    }

    #[test]
    fn inconclusive_outcomes_change_nothing_but_free_the_probe() {
        let b = breaker(Duration::from_millis(1));
        let t0 = Instant::now();
        for _ in 0..10 {
            b.try_acquire_at(t0).unwrap().inconclusive();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        open_at(&b, t0);
        let later = t0 + Duration::from_secs(1);
        b.try_acquire_at(later).unwrap().inconclusive();
        probe_closes(&b, later);
    }

    #[test]
    fn a_late_ordinary_failure_does_not_take_the_probe_slot() {
        let b = breaker(Duration::from_millis(1));
        let t0 = Instant::now();
        let stale = b.try_acquire_at(t0).unwrap();
        open_at(&b, t0);
        let later = t0 + Duration::from_secs(1);
        let probe = b.try_acquire_at(later).unwrap();
        stale.failure();
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    /// Many callers race a half-open breaker at once; whoever holds the probe
    /// is cancelled mid-call. The breaker never stays wedged: a later probe gets
    /// through, and its success closes the circuit for everyone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_callers_and_dropped_probes_never_wedge_it() {
        const CALLERS: usize = 64;
        let open_for = Duration::from_millis(20);
        let b = breaker(open_for);
        open_at(&b, Instant::now());
        for round in 0..5 {
            tokio::time::sleep(open_for).await;
            assert_eq!(b.state(), BreakerState::HalfOpen, "round {round}");
            let start = Arc::new(tokio::sync::Barrier::new(CALLERS));
            let tried = Arc::new(tokio::sync::Barrier::new(CALLERS));
            let callers: Vec<_> = (0..CALLERS)
                .map(|_| {
                    let (b, start, tried) = (b.clone(), start.clone(), tried.clone());
                    tokio::spawn(async move {
                        start.wait().await;
                        let permit = b.try_acquire();
                        tried.wait().await;
                        let Ok(permit) = permit else {
                            return 0;
                        };
                        // The call never finishes: its caller gives up and drops it.
                        let call = async move {
                            std::future::pending::<()>().await;
                            permit.success();
                        };
                        let _ = tokio::time::timeout(Duration::from_millis(1), call).await;
                        1
                    })
                })
                .collect();
            let mut granted = 0;
            for caller in callers {
                granted += caller.await.expect("caller task");
            }
            assert_eq!(granted, 1, "round {round}: exactly one probe at a time");
            assert_ne!(
                b.state(),
                BreakerState::Closed,
                "round {round}: an abandoned probe does not close the circuit"
            );
        }
        tokio::time::sleep(open_for).await;
        // Now racing callers whose calls complete: one probe succeeds, the rest
        // are refused at most until it did.
        let probe = b.try_acquire().expect("a probe after the open period");
        assert!(probe.is_probe());
        let racers: Vec<_> = (0..CALLERS)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move {
                    match b.try_acquire() {
                        Ok(permit) => {
                            tokio::task::yield_now().await;
                            permit.success();
                        }
                        Err(retry_after) => assert_eq!(retry_after, PROBE_RETRY_AFTER),
                    }
                })
            })
            .collect();
        probe.success();
        for racer in racers {
            racer.await.expect("racer task");
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(!b.try_acquire().expect("closed").is_probe());
    }
}
