//! `payment.charge`: charges a payment token once per idempotency key, however
//! often the request is retried and on whichever instance.
//!
//! 1. [`domain::decide_key`] against the payment as the local state has it:
//!    an outcome recorded for the key is answered at once;
//! 2. otherwise the provider is asked, with the payment id as its idempotency
//!    key and transient failures retried until the deadline. The provider
//!    deduplicates by key and serializes the requests of one key, so a retry,
//!    a request on another instance or a void (`payment.void`) all get the
//!    key's one outcome;
//! 3. the answer is recorded ([`Payments::record_outcome`]): `payment.captured`,
//!    `payment.declined` or `payment.voided`, expecting the payment not to
//!    exist yet. When another request recorded first, its record (the same
//!    outcome) is answered.
//!
//! Nothing is recorded before the provider answers: a charge that got no
//! answer (504/503) leaves no payment, and its retry asks the provider again,
//! which answers what it did.

use std::sync::Arc;

use shop_actors::{HandlerResult, Request, RequestBody};
use shop_nats::ServiceError;

use super::{caller_scope, provider_refused, still_pending, Payments};
use crate::{
    domain::{self, ChargePayment, ChargeReply, KeyDecision},
    provider::{self, ChargeRequest},
};

impl RequestBody for ChargePayment {
    fn validate(&self) -> Result<(), ServiceError> {
        domain::validate_charge(self, "").map(|_| ())
    }
}

/// Answers the key's recorded outcome, or asks the provider and records its answer.
pub async fn charge(
    payments: Arc<Payments>,
    request: Request,
    charge: ChargePayment,
) -> HandlerResult {
    let command = domain::validate_charge(&charge, caller_scope(&request))?;
    let deadline = payments.deadline(&request)?;
    let id = command.key.payment_id.as_str();
    let current = payments.record(id)?;
    if let KeyDecision::Done(payment) = domain::decide_key(current.as_ref(), &command.terms())? {
        return request.encode(&ChargeReply::from(&payment));
    }
    tracing::info!(
        payment_id = id,
        order_id = %command.key.order_id,
        amount_cents = command.key.amount.amount_cents,
        currency = %command.key.amount.currency,
        provider = payments.provider.name(),
        "asking the provider to charge"
    );
    let provider_request = ChargeRequest {
        idempotency_key: id.to_string(),
        amount: command.key.amount.clone(),
        token: command.token.clone(),
    };
    let outcome = provider::with_retries(deadline.provider, || {
        payments.provider.charge(&provider_request, deadline.provider)
    })
    .await
    .map_err(|error| match provider_refused(&error) {
        Some(refused) => refused(&format!("charge {id}")),
        None => {
            tracing::warn!(payment_id = id, error = %error, "charge unresolved: the provider gave no answer; nothing recorded");
            still_pending(&error, &format!("charge {id}"))
        }
    })?;
    payments
        .record_outcome(&request, &command.terms(), outcome)
        .await
}
