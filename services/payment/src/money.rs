//! Money as the payment service handles it: an integer amount in minor units
//! of an ISO 4217 currency. Amounts of different currencies never mix.

use serde::{Deserialize, Serialize};
pub use shop_nats::money::validate_currency;
use shop_nats::ServiceError;

/// Largest amount a single charge or refund may move, in minor units.
pub const MAX_AMOUNT_CENTS: i64 = 100_000_000_000;

/// An amount of one currency; `amount_cents` is always 1..=[`MAX_AMOUNT_CENTS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub amount_cents: i64,
    /// ISO 4217 code, upper case.
    pub currency: String,
}

impl Money {
    /// Checks both parts; the currency is upper-cased.
    pub fn new(amount_cents: i64, currency: &str) -> Result<Self, ServiceError> {
        Ok(Self {
            amount_cents: validate_amount("amount_cents", amount_cents)?,
            currency: validate_currency(currency)?,
        })
    }
}

/// An amount in minor units: an integer from 1 to [`MAX_AMOUNT_CENTS`].
pub fn validate_amount(field: &str, amount_cents: i64) -> Result<i64, ServiceError> {
    if amount_cents <= 0 || amount_cents > MAX_AMOUNT_CENTS {
        return Err(ServiceError::bad_request(format!(
            "{field} must be an integer from 1 to {MAX_AMOUNT_CENTS}, got {amount_cents}"
        )));
    }
    Ok(amount_cents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_checks() {
        assert_eq!(
            Money::new(250, " eur ").unwrap(),
            Money {
                amount_cents: 250,
                currency: "EUR".into()
            }
        );
        for (amount, currency, needle) in [
            (0, "USD", "amount_cents"),
            (-1, "USD", "amount_cents"),
            (MAX_AMOUNT_CENTS + 1, "USD", "amount_cents"),
            (1, "US", "currency"),
            (1, "ABC", "currency"),
            (1, "", "currency"),
        ] {
            let err = Money::new(amount, currency).unwrap_err();
            assert_eq!(err.code, 400);
            assert!(err.message.contains(needle), "{}", err.message);
        }
        assert!(Money::new(MAX_AMOUNT_CENTS, "JPY").is_ok());
    }
}
