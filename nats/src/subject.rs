//! Subject tokens: ids that become part of a subject (`events.product.<id>`)
//! or a key must be tokens NATS accepts and that sort and read well.

use crate::ServiceError;

/// Checks that `value` (named `field` in the error) is 1-64 characters of
/// letters, digits, `-` or `_`: a valid subject token and store key.
/// Whether `subject` matches the NATS subject `pattern` (`*` one token, `>`
/// one or more trailing tokens).
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for want in pattern.split('.') {
        match (want, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (want, Some(got)) if want == got => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

pub fn validate_token(field: &str, value: &str) -> Result<(), ServiceError> {
    if value.is_empty()
        || value.len() > 64
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ServiceError::bad_request(format!(
            "{field} must be 1-64 characters of letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{matches, validate_token};

    #[test]
    fn wildcards_match_like_nats() {
        assert!(matches("events.user.profile.*", "events.user.profile.u1"));
        assert!(!matches(
            "events.user.profile.*",
            "events.user.profile.u1.x"
        ));
        assert!(!matches("events.user.profile.*", "events.user.profile"));
        assert!(matches("events.>", "events.user.profile.u1"));
        assert!(!matches("events.>", "events"));
        assert!(matches("a.b", "a.b") && !matches("a.b", "a.c") && !matches("a.b", "a.b.c"));
    }

    #[test]
    fn accepts_tokens_and_names_the_field() {
        assert!(validate_token("id", "order-1_A").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(65)] {
            let err = validate_token("product_id", bad).unwrap_err();
            assert_eq!(err.code, 400);
            assert!(err.message.starts_with("product_id must be"), "{bad:?}");
        }
    }
}
