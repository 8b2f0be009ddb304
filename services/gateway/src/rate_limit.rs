//! Per-client rate limits: a token bucket per client (the user id when the
//! request carries a valid token, else the client's address), kept as a single
//! atomic "theoretical arrival time" (GCRA, equivalent to a token bucket of
//! `burst` tokens refilled at `rate` per second), so a check is one map read
//! and one compare-and-swap, never a lock held across requests.

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use dashmap::DashMap;

/// Whom a limit applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    User(Arc<str>),
    Addr(IpAddr),
}

/// The buckets of every client seen recently.
pub struct RateLimiter {
    /// Nanoseconds between two requests at the sustained rate; 0 = no limit.
    interval_ns: u64,
    /// How far ahead of now a client's arrival time may run: `burst * interval`.
    tolerance_ns: u64,
    started: Instant,
    buckets: DashMap<ClientKey, AtomicU64>,
}

impl RateLimiter {
    /// `per_sec` requests per second on average, `burst` at once; `per_sec == 0` disables limiting.
    pub fn new(per_sec: f64, burst: u32) -> Self {
        let interval_ns = if per_sec > 0.0 {
            ((1e9 / per_sec) as u64).max(1)
        } else {
            0
        };
        Self {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(burst.max(1))),
            started: Instant::now(),
            buckets: DashMap::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.interval_ns > 0
    }

    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Takes one token of `client`'s bucket; `Err(wait)` when it is empty.
    pub fn check(&self, client: &ClientKey) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let now = self.now_ns();
        if let Some(tat) = self.buckets.get(client) {
            return self.take(&tat, now);
        }
        let tat = self
            .buckets
            .entry(client.clone())
            .or_insert_with(|| AtomicU64::new(0))
            .downgrade();
        self.take(&tat, now)
    }

    fn take(&self, tat: &AtomicU64, now: u64) -> Result<(), Duration> {
        let mut current = tat.load(Ordering::Relaxed);
        loop {
            let next = decide(current, now, self.interval_ns, self.tolerance_ns)
                .map_err(Duration::from_nanos)?;
            match tat.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }

    /// Forgets clients whose bucket is full again (they are as if never seen).
    pub fn prune(&self) {
        let now = self.now_ns();
        self.buckets
            .retain(|_, tat| tat.load(Ordering::Relaxed) > now);
    }

    /// Clients with a bucket that is not full.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// GCRA: a request at `now` given the theoretical arrival time `tat` is allowed
/// when the new arrival time stays within `tolerance` of now. Returns the new
/// arrival time, or how long to wait (nanoseconds).
pub fn decide(tat: u64, now: u64, interval: u64, tolerance: u64) -> Result<u64, u64> {
    let next = tat.max(now).saturating_add(interval);
    let ahead = next - now;
    if ahead > tolerance {
        Err(ahead - tolerance)
    } else {
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        // 10 per second (one per 100 ms), burst of 3.
        let (interval, tolerance) = (100 * MS, 300 * MS);
        let mut tat = 0;
        for _ in 0..3 {
            tat = decide(tat, 0, interval, tolerance).expect("burst allowed");
        }
        let wait = decide(tat, 0, interval, tolerance).unwrap_err();
        assert_eq!(wait, 100 * MS, "one token back after 100 ms");
        assert!(decide(tat, 99 * MS, interval, tolerance).is_err());
        tat = decide(tat, 100 * MS, interval, tolerance).expect("refilled");
        assert!(decide(tat, 100 * MS, interval, tolerance).is_err());
        // Idle for long: the bucket is full again, but never more than the burst.
        let later = 10_000 * MS;
        let mut t = tat;
        for _ in 0..3 {
            t = decide(t, later, interval, tolerance).unwrap();
        }
        assert!(decide(t, later, interval, tolerance).is_err());
    }

    #[test]
    fn clients_have_their_own_buckets() {
        let limiter = RateLimiter::new(1.0, 2);
        let ann = ClientKey::User(Arc::from("ann"));
        let addr = ClientKey::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(limiter.check(&ann).is_ok());
        assert!(limiter.check(&ann).is_ok());
        let wait = limiter.check(&ann).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert!(
            limiter.check(&addr).is_ok(),
            "another client is not limited"
        );
        assert_eq!(limiter.tracked(), 2);
    }

    #[test]
    fn zero_rate_means_no_limit() {
        let limiter = RateLimiter::new(0.0, 1);
        let key = ClientKey::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST));
        for _ in 0..1000 {
            assert!(limiter.check(&key).is_ok());
        }
        assert_eq!(limiter.tracked(), 0);
    }
}
