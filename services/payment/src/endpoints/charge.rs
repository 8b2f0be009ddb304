//! `payment.charge`: charges a payment token once per idempotency key, however
//! often the request is retried and on whichever instance.
//!
//! A charge runs in three steps, each decided by [`domain`] against the
//! payment as the local state has it:
//! 1. [`charge`] claims the charge attempt: it appends
//!    `payment.charge_started` with expected revision 0 (only one instance
//!    anywhere can), or `payment.charge_resumed` at the payment's revision when
//!    the previous attempt gave up or its lease ran out. Retries that find an
//!    open attempt wait for its outcome instead ([`Payments::wait_for_attempt`]);
//!    retries that find an outcome answer it.
//! 2. the claimant asks the provider ([`Payments::run_charge`]), with the
//!    payment id as the provider's idempotency key and transient failures
//!    retried until the deadline;
//! 3. it appends the outcome (`payment.captured` / `payment.declined`), or
//!    `payment.charge_unresolved` when the provider gave no answer in time.

use std::{sync::Arc, time::Duration};

use shop_actors::{Changed, HandlerResult, Request, RequestBody};
use shop_nats::{clock::now_ms, ServiceError};
use tokio::time::Instant;

use super::{caller_scope, still_pending, Deadline, Payments};
use crate::{
    domain::{self, ChargeCommand, ChargeDecision, ChargePayment, ChargeReply, PaymentStatus},
    provider::{self, ChargeOutcome, ChargeRequest, DeclineReason, ProviderError},
};

/// Longest single wait for the local state before a waiting charge looks again.
const WAIT_SLICE: Duration = Duration::from_millis(200);

impl RequestBody for ChargePayment {
    fn validate(&self) -> Result<(), ServiceError> {
        domain::validate_charge(self, "").map(|_| ())
    }
}

/// Claims the charge attempt, or waits for the one another request holds, or
/// answers the outcome already recorded.
pub async fn charge(
    payments: Arc<Payments>,
    request: Request,
    charge: ChargePayment,
) -> HandlerResult {
    let command = domain::validate_charge(&charge, caller_scope(&request))?;
    let deadline = payments.deadline(&request)?;
    let id = command.payment_id.as_str();
    let lease_ms = payments.settings.lease.as_millis() as u64;
    loop {
        let mut decided = None;
        // No message id: a fresh one, so a duplicate can only be this request's own resend.
        let changed = payments
            .change_payment(&request.trace, id, None, |current| {
                let decision = domain::decide_charge(
                    current,
                    &command,
                    &payments.instance_id,
                    now_ms(),
                    lease_ms,
                )?;
                let claim = match &decision {
                    // Too late to ask the provider: leave the attempt to a retry.
                    ChargeDecision::Claim(_) if Instant::now() >= deadline.provider => {
                        return Err(ServiceError::timeout(format!(
                            "no time left to charge {id} before the deadline; retry with the same idempotency_key"
                        )))
                    }
                    ChargeDecision::Claim(event) => Some(event.clone()),
                    _ => None,
                };
                decided = Some(decision);
                Ok(claim)
            })
            .await?;
        match (decided, changed) {
            (
                Some(ChargeDecision::Claim(event)),
                Changed::Appended { .. } | Changed::Duplicate { .. },
            ) => {
                return payments
                    .run_charge(&request, &command, event.attempt.number, deadline)
                    .await;
            }
            (Some(ChargeDecision::Done(payment)), _) => {
                return request.encode(&ChargeReply::from(&payment))
            }
            (Some(ChargeDecision::Wait { attempt, until_ms }), _) => {
                payments
                    .wait_for_attempt(id, attempt, until_ms, deadline.reply)
                    .await?;
            }
            _ => return Err(ServiceError::internal("charge decided nothing")),
        }
    }
}

