//! Money on the wire: integer amounts in minor units of an ISO 4217 currency.
//! Every service that takes or shows an amount checks currencies the same way.

use crate::ServiceError;

/// ISO 4217 codes of currencies in use.
const ISO_4217: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG";

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

/// Decimal places of a currency's minor unit (ISO 4217): 0 for JPY, 3 for
/// KWD, 2 for most.
pub fn minor_digits(currency: &str) -> u32 {
    const ZERO: &[&str] = &[
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
        "VUV", "XAF", "XOF", "XPF",
    ];
    const THREE: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
    if ZERO.contains(&currency) {
        0
    } else if THREE.contains(&currency) {
        3
    } else {
        2
    }
}

/// Minor units as a decimal amount with its code, e.g. `12.50 USD`, `500 JPY`.
pub fn format_minor(minor: i64, currency: &str) -> String {
    let digits = minor_digits(currency);
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    if digits == 0 {
        return format!("{sign}{abs} {currency}");
    }
    let scale = 10u64.pow(digits);
    format!(
        "{sign}{}.{:0width$} {currency}",
        abs / scale,
        abs % scale,
        width = digits as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_are_normalised_and_unknown_ones_refused() {
        assert_eq!(validate_currency(" eur ").unwrap(), "EUR");
        for bad in ["", "US", "ABC", "USDX", "€"] {
            let err = validate_currency(bad).unwrap_err();
            assert_eq!(err.code, 400);
            assert!(err.message.contains("ISO 4217"), "{}", err.message);
        }
    }

    #[test]
    fn amounts_format_with_the_currency_minor_unit() {
        assert_eq!(format_minor(1250, "USD"), "12.50 USD");
        assert_eq!(format_minor(-5, "EUR"), "-0.05 EUR");
        assert_eq!(format_minor(500, "JPY"), "500 JPY");
        assert_eq!(format_minor(1234, "KWD"), "1.234 KWD");
    }
}
