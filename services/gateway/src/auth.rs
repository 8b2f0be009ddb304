//! Bearer tokens, verified at the gateway with the user service's published
//! keys (`user.keys`) through the shared [`TokenVerifier`]: fetched at start,
//! again every `GATEWAY_JWKS_REFRESH_SECS`, and at once when a token names an
//! unknown key id (single-flight, at most once a second, so forged key ids
//! cannot hammer the user service; such a request waits for its turn rather
//! than missing a rotation). A verified token is remembered (by its hash)
//! until it expires, so a client's next request costs a map read instead of a
//! signature check. The token itself goes downstream as received, in the
//! NATS `Authorization` header: each service verifies it again.

use std::{sync::Arc, time::Duration};

use axum::http::{header, HeaderMap};
use bytes::Bytes;
use futures::FutureExt;
use shop_nats::{
    auth::{self, Jwks, TokenError},
    verifier::{TokenVerifier, VerifyError},
    ServiceError, TraceContext,
};

use crate::{context::Identity, downstream::Downstream, error::ApiError, metrics::GatewayMetrics};

/// Verifies bearer tokens.
pub struct Authenticator {
    verifier: TokenVerifier,
    metrics: Arc<GatewayMetrics>,
}

pub use shop_nats::auth::Bearer;

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Bearer<'_> {
    match headers.get(header::AUTHORIZATION).map(|v| v.to_str()) {
        None => Bearer::None,
        Some(Err(_)) => Bearer::Invalid("Authorization header is not text"),
        Some(Ok(value)) => auth::bearer(Some(value)),
    }
}

impl Authenticator {
    pub fn new(downstream: Arc<Downstream>, metrics: Arc<GatewayMetrics>) -> Self {
        let verifier = TokenVerifier::new(Arc::new(move || {
            let downstream = downstream.clone();
            async move {
                let reply = downstream
                    .call(
                        "user.keys",
                        Bytes::from_static(b"{}"),
                        &TraceContext::new_root(),
                        None,
                    )
                    .await
                    .map_err(|e| ServiceError::new(e.status.as_u16(), e.message))?;
                serde_json::from_slice::<Jwks>(&reply).map_err(|e| {
                    ServiceError::unavailable(format!(
                        "user.keys answered something unreadable: {e}"
                    ))
                })
            }
            .boxed()
        }));
        Self { verifier, metrics }
    }

    /// Key ids currently known (for `/health`).
    pub fn key_ids(&self) -> Vec<String> {
        self.verifier.key_ids()
    }

    /// The identity `token` proves, or 401 (503 when the keys cannot be had).
    pub async fn authenticate(&self, token: &str) -> Result<Identity, ApiError> {
        let verified = match self.verifier.check(token) {
            Err(TokenError::UnknownKey) => self.verifier.verify(token).await,
            checked => checked.map_err(VerifyError::from),
        };
        match verified {
            Ok(verified) => Ok(Identity::new(verified.caller, token, verified.exp)),
            Err(VerifyError::Token(error)) => {
                self.count_refusal(error.reason());
                Err(ApiError::unauthorized(error.to_string()))
            }
            Err(unavailable @ VerifyError::Unavailable(_)) => Err(ApiError::unavailable(
                unavailable.to_string(),
                Duration::from_secs(1),
            )),
        }
    }

    /// Counts a 401 (`reason` as in `shop_gateway_auth_failures_total`).
    pub fn count_refusal(&self, reason: &str) {
        self.metrics
            .auth_failures
            .with_label_values(&[reason])
            .inc();
    }

    /// Fetches the keys again (at start and periodically).
    pub async fn refresh(&self) -> Result<(), ApiError> {
        self.verifier
            .refresh()
            .await
            .map(drop)
            .map_err(|e| ApiError::unavailable(e.message, Duration::from_secs(1)))
    }

    /// Forgets verified tokens that have expired.
    pub fn prune(&self) {
        self.verifier.prune();
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn reads_bearer_tokens() {
        assert!(matches!(bearer(&HeaderMap::new()), Bearer::None));
        assert!(matches!(
            bearer(&headers("Bearer abc.def.ghi")),
            Bearer::Token("abc.def.ghi")
        ));
        assert!(matches!(
            bearer(&headers("bearer  abc")),
            Bearer::Token("abc")
        ));
        assert!(matches!(
            bearer(&headers("Basic dXNlcjpwdw==")),
            Bearer::Invalid(_)
        ));
        assert!(matches!(bearer(&headers("Bearer ")), Bearer::Invalid(_)));
        assert!(matches!(bearer(&headers("abc")), Bearer::Invalid(_)));
    }
}
