//! Money as the payment service handles it: an integer amount in minor units
//! of an ISO 4217 currency. Amounts of different currencies never mix.
//!
//! The currency list and check are the product service's (`services/product/src/domain.rs`);
//! both belong in a shared crate.

use serde::{Deserialize, Serialize};
use shop_nats::ServiceError;

/// Largest amount a single charge or refund may move, in minor units.
pub const MAX_AMOUNT_CENTS: i64 = 100_000_000_000;

/// ISO 4217 codes of currencies in use.
const ISO_4217: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG";

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

/// Upper-cases and checks an ISO 4217 currency code. The message does not
/// repeat the value: a misplaced secret must not end up in a log line.
pub fn validate_currency(currency: &str) -> Result<String, ServiceError> {
    let code = currency.trim().to_ascii_uppercase();
    if code.len() == 3 && ISO_4217.split(' ').any(|c| c == code) {
        Ok(code)
    } else {
        Err(ServiceError::bad_request(
            "currency must be an ISO 4217 code such as USD or EUR",
        ))
    }
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
