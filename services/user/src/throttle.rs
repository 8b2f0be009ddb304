//! Slowing down repeated login failures for one account, across instances.
//!
//! Attempts are counted per normalized email (known or not, so the answer
//! never tells whether an account exists) in the key-value bucket
//! `user_login_failures`, keyed by the email's hex SHA-256. An attempt is
//! counted as a failure *before* its password is hashed ([`LoginThrottle::admit`],
//! compare-and-set), so a burst of guesses sent at once cannot all pass the
//! check while none has failed yet: at most `max_failures` are ever let
//! through. After that, every attempt is refused with 429 until a lockout has
//! passed since the last one; the lockout doubles with each further failure up
//! to a cap. Attempts refused this way are not checked and not counted. A
//! success clears the count; entries expire on their own `window` after the
//! last attempt.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};
use shop_nats::ServiceError;

/// The key-value bucket holding failure counts.
pub const BUCKET: &str = "user_login_failures";
const CAS_ATTEMPTS: u32 = 10;

/// When failed logins start to be slowed down, and by how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginPolicy {
    /// Failures allowed before a lockout starts.
    pub max_failures: u32,
    /// Lockout after the `max_failures`-th failure; doubles with each one after.
    pub lockout: Duration,
    pub max_lockout: Duration,
    /// Failures older than this (since the last one) are forgotten.
    pub window: Duration,
}

impl Default for LoginPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            lockout: Duration::from_secs(1),
            max_lockout: Duration::from_secs(300),
            window: Duration::from_secs(900),
        }
    }
}

/// Recent failures of one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failures {
    pub count: u32,
    /// Unix milliseconds of the last failure.
    pub last_ms: u64,
}

impl LoginPolicy {
    /// How long attempts are still refused at `now_ms`; `None` when they may proceed.
    pub fn locked_for(&self, failures: Option<&Failures>, now_ms: u64) -> Option<Duration> {
        let failures = self.current(failures, now_ms)?;
        if failures.count < self.max_failures {
            return None;
        }
        let doublings = (failures.count - self.max_failures).min(32);
        let lockout = self
            .lockout
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max_lockout);
        let until = failures.last_ms.saturating_add(millis(lockout));
        (until > now_ms).then(|| Duration::from_millis(until - now_ms))
    }

    /// The count after one more failure at `now_ms`.
    pub fn record_failure(&self, failures: Option<&Failures>, now_ms: u64) -> Failures {
        let count = self.current(failures, now_ms).map_or(0, |f| f.count);
        Failures {
            count: count.saturating_add(1),
            last_ms: now_ms,
        }
    }

    /// `failures` unless they are older than the window.
    fn current<'a>(&self, failures: Option<&'a Failures>, now_ms: u64) -> Option<&'a Failures> {
        failures.filter(|f| now_ms.saturating_sub(f.last_ms) < millis(self.window))
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The message of a refused attempt; it names the wait in whole seconds.
pub fn too_many(wait: Duration) -> ServiceError {
    let secs = wait.as_millis().div_ceil(1000).max(1);
    ServiceError::too_many_requests(format!(
        "too many failed logins for this account; retry after {secs} s"
    ))
}

/// The failure counts in NATS.
#[derive(Clone)]
pub struct LoginThrottle {
    kv: kv::Store,
    policy: LoginPolicy,
}

