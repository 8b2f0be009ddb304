//! `payment.refund`: refunds a captured payment, once per idempotency key.
//!
//! The refund's amount is reserved first (`payment.refund_started`), so
//! concurrent refunds never exceed the payment; then the provider is asked,
//! and its answer is recorded (`payment.refunded` / `payment.refund_failed`).
//! A refund the provider did not answer stays pending; a retry with the same
//! key asks again.

use std::sync::Arc;

use shop_actors::{Changed, HandlerResult, Request, RequestBody};
use shop_nats::ServiceError;

use super::{still_pending, Payments};
use crate::{
    domain::{self, PaymentStatus, RefundDecision, RefundPayment, RefundStatus},
    money::Money,
    provider::{self, ProviderError, RefundRequest},
};

impl RequestBody for RefundPayment {
    fn validate(&self) -> Result<(), ServiceError> {
        domain::validate_refund(self).map(|_| ())
    }
}

/// Reserves the refund's amount, asks the provider, records its answer.
pub async fn refund(
    payments: Arc<Payments>,
    request: Request,
    refund: RefundPayment,
) -> HandlerResult {
    let command = domain::validate_refund(&refund)?;
    let deadline = payments.deadline(&request)?;
    let id = command.payment_id.as_str();
    let refund_id = command.refund_id.as_str();
    // A payment this instance does not know as captured may only be behind
    // the stream (charged through another instance a moment ago).
    if payments
        .record(id)?
        .is_none_or(|r| r.payment.status == PaymentStatus::Pending)
    {
        payments.events.catch_up().await?;
    }
    let mut decided = None;
    let changed = payments
        .change_payment(
            &request.trace,
            id,
            Some(format!("payment.refund_started:{refund_id}")),
            |current| {
                let decision = domain::decide_refund(current, &command)?;
                let start = match &decision {
                    RefundDecision::Start(event) => Some((**event).clone()),
                    _ => None,
                };
                let currency = current
                    .map(|r| r.payment.currency.clone())
                    .unwrap_or_default();
                decided = Some((decision, currency));
                Ok(start)
            },
        )
        .await?;
    let (refund, currency) = match decided {
        Some((RefundDecision::Done(_), _)) => {
            return payments.refund_reply(&request, id, refund_id)
        }
        Some((RefundDecision::Start(event), currency)) => match (event.refund, changed) {
            (Some(refund), Changed::Appended { .. } | Changed::Duplicate { .. }) => {
                (refund, currency)
            }
            _ => return Err(ServiceError::internal("refund start recorded nothing")),
        },
        Some((RefundDecision::Resume(refund), currency)) => (refund, currency),
        None => return Err(ServiceError::internal("refund decided nothing")),
    };
    tracing::info!(
        payment_id = id,
        refund_id,
        amount_cents = refund.amount_cents,
        provider = payments.provider.name(),
        "refund started; asking the provider"
    );
    let provider_request = RefundRequest {
        idempotency_key: refund_id.to_string(),
        charge_idempotency_key: id.to_string(),
        amount: Money {
            amount_cents: refund.amount_cents,
            currency,
        },
    };
    let result = provider::with_retries(deadline.provider, || {
        payments
            .provider
            .refund(&provider_request, deadline.provider)
    })
    .await;
    let result = match result {
        Ok(()) => Ok(()),
        Err(ProviderError::Permanent(reason)) => Err(reason),
        Err(error) => {
            tracing::warn!(payment_id = id, refund_id, error = %error, "refund unresolved; it stays pending");
            return Err(still_pending(&error, &format!("refund {refund_id}")));
        }
    };
    let changed = payments
        .change_payment(
            &request.trace,
            id,
            Some(format!("payment.refund_outcome:{refund_id}")),
            |current| domain::decide_refund_outcome(current, id, refund_id, result.clone()),
        )
        .await?;
    if let Changed::Appended { revision, .. } | Changed::Duplicate { revision } = changed {
        tracing::info!(
            payment_id = id,
            refund_id,
            revision,
            refunded = result.is_ok(),
            "refund recorded"
        );
    }
    payments.refund_reply(&request, id, refund_id)
}

impl Payments {
    /// The answer to a refund, from the local state (which has its outcome).
    fn refund_reply(&self, request: &Request, payment_id: &str, refund_id: &str) -> HandlerResult {
        let payment = self
            .record(payment_id)?
            .ok_or_else(|| domain::not_found(payment_id))?
            .payment;
        let refund = payment.refund(refund_id).ok_or_else(|| {
            ServiceError::unavailable(format!(
                "refund {refund_id} is not in this instance's state yet; retry with the same idempotency_key"
            ))
        })?;
        match refund.status {
            RefundStatus::Refunded => request.encode(&domain::refund_reply(&payment, refund)),
            RefundStatus::Failed => Err(ServiceError::conflict(format!(
                "refund {refund_id} refused by the payment provider: {}",
                refund.reason.as_deref().unwrap_or("no reason given")
            ))),
            RefundStatus::Pending => Err(ServiceError::unavailable(format!(
                "refund {refund_id} is pending: retry with the same idempotency_key"
            ))),
        }
    }
}
