//! `payment.get`: one payment, by its id or by its charge's idempotency key,
//! from the local store.

use shop_actors::{HandlerResult, Request, RequestBody};
use shop_nats::ServiceError;

use super::Payments;
use crate::domain::{self, GetPayment};

impl RequestBody for GetPayment {
    fn validate(&self) -> Result<(), ServiceError> {
        domain::validate_get(self, "").map(|_| ())
    }

    fn min_revision(&self) -> Option<u64> {
        self.min_revision
    }
}

/// Answers with the payment the request names, as this instance has it: to
/// its user or an admin (404 to anyone else).
pub fn get(payments: &Payments, request: &Request, get: GetPayment) -> HandlerResult {
    // The access check has refused every request without a verified user.
    let caller = request
        .caller
        .as_deref()
        .ok_or_else(|| ServiceError::unauthorized("payment.get needs a user's token"))?;
    let payment_id = domain::validate_get(&get, super::caller_scope(request))?;
    let record = payments
        .record(&payment_id)?
        .ok_or_else(|| domain::not_found(&payment_id))?;
    request.encode(&domain::visible_to(caller, record.payment)?)
}
