//! `payment.void`: ends a charge's idempotency key without charging, so that
//! a charge still on its way under that key can no longer go through. The
//! order saga voids the key of every order it cancels before recording a
//! capture, instead of charging it only to refund it.
//!
//! Like a charge ([`super::charge`]): an outcome recorded for the key is
//! answered at once; otherwise the provider is asked to void the key. It
//! answers the outcome of a charge it already made under the key
//! (`captured`: the caller refunds it; `declined`), or voids the key and
//! answers `voided`, after which every charge with the key answers `voided`.
//! The answer is recorded as the payment's outcome.

use std::sync::Arc;

use shop_actors::{HandlerResult, Request, RequestBody};
use shop_nats::ServiceError;

use super::{caller_scope, provider_refused, still_pending, Payments};
use crate::{
    domain::{self, ChargeReply, KeyDecision, VoidPayment},
    provider::{self, VoidRequest},
};

impl RequestBody for VoidPayment {
    fn validate(&self) -> Result<(), ServiceError> {
        domain::validate_void(self, "").map(|_| ())
    }
}

/// Answers the key's recorded outcome, or asks the provider to void the key
/// and records its answer.
pub async fn void(payments: Arc<Payments>, request: Request, void: VoidPayment) -> HandlerResult {
    let command = domain::validate_void(&void, caller_scope(&request))?;
    let deadline = payments.deadline(&request)?;
    let id = command.payment_id.as_str();
    let current = payments.record(id)?;
    if let KeyDecision::Done(payment) = domain::decide_key(current.as_ref(), &command.terms())? {
        return request.encode(&ChargeReply::from(&payment));
    }
    tracing::info!(payment_id = id, order_id = %command.order_id, provider = payments.provider.name(), "asking the provider to void");
    let provider_request = VoidRequest {
        idempotency_key: id.to_string(),
        amount: command.amount.clone(),
    };
    let outcome = provider::with_retries(deadline.provider, || {
        payments.provider.void(&provider_request, deadline.provider)
    })
    .await
    .map_err(|error| match provider_refused(&error) {
        Some(refused) => refused(&format!("void of {id}")),
        None => still_pending(&error, &format!("void of {id}")),
    })?;
    payments
        .record_outcome(&request, &command.terms(), outcome)
        .await
}
