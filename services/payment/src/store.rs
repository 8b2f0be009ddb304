//! Where payment data lands locally: the sled layout and the projection that
//! fills it from the `PAYMENT` stream.
//!
//! | key              | value                                           |
//! |------------------|-------------------------------------------------|
//! | `p/<payment_id>` | format byte + JSON of the payment and its charge attempt |

use shop_actors::{ApplyError, Projection, StoredEvent};
use shop_nats::ServiceError;

use crate::domain::{PaymentEvent, PaymentRecord};

/// Version of the value format; bumped when it changes incompatibly.
pub const FORMAT_VERSION: u8 = 1;

pub fn payment_key(payment_id: &str) -> Vec<u8> {
    format!("p/{payment_id}").into_bytes()
}

/// The payment and its charge attempt as of the last applied event.
pub fn record(tree: &sled::Tree, payment_id: &str) -> Result<Option<PaymentRecord>, ServiceError> {
    let value = tree
        .get(payment_key(payment_id))
        .map_err(|e| ServiceError::internal(format!("reading local store: {e}")))?;
    value
        .map(|v| match v.split_first() {
            Some((&FORMAT_VERSION, body)) => serde_json::from_slice(body).map_err(|e| {
                ServiceError::internal(format!("corrupt stored payment {payment_id}: {e}"))
            }),
            Some((version, _)) => Err(ServiceError::internal(format!(
                "stored payment {payment_id} has unknown format {version}"
            ))),
            None => Err(ServiceError::internal(format!(
                "stored payment {payment_id} is empty"
            ))),
        })
        .transpose()
}

/// Applies `PAYMENT` stream events to the local store.
pub struct PaymentProjection;

impl Projection for PaymentProjection {
    fn apply(&self, event: &StoredEvent<'_>, batch: &mut sled::Batch) -> Result<(), ApplyError> {
        let decoded: PaymentEvent = event.decode()?;
        let mut record = decoded.record();
        event.check_aggregate(&record.payment.payment_id)?;
        record.payment.revision = event.sequence;
        let value = shop_actors::store::encode_versioned(FORMAT_VERSION, &record)
            .map_err(ApplyError::Invalid)?;
        batch.insert(payment_key(&record.payment.payment_id), value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::{decide_outcome, validate_charge, ChargePayment, PaymentStatus},
        provider::{ChargeOutcome, PaymentToken},
    };

    #[test]
    fn projection_stores_the_payment_at_its_revision() {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::open(dir.path())
            .unwrap()
            .open_tree("payment")
            .unwrap();
        let command = validate_charge(
            &ChargePayment {
                order_id: "o1".into(),
                user_id: "u1".into(),
                amount_cents: 500,
                currency: "USD".into(),
                payment_token: PaymentToken::new("tok_ok"),
                idempotency_key: "k".into(),
            },
            "order",
        )
        .unwrap();
        let event = decide_outcome(None, &command.terms(), "a", 1, ChargeOutcome::Approved)
            .unwrap()
            .unwrap();
        let payload = serde_json::to_vec(&event).unwrap();
        assert!(!String::from_utf8_lossy(&payload).contains("tok_ok"));
        let mut batch = sled::Batch::default();
        PaymentProjection
            .apply(
                &StoredEvent {
                    sequence: 7,
                    subject: &format!("events.payment.{}", command.key.payment_id),
                    headers: None,
                    payload: &payload,
                },
                &mut batch,
            )
            .unwrap();
        tree.apply_batch(batch).unwrap();
        let stored = record(&tree, &command.key.payment_id).unwrap().unwrap();
        assert_eq!(stored.payment.revision, 7);
        assert_eq!(stored.payment.status, PaymentStatus::Captured);
        assert_eq!(stored.attempt.owner, "a");
        assert_eq!(record(&tree, "other").unwrap(), None);
    }
}
