//! The payment provider behind an adapter: the anti-corruption layer between
//! this service and a card processor. Everything that crosses it is a domain
//! type ([`Money`], [`PaymentToken`], [`DeclineReason`]); a processor's own
//! types stay inside its implementation.
//!
//! A real processor plugs in as one more [`PaymentProvider`] implementation
//! (its HTTP client, credentials and error mapping inside), selected with
//! `PAYMENT_PROVIDER`. Implementations must deduplicate by the request's
//! `idempotency_key`, as real processors do, and serialize the requests of
//! one key: the service records a payment only once the provider has
//! answered its key, and relies on every request of a key (retries, requests
//! on other instances, a void) getting the same final answer.

use std::{fmt, time::Duration};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::money::Money;

/// A reference to a card held by the processor. Its value is never logged,
/// stored or put in an event: `Debug` prints a placeholder. (`Serialize` is
/// for callers building a charge request.)
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct PaymentToken(String);

impl PaymentToken {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the provider implementation only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PaymentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PaymentToken(<redacted>)")
    }
}

/// Why a processor declined a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineReason {
    /// The issuer refused without a more specific reason.
    CardDeclined,
    InsufficientFunds,
    /// The token names no usable card.
    InvalidToken,
    /// The processor refused the request itself (it will not succeed on retry).
    ProcessingError,
}

/// One charge as the processor sees it.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    /// The processor deduplicates on this: the same key never charges twice.
    pub idempotency_key: String,
    pub amount: Money,
    pub token: PaymentToken,
}

/// One refund of a charge made with `charge_idempotency_key`.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    /// The processor deduplicates on this: the same key never refunds twice.
    pub idempotency_key: String,
    pub charge_idempotency_key: String,
    pub amount: Money,
}

/// A void of the charge `idempotency_key` names: whatever comes later, that
/// key must never charge. (A processor's cancel of a payment intent.)
#[derive(Debug, Clone)]
pub struct VoidRequest {
    pub idempotency_key: String,
    pub amount: Money,
}

/// The processor's answer for a key: what a charge or a void with it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeOutcome {
    Approved,
    Declined(DeclineReason),
    /// The key was voided before anything was charged under it.
    Voided,
}

/// A call that produced no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Failed before doing anything; the same request may succeed later.
    #[error("payment provider failed transiently: {0}")]
    Transient(String),
    /// No answer before the deadline: the request may or may not have been processed.
    #[error("payment provider did not answer before the deadline")]
    Timeout,
    /// Refused for good; repeating the request cannot help.
    #[error("payment provider refused the request: {0}")]
    Permanent(String),
}

/// A card processor. Calls must not outlive `deadline`: the caller stops
/// waiting then, and treats the call as [`ProviderError::Timeout`].
pub trait PaymentProvider: Send + Sync + 'static {
    /// Name for logs and `/health`, e.g. `local`.
    fn name(&self) -> &'static str;

    fn charge<'a>(
        &'a self,
        request: &'a ChargeRequest,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<ChargeOutcome, ProviderError>>;

    fn refund<'a>(
        &'a self,
        request: &'a RefundRequest,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// Ends the key: a charge already answered under it keeps its outcome
    /// (returned), otherwise the key is voided and every later charge with it
    /// answers [`ChargeOutcome::Voided`].
    fn void<'a>(
        &'a self,
        request: &'a VoidRequest,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<ChargeOutcome, ProviderError>>;
}

/// First pause between attempts after a transient failure; doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// Calls `attempt` until it answers, fails for good, or `deadline` passes;
/// transient failures are retried with exponential backoff while time remains.
pub async fn with_retries<'a, T, F>(deadline: Instant, mut attempt: F) -> Result<T, ProviderError>
where
    F: FnMut() -> BoxFuture<'a, Result<T, ProviderError>>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        let result = match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(result) => result,
            Err(_) => return Err(ProviderError::Timeout),
        };
        match result {
            Err(ProviderError::Transient(reason)) => {
                if Instant::now() + backoff >= deadline {
                    return Err(ProviderError::Transient(reason));
                }
                tracing::debug!(
                    reason,
                    backoff_ms = backoff.as_millis() as u64,
                    "provider failed transiently; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use futures::FutureExt;

    use super::*;

    #[test]
    fn tokens_never_print() {
        let request = ChargeRequest {
            idempotency_key: "k".into(),
            amount: Money::new(100, "USD").unwrap(),
            token: PaymentToken::new("tok_secret_value"),
        };
        assert!(!format!("{request:?}").contains("tok_secret_value"));
    }

    #[tokio::test]
    async fn retries_transient_failures_until_success() {
        let calls = AtomicU32::new(0);
        let deadline = Instant::now() + Duration::from_secs(2);
        let result = with_retries(deadline, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(ProviderError::Transient("flaky".into()))
                } else {
                    Ok(n)
                }
            }
            .boxed()
        })
        .await;
        assert_eq!(result, Ok(2));
    }

    #[tokio::test]
    async fn stops_at_the_deadline() {
        let deadline = Instant::now() + Duration::from_millis(120);
        let slow = with_retries(deadline, || {
            async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            }
            .boxed()
        })
        .await;
        assert_eq!(slow, Err(ProviderError::Timeout));
        let started = Instant::now();
        let deadline = started + Duration::from_millis(120);
        let failing: Result<(), _> = with_retries(deadline, || {
            async { Err(ProviderError::Transient("down".into())) }.boxed()
        })
        .await;
        assert_eq!(failing, Err(ProviderError::Transient("down".into())));
        assert!(started.elapsed() < Duration::from_millis(200));
        let permanent: Result<(), _> = with_retries(deadline, || {
            async { Err(ProviderError::Permanent("no".into())) }.boxed()
        })
        .await;
        assert_eq!(permanent, Err(ProviderError::Permanent("no".into())));
    }
}
