//! `payment.void`: ends a charge's idempotency key without charging, so that
//! a charge still on its way under that key can no longer go through. The
//! order saga voids the key of every order it cancels before recording a
//! capture, instead of charging it only to refund it.
//!
//! Decided by [`domain::decide_void`] against the payment its key names:
//! - no payment yet: append `payment.voided` with expected revision 0. A first
//!   charge claim expects the same revision, so exactly one of them lands;
//! - an outcome already recorded: answer it (the caller refunds a capture);
//! - an attempt in flight: wait for it, as a retried charge does;
//! - an attempt that ended without an outcome (the provider may have charged):
//!   claim an attempt (`payment.void_started`) and ask the provider to void,
//!   then record its answer: `voided`, or the outcome of the charge it made.

use std::sync::Arc;

use shop_actors::{Changed, HandlerResult, Request, RequestBody};
use shop_nats::{clock::now_ms, ServiceError};

use super::{caller_scope, Payments};
use crate::{
    domain::{self, ChargeReply, VoidCommand, VoidDecision, VoidPayment},
    provider::{self, VoidRequest},
};

impl RequestBody for VoidPayment {
    fn validate(&self) -> Result<(), ServiceError> {
        domain::validate_void(self, "").map(|_| ())
    }
}

/// Voids the key, or answers the outcome it already has.
pub async fn void(payments: Arc<Payments>, request: Request, void: VoidPayment) -> HandlerResult {
    let command = domain::validate_void(&void, caller_scope(&request))?;
    let deadline = payments.deadline(&request)?;
    let id = command.payment_id.as_str();
    let lease_ms = payments.settings.lease.as_millis() as u64;
    loop {
        let mut decided = None;
        let changed = payments
            .change_payment(&request.trace, id, None, |current| {
                let decision = domain::decide_void(
                    current,
                    &command,
                    &payments.instance_id,
                    now_ms(),
                    lease_ms,
                )?;
                let append = match &decision {
                    VoidDecision::Fence(event) | VoidDecision::Claim(event) => Some(event.clone()),
                    _ => None,
                };
                decided = Some(decision);
                Ok(append)
            })
            .await?;
        match (decided, changed) {
            (Some(VoidDecision::Fence(event)), Changed::Appended { revision, .. }) => {
                tracing::info!(payment_id = id, order_id = %command.order_id, revision, "charge key voided");
                let mut payment = event.payment;
                payment.revision = revision;
                return request.encode(&ChargeReply::from(&payment));
            }
            (
                Some(VoidDecision::Claim(event)),
                Changed::Appended { .. } | Changed::Duplicate { .. },
            ) => {
                return payments
                    .run_void(&request, &command, event.attempt.number, deadline.provider)
                    .await;
            }
            (Some(VoidDecision::Done(payment)), _) => {
                return request.encode(&ChargeReply::from(&payment))
            }
            (Some(VoidDecision::Wait { attempt, until_ms }), _) => {
                payments
                    .wait_for_attempt(id, attempt, until_ms, deadline.reply)
                    .await?;
            }
            _ => return Err(ServiceError::internal("void decided nothing")),
        }
    }
}

impl Payments {
    /// This instance holds attempt `attempt`: asks the provider to void and
    /// records its answer.
    async fn run_void(
        &self,
        request: &Request,
        command: &VoidCommand,
        attempt: u32,
        deadline: tokio::time::Instant,
    ) -> HandlerResult {
        let id = command.payment_id.as_str();
        tracing::info!(payment_id = id, order_id = %command.order_id, attempt, "void attempt claimed; asking the provider");
        let provider_request = VoidRequest {
            idempotency_key: id.to_string(),
            amount: command.amount.clone(),
        };
        let outcome = match provider::with_retries(deadline, || {
            self.provider.void(&provider_request, deadline)
        })
        .await
        {
            Ok(outcome) => outcome,
            Err(error) => return Err(self.charge_unresolved(request, id, attempt, &error).await),
        };
        let changed = self
            .change_payment(
                &request.trace,
                id,
                Some(format!("payment.outcome:{id}")),
                |current| domain::decide_void_outcome(current, id, outcome),
            )
            .await?;
        let payment = match changed.appended() {
            Some((event, revision)) => {
                tracing::info!(
                    payment_id = id,
                    attempt,
                    outcome = event.kind.type_name(),
                    revision,
                    "void recorded"
                );
                let mut payment = event.payment;
                payment.revision = revision;
                payment
            }
            None => {
                self.record(id)?
                    .ok_or_else(|| domain::not_found(id))?
                    .payment
            }
        };
        request.encode(&ChargeReply::from(&payment))
    }
}
