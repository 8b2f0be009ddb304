//! Replies go only to inboxes: a request whose reply subject is not under the
//! client inbox prefix (`REPLY_PREFIX`, `_INBOX.` by default; per-identity
//! prefixes `_INBOX.<identity>.` are under it) gets no answer. Otherwise anyone
//! could make a service publish its reply on another service's event subject
//! (a product JSON landing in the `USER` stream). Refusals are counted
//! (`shop_replies_refused_total{source}`) and logged at most every
//! [`LOG_EVERY`], with how many were not logged.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use prometheus::IntCounterVec;

/// The inbox prefix NATS clients use unless told otherwise.
pub const DEFAULT_REPLY_PREFIX: &str = "_INBOX.";
/// Shortest time between two log lines about refused reply subjects.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Longest reply subject written into a log line.
const MAX_LOGGED_LEN: usize = 128;

/// Decides whether a reply subject may be answered.
pub struct ReplyGuard {
    prefix: String,
    refused: IntCounterVec,
    last_log: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

impl ReplyGuard {
    /// Allows replies under `prefix`; counts refusals in `refused`.
    pub fn new(prefix: &str, refused: IntCounterVec) -> Self {
        Self {
            prefix: prefix.to_string(),
            refused,
            last_log: Mutex::new(None),
            unlogged: AtomicU64::new(0),
        }
    }

    /// The prefix replies must be under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether a request to `subject` may be answered on `reply_to`; a
    /// refusal from `source` (`endpoint`, `srv`) is counted and logged.
    pub fn allows(&self, reply_to: &str, subject: &str, source: &'static str) -> bool {
        if under_prefix(reply_to, &self.prefix) {
            return true;
        }
        self.refused.with_label_values(&[source]).inc();
        let due = {
            let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|at| at.elapsed() >= LOG_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            let unlogged = self.unlogged.swap(0, Ordering::Relaxed);
            let shown: String = reply_to.chars().take(MAX_LOGGED_LEN).collect();
            tracing::warn!(
                subject,
                reply_to = %shown,
                prefix = %self.prefix,
                unlogged,
                "request not answered: its reply subject is outside the inbox prefix"
            );
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
        }
        false
    }
}

/// Whether `reply_to` is a subject under `prefix` (with at least one token after it).
pub fn under_prefix(reply_to: &str, prefix: &str) -> bool {
    reply_to
        .strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use prometheus::Opts;

    use super::*;

    #[test]
    fn only_inbox_subjects_are_answered() {
        assert!(under_prefix("_INBOX.abc.def", "_INBOX."));
        assert!(under_prefix("_INBOX.order.x1", "_INBOX."));
        assert!(!under_prefix("events.user.credential.u1", "_INBOX."));
        assert!(!under_prefix("_INBOX.", "_INBOX."));
        assert!(!under_prefix("_INBOXX.a", "_INBOX."));
        assert!(!under_prefix("_inbox.a", "_INBOX."));
        assert!(under_prefix("_INBOX.gateway.a", "_INBOX.gateway."));
        assert!(!under_prefix("_INBOX.order.a", "_INBOX.gateway."));
    }

    #[test]
    fn refusals_are_counted() {
        let counter = IntCounterVec::new(Opts::new("refused", "test"), &["source"]).unwrap();
        let guard = ReplyGuard::new("_INBOX.", counter.clone());
        assert!(guard.allows("_INBOX.x", "product.get", "endpoint"));
        for _ in 0..3 {
            assert!(!guard.allows("events.user.registered.x", "product.get", "endpoint"));
        }
        assert!(!guard.allows("elsewhere", "$SRV.PING", "srv"));
        assert_eq!(counter.with_label_values(&["endpoint"]).get(), 3);
        assert_eq!(counter.with_label_values(&["srv"]).get(), 1);
        assert_eq!(
            guard.unlogged.load(Ordering::Relaxed),
            3,
            "one line, three held back"
        );
    }
}