impl Payments {
    /// Waits until attempt `attempt` of the charge ends, its lease runs out
    /// (`until_ms`), or the request's deadline passes (then 504).
    pub(super) async fn wait_for_attempt(
        &self,
        payment_id: &str,
        attempt: u32,
        until_ms: u64,
        deadline: Instant,
    ) -> Result<(), ServiceError> {
        tracing::debug!(
            payment_id,
            attempt,
            "another request holds the charge attempt; waiting for its outcome"
        );
        let state = self.state();
        loop {
            let still_open = self.record(payment_id)?.is_some_and(|r| {
                r.payment.status == PaymentStatus::Pending
                    && r.attempt.number == attempt
                    && r.attempt.open
            });
            let now_ms = now_ms();
            if !still_open || now_ms >= until_ms {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ServiceError::timeout(format!(
                    "charge {payment_id} is still being processed (attempt {attempt}) and had no outcome before the deadline; retry with the same idempotency_key"
                )));
            }
            let slice = (deadline - now)
                .min(Duration::from_millis(until_ms - now_ms))
                .min(WAIT_SLICE);
            // Wakes when anything new reaches the local state; then look again.
            let _ = state.wait_for(state.applied() + 1, slice).await;
        }
    }

    /// This instance holds attempt `attempt`: asks the provider and records the answer.
    async fn run_charge(
        &self,
        request: &Request,
        command: &ChargeCommand,
        attempt: u32,
        deadline: Deadline,
    ) -> HandlerResult {
        let id = command.payment_id.as_str();
        tracing::info!(
            payment_id = id,
            order_id = %command.order_id,
            amount_cents = command.amount.amount_cents,
            currency = %command.amount.currency,
            attempt,
            provider = self.provider.name(),
            "charge attempt claimed; asking the provider"
        );
        let provider_request = ChargeRequest {
            idempotency_key: id.to_string(),
            amount: command.amount.clone(),
            token: command.token.clone(),
        };
        let result = provider::with_retries(deadline.provider, || {
            self.provider.charge(&provider_request, deadline.provider)
        })
        .await;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(ProviderError::Permanent(reason)) => {
                tracing::warn!(
                    payment_id = id,
                    reason,
                    "provider refused the charge; recording it as declined"
                );
                ChargeOutcome::Declined(DeclineReason::ProcessingError)
            }
            Err(error) => return Err(self.charge_unresolved(request, id, attempt, &error).await),
        };
        let changed = self
            .change_payment(
                &request.trace,
                id,
                Some(format!("payment.outcome:{id}")),
                |current| domain::decide_charge_outcome(current, id, outcome),
            )
            .await?;
        let payment = match changed.appended() {
            Some((event, revision)) => {
                tracing::info!(
                    payment_id = id,
                    attempt,
                    outcome = event.kind.type_name(),
                    revision,
                    "charge recorded"
                );
                let mut payment = event.payment;
                payment.revision = revision;
                payment
            }
            // Another attempt recorded the outcome first: it is the one that counts.
            None => {
                self.record(id)?
                    .ok_or_else(|| domain::not_found(id))?
                    .payment
            }
        };
        request.encode(&ChargeReply::from(&payment))
    }

    /// The provider gave no answer: closes the attempt so that a retry may
    /// ask again at once, and tells the caller to retry.
    pub(super) async fn charge_unresolved(
        &self,
        request: &Request,
        id: &str,
        attempt: u32,
        error: &ProviderError,
    ) -> ServiceError {
        tracing::warn!(payment_id = id, attempt, error = %error, "charge unresolved; it stays pending");
        let message = error.to_string();
        let closed = self
            .change_payment(&request.trace, id, None, |current| {
                Ok(domain::decide_charge_unresolved(current, attempt, &message))
            })
            .await;
        if let Err(e) = closed {
            tracing::warn!(payment_id = id, attempt, error = %e, "could not close the charge attempt; its lease will");
        }
        still_pending(error, &format!("charge {id}"))
    }
}
