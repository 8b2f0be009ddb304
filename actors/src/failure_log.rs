//! Failed requests in the log without a log storm: at most one line per
//! endpoint, status code and window, carrying how many of the same failures
//! were left out before it.
//!
//! An overloaded instance refuses hundreds of requests a second (503), and an
//! outage fails every request the same way. A warning for each would be
//! thousands of identical lines, each also published to the `LOGS` stream,
//! where with `sync_interval: always` it costs an fsync the load it reports
//! needs. Every failure is still counted exactly, in
//! `shop_request_errors_total` and `$SRV.STATS`.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// How often one endpoint logs failures of one status code at most.
pub const FAILURE_LOG_WINDOW: Duration = Duration::from_secs(1);

/// Which failures of one endpoint get a log line.
#[derive(Debug)]
pub struct FailureLog {
    window: Duration,
    by_code: Mutex<HashMap<u16, Window>>,
}

#[derive(Debug)]
struct Window {
    logged_at: Instant,
    left_out: u64,
}

impl Default for FailureLog {
    fn default() -> Self {
        Self::new(FAILURE_LOG_WINDOW)
    }
}

impl FailureLog {
    /// At most one line per status code every `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            by_code: Mutex::new(HashMap::new()),
        }
    }

    /// A failure with status `code` at `now`: `Some(n)` when it gets a line,
    /// `n` being the failures with that code left out since the last line;
    /// `None` when it is left out (counted for the next line).
    pub fn admit(&self, code: u16, now: Instant) -> Option<u64> {
        // A poisoned lock only means another thread panicked while counting:
        // logging every failure is then the safe side.
        let Ok(mut by_code) = self.by_code.lock() else {
            return Some(0);
        };
        match by_code.get_mut(&code) {
            Some(window) if now.saturating_duration_since(window.logged_at) < self.window => {
                window.left_out += 1;
                None
            }
            Some(window) => {
                let left_out = std::mem::take(&mut window.left_out);
                window.logged_at = now;
                Some(left_out)
            }
            None => {
                let window = Window {
                    logged_at: now,
                    left_out: 0,
                };
                by_code.insert(code, window);
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;

    #[test]
    fn one_line_per_code_and_window_with_what_was_left_out() {
        let log = FailureLog::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(
            log.admit(503, at(0)),
            Some(0),
            "the first failure is logged"
        );
        assert_eq!(log.admit(503, at(10)), None);
        assert_eq!(log.admit(503, at(999)), None);
        assert_eq!(
            log.admit(500, at(500)),
            Some(0),
            "another code has its own window"
        );
        assert_eq!(
            log.admit(503, at(1000)),
            Some(2),
            "a new window says what it left out"
        );
        assert_eq!(log.admit(503, at(1500)), None);
        assert_eq!(log.admit(503, at(5000)), Some(1));
        assert_eq!(log.admit(503, at(7000)), Some(0), "nothing left out since");
        assert_eq!(log.admit(500, at(600)), None, "500 still in its window");
    }

    #[test]
    fn racing_failures_get_one_line_and_every_other_one_is_counted() {
        let log = Arc::new(FailureLog::new(Duration::from_secs(3600)));
        let now = Instant::now();
        let threads = 8;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (log, barrier) = (log.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..100).filter(|_| log.admit(503, now).is_some()).count()
                })
            })
            .collect();
        let logged: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(logged, 1, "one line for the whole window");
        let later = now + Duration::from_secs(3600);
        assert_eq!(
            log.admit(503, later),
            Some(799),
            "the other 799 are reported"
        );
    }
}