impl LoginThrottle {
    /// Opens the bucket, creating it if needed; its entries live for the policy's window.
    pub async fn open(
        js: &jetstream::Context,
        policy: LoginPolicy,
        replicas: usize,
    ) -> anyhow::Result<Self> {
        let kv = shop_nats::jetstream::ensure_kv(
            js,
            kv::Config {
                bucket: BUCKET.to_string(),
                description: "user service: recent failed logins per account".to_string(),
                history: 1,
                max_age: policy.window,
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
        Ok(Self { kv, policy })
    }

    /// Lets an attempt through, counted as a failure until it succeeds, or
    /// refuses it with 429 while the account is locked out. The check and the
    /// count are one compare-and-set, so concurrent attempts on any instance
    /// see each other.
    pub async fn admit(&self, key: &str, now_ms: u64) -> Result<(), ServiceError> {
        for _ in 0..CAS_ATTEMPTS {
            let current = self.read(key).await?;
            let failures = current.as_ref().map(|(f, _)| *f);
            if let Some(wait) = self.policy.locked_for(failures.as_ref(), now_ms) {
                return Err(too_many(wait));
            }
            let next = self.policy.record_failure(failures.as_ref(), now_ms);
            let value = serde_json::to_vec(&next)
                .map_err(|e| ServiceError::internal(format!("encoding failure count: {e}")))?;
            let outcome = match current {
                Some((_, revision)) => self
                    .kv
                    .update(key, value.into(), revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        (
                            e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                            e.to_string(),
                        )
                    }),
                None => self
                    .kv
                    .create(key, value.into())
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        (
                            e.kind() == kv::CreateErrorKind::AlreadyExists,
                            e.to_string(),
                        )
                    }),
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err((true, _)) => continue,
                Err((false, e)) => {
                    return Err(ServiceError::unavailable(format!(
                        "counting a login attempt: {e}"
                    )))
                }
            }
        }
        Err(ServiceError::unavailable(
            "too many concurrent logins for this account; retry",
        ))
    }

    /// Clears the count after a successful login (the attempt itself was
    /// counted by [`LoginThrottle::admit`]).
    pub async fn succeeded(&self, key: &str) {
        if let Err(e) = self.kv.delete(key).await {
            tracing::warn!(error = %e, "clearing failed-login count");
        }
    }

    async fn read(&self, key: &str) -> Result<Option<(Failures, u64)>, ServiceError> {
        let entry =
            self.kv.entry(key).await.map_err(|e| {
                ServiceError::unavailable(format!("reading failed-login count: {e}"))
            })?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                match serde_json::from_slice(&entry.value) {
                    Ok(failures) => Ok(Some((failures, entry.revision))),
                    Err(e) => {
                        tracing::warn!(error = %e, "ignoring a corrupt failed-login count");
                        Ok(Some((
                            Failures {
                                count: 0,
                                last_ms: 0,
                            },
                            entry.revision,
                        )))
                    }
                }
            }
            // Deleted: `create` takes over the delete marker.
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LoginPolicy {
        LoginPolicy {
            max_failures: 3,
            lockout: Duration::from_secs(2),
            max_lockout: Duration::from_secs(10),
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn lockout_starts_after_max_failures_and_doubles() {
        let p = policy();
        let mut failures: Option<Failures> = None;
        for i in 0..3 {
            assert_eq!(p.locked_for(failures.as_ref(), 1_000 * i), None);
            failures = Some(p.record_failure(failures.as_ref(), 1_000 * i));
        }
        // Third failure at t=2000: locked for 2 s.
        assert_eq!(
            p.locked_for(failures.as_ref(), 2_000),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            p.locked_for(failures.as_ref(), 3_500),
            Some(Duration::from_millis(500))
        );
        assert_eq!(p.locked_for(failures.as_ref(), 4_000), None);
        // Fourth failure: 4 s; fifth: 8 s; then capped at 10 s.
        failures = Some(p.record_failure(failures.as_ref(), 4_000));
        assert_eq!(
            p.locked_for(failures.as_ref(), 4_000),
            Some(Duration::from_secs(4))
        );
        failures = Some(p.record_failure(failures.as_ref(), 8_000));
        assert_eq!(
            p.locked_for(failures.as_ref(), 8_000),
            Some(Duration::from_secs(8))
        );
        failures = Some(p.record_failure(failures.as_ref(), 16_000));
        assert_eq!(
            p.locked_for(failures.as_ref(), 16_000),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn old_failures_are_forgotten() {
        let p = policy();
        let failures = Failures {
            count: 50,
            last_ms: 0,
        };
        assert_eq!(p.locked_for(Some(&failures), 60_000), None);
        assert_eq!(p.record_failure(Some(&failures), 60_000).count, 1);
        assert_eq!(p.record_failure(Some(&failures), 59_999).count, 51);
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let p = LoginPolicy {
            max_lockout: Duration::MAX,
            ..policy()
        };
        let failures = Failures {
            count: u32::MAX,
            last_ms: 10,
        };
        assert!(p.locked_for(Some(&failures), 10).is_some());
        assert_eq!(p.record_failure(Some(&failures), 10).count, u32::MAX);
    }

    #[test]
    fn refusals_name_the_wait() {
        let err = too_many(Duration::from_millis(1_200));
        assert_eq!(err.code, 429);
        assert!(err.message.contains("retry after 2 s"), "{}", err.message);
        assert!(too_many(Duration::from_millis(1))
            .message
            .contains("retry after 1 s"));
    }
}
