//! A circuit breaker: after repeated failures of a downstream service, calls fail
//! fast for a while instead of each waiting for a timeout; then one probe call is
//! let through and its outcome closes or re-opens the circuit.

use std::{
    sync::Mutex,
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

    /// May a call go through now? `Err(retry_after)` when the circuit is open.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        self.try_acquire_at(Instant::now())
    }

    fn try_acquire_at(&self, now: Instant) -> Result<(), Duration> {
        let mut inner = self.lock();
        let Some(opened_at) = inner.opened_at else {
            return Ok(());
        };
        let elapsed = now.saturating_duration_since(opened_at);
        if elapsed < self.config.open_for {
            return Err(self.config.open_for - elapsed);
        }
        if inner.probe_in_flight {
            return Err(Duration::from_millis(100));
        }
        inner.probe_in_flight = true;
        Ok(())
    }

    pub fn record_success(&self) {
        let mut inner = self.lock();
        inner.consecutive_failures = 0;
        inner.opened_at = None;
        inner.probe_in_flight = false;
    }

    pub fn record_failure(&self) {
        self.record_failure_at(Instant::now())
    }

    fn record_failure_at(&self, now: Instant) {
        let mut inner = self.lock();
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        if inner.probe_in_flight || inner.consecutive_failures >= self.config.failure_threshold {
            inner.opened_at = Some(now);
        }
        inner.probe_in_flight = false;
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

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(10),
        })
    }

    #[test]
    fn opens_after_threshold_and_fails_fast() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..2 {
            b.record_failure_at(t0);
            assert!(b.try_acquire_at(t0).is_ok());
        }
        b.record_failure_at(t0);
        assert_eq!(b.state(), BreakerState::Open);
        let retry_after = b.try_acquire_at(t0 + Duration::from_secs(4)).unwrap_err();
        assert_eq!(retry_after, Duration::from_secs(6));
    }

    #[test]
    fn success_resets_the_failure_count() {
        let b = breaker();
        let t0 = Instant::now();
        b.record_failure_at(t0);
        b.record_failure_at(t0);
        b.record_success();
        b.record_failure_at(t0);
        assert!(b.try_acquire_at(t0).is_ok());
    }

    #[test]
    fn half_open_lets_one_probe_through() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record_failure_at(t0);
        }
        let later = t0 + Duration::from_secs(11);
        assert!(b.try_acquire_at(later).is_ok(), "probe allowed");
        assert!(b.try_acquire_at(later).is_err(), "only one probe");
        b.record_failure_at(later);
        assert!(
            b.try_acquire_at(later + Duration::from_secs(1)).is_err(),
            "re-opened"
        );
        let much_later = later + Duration::from_secs(11);
        assert!(b.try_acquire_at(much_later).is_ok());
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.try_acquire_at(much_later).is_ok());
    }
}
