//! Bearer tokens, verified at the gateway with the user service's published
//! keys (`user.keys`): fetched at start, cached, fetched again every
//! `GATEWAY_JWKS_REFRESH_SECS` and at once when a token names an unknown key id
//! (at most once a second, so forged key ids cannot hammer the user service;
//! such a request waits for its turn rather than missing a rotation).
//! A verified token is remembered until it expires, so a client's next request
//! costs a map read instead of a signature check.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::{Duration, Instant},
};

use axum::http::{header, HeaderMap};
use bytes::Bytes;
use dashmap::DashMap;
use shop_nats::{
    auth::{verify, Caller, Jwks, TokenError},
    TraceContext,
};

use crate::{context::Identity, downstream::Downstream, error::ApiError, metrics::GatewayMetrics};

/// Shortest time between two fetches of the keys prompted by unknown key ids.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Verified tokens remembered at most; beyond, the memory is cleared.
const MAX_REMEMBERED: usize = 10_000;

/// Verifies bearer tokens.
pub struct Authenticator {
    keys: RwLock<Arc<Jwks>>,
    verified: DashMap<Box<str>, Arc<Identity>>,
    /// When the keys were last fetched; held while fetching.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    /// Fetches started so far.
    fetches: AtomicU64,
    downstream: Arc<Downstream>,
    metrics: Arc<GatewayMetrics>,
}

/// What the `Authorization` header holds.
pub enum Bearer<'a> {
    None,
    Token(&'a str),
    Invalid(&'static str),
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Bearer<'_> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Bearer::None;
    };
    let Ok(value) = value.to_str() else {
        return Bearer::Invalid("Authorization header is not text");
    };
    match value.trim().split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            if token.is_empty() {
                Bearer::Invalid("empty bearer token")
            } else {
                Bearer::Token(token)
            }
        }
        _ => Bearer::Invalid("Authorization must be \"Bearer <token>\""),
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Authenticator {
    pub fn new(downstream: Arc<Downstream>, metrics: Arc<GatewayMetrics>) -> Self {
        Self {
            keys: RwLock::new(Arc::new(Jwks::default())),
            verified: DashMap::new(),
            last_fetch: tokio::sync::Mutex::new(None),
            fetches: AtomicU64::new(0),
            downstream,
            metrics,
        }
    }

    fn keys(&self) -> Arc<Jwks> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Key ids currently known (for `/health`).
    pub fn key_ids(&self) -> Vec<String> {
        self.keys().keys.iter().map(|k| k.kid.clone()).collect()
    }

    /// The identity `token` proves, or 401 (503 when the keys cannot be had).
    pub async fn authenticate(
        &self,
        token: &str,
        trace: &TraceContext,
    ) -> Result<Arc<Identity>, ApiError> {
        let now = unix_now();
        if let Some(identity) = self.verified.get(token).map(|i| i.clone()) {
            if now < identity.exp {
                return Ok(identity);
            }
            self.verified.remove(token);
            return Err(self.refuse(TokenError::Expired));
        }
        let claims = match verify(&self.keys(), token, now) {
            Err(TokenError::UnknownKey) => {
                self.refresh_for_unknown_key(trace).await?;
                verify(&self.keys(), token, now)
            }
            other => other,
        }
        .map_err(|e| self.refuse(e))?;
        let identity = Arc::new(Identity::new(Caller::from_claims(&claims), claims.exp));
        if self.verified.len() >= MAX_REMEMBERED {
            self.verified.clear();
        }
        self.verified.insert(token.into(), identity.clone());
        Ok(identity)
    }

    fn refuse(&self, error: TokenError) -> ApiError {
        let reason = match error {
            TokenError::Malformed(_) => "malformed",
            TokenError::Algorithm(_) => "algorithm",
            TokenError::UnknownKey => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
        };
        self.metrics
            .auth_failures
            .with_label_values(&[reason])
            .inc();
        ApiError::unauthorized(error.to_string())
    }

    /// Counts a 401 that happened before verification (no or unreadable header).
    pub fn count_refusal(&self, reason: &str) {
        self.metrics
            .auth_failures
            .with_label_values(&[reason])
            .inc();
    }

    /// Fetches the keys once more after a token named an unknown key id. Requests
    /// that failed while a fetch was under way share it; fetches are at least
    /// [`MIN_REFRESH_INTERVAL`] apart (a request waits for the interval rather
    /// than missing a rotation).
    async fn refresh_for_unknown_key(&self, trace: &TraceContext) -> Result<(), ApiError> {
        let seen = self.fetches.load(Ordering::SeqCst);
        let mut last = self.last_fetch.lock().await;
        if self.fetches.load(Ordering::SeqCst) != seen {
            return Ok(());
        }
        if let Some(at) = *last {
            tokio::time::sleep(MIN_REFRESH_INTERVAL.saturating_sub(at.elapsed())).await;
        }
        self.fetches.fetch_add(1, Ordering::SeqCst);
        *last = Some(Instant::now());
        self.fetch(trace).await.map_err(|e| {
            ApiError::unavailable(
                format!("cannot verify the token now: {}", e.message),
                Duration::from_secs(1),
            )
        })
    }

    /// Fetches the keys again (at start and periodically).
    pub async fn refresh(&self) -> Result<(), ApiError> {
        let mut last = self.last_fetch.lock().await;
        self.fetches.fetch_add(1, Ordering::SeqCst);
        *last = Some(Instant::now());
        self.fetch(&TraceContext::new_root()).await
    }

    async fn fetch(&self, trace: &TraceContext) -> Result<(), ApiError> {
        let reply = self
            .downstream
            .call("user.keys", Bytes::from_static(b"{}"), trace, None)
            .await?;
        let jwks: Jwks = serde_json::from_slice(&reply).map_err(|e| {
            ApiError::unavailable(
                format!("user.keys answered something unreadable: {e}"),
                Duration::from_secs(1),
            )
        })?;
        let changed = {
            let mut keys = self
                .keys
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let changed = **keys != jwks;
            if changed {
                *keys = Arc::new(jwks);
            }
            changed
        };
        if changed {
            // A key may have been withdrawn: tokens it signed must be checked again.
            self.verified.clear();
            tracing::info!(kids = ?self.key_ids(), "token keys loaded");
        }
        Ok(())
    }

    /// Forgets verified tokens that have expired.
    pub fn prune(&self) {
        let now = unix_now();
        self.verified.retain(|_, identity| now < identity.exp);
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
