//! Request ids: the client's `X-Request-Id` when it is sane, else one made
//! here (`<instance>-<counter>`: unique, and cheap to make).

use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderName, HeaderValue};

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Makes request ids for one gateway instance.
pub struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new(instance_id: &str) -> Self {
        Self {
            prefix: instance_id.to_string(),
            next: AtomicU64::new(1),
        }
    }

    /// The id of a request: `incoming` when acceptable, else a new one.
    pub fn for_request(&self, incoming: Option<&HeaderValue>) -> HeaderValue {
        if let Some(value) = incoming.filter(|v| acceptable(v)) {
            return value.clone();
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::try_from(format!("{}-{n:x}", self.prefix))
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-request-id"))
    }
}

/// 1–128 characters of letters, digits, `-`, `_`, `.`, `:`.
pub fn acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        let ids = RequestIds::new("gw1");
        let theirs = HeaderValue::from_static("client-42.a:b_c");
        assert_eq!(ids.for_request(Some(&theirs)), theirs);
        let made = ids.for_request(Some(&HeaderValue::from_static("has space")));
        assert_eq!(made, "gw1-1");
        assert_eq!(ids.for_request(None), "gw1-2");
        let long = HeaderValue::try_from("x".repeat(129)).unwrap();
        assert!(!acceptable(&long));
    }
}
