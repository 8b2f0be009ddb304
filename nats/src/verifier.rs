//! Token verification with the user service's keys, for every service and the
//! gateway: the keys of `user.keys` cached, fetched again periodically (the
//! owner calls [`TokenVerifier::refresh`]) and at once when a token names an
//! unknown key id (a rotation); those fetches are single-flight (requests
//! that need one while it runs share it) and at least
//! [`MIN_REFRESH_INTERVAL`] apart (a request waits for its turn rather than
//! missing a rotation, so forged key ids cannot hammer the user service).
//! A verified token is remembered by its SHA-256 until it expires, so the
//! hot path costs a hash and a map read instead of a signature check; the
//! memory is dropped whenever the key set changes (a key may be withdrawn).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::{
    auth::{verify, Caller, Jwks, TokenError},
    clock, ServiceError,
};

/// Shortest time between two fetches prompted by unknown key ids.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Verified tokens remembered at most; beyond, the memory is cleared.
const MAX_REMEMBERED: usize = 10_000;

/// Fetches the current key set (`user.keys`).
pub type KeyFetch = Arc<dyn Fn() -> BoxFuture<'static, Result<Jwks, ServiceError>> + Send + Sync>;

/// A verified token: whom it proves, until when.
#[derive(Debug, Clone)]
pub struct Verified {
    pub caller: Arc<Caller>,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The token is no good (401).
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The keys could not be fetched to check it (503).
    #[error("cannot verify the token now: {0}")]
    Unavailable(String),
}

impl VerifyError {
    /// The error a service answers with: 401, or 503 when the keys are out of reach.
    pub fn to_service_error(&self) -> ServiceError {
        match self {
            VerifyError::Token(e) => ServiceError::unauthorized(e.to_string()),
            VerifyError::Unavailable(_) => ServiceError::unavailable(self.to_string()),
        }
    }
}

/// Verifies tokens against the user service's keys; share one per process.
pub struct TokenVerifier {
    keys: RwLock<Arc<Jwks>>,
    verified: RwLock<HashMap<[u8; 32], Verified>>,
    /// When the keys were last fetched; held while fetching (single flight).
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    /// Fetches started so far.
    fetches: AtomicU64,
    /// Fetches that succeeded so far: the generation of the keys held.
    completed: AtomicU64,
    fetch: KeyFetch,
    min_interval: Duration,
}

impl TokenVerifier {
    /// A verifier that fetches its keys with `fetch`; none are known until the
    /// first fetch.
    pub fn new(fetch: KeyFetch) -> Self {
        Self {
            keys: RwLock::new(Arc::new(Jwks::default())),
            verified: RwLock::new(HashMap::new()),
            last_fetch: tokio::sync::Mutex::new(None),
            fetches: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            fetch,
            min_interval: MIN_REFRESH_INTERVAL,
        }
    }

    /// The same with another interval between fetches prompted by unknown key ids.
    pub fn with_min_interval(mut self, interval: Duration) -> Self {
        self.min_interval = interval;
        self
    }

    fn keys(&self) -> Arc<Jwks> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Key ids currently known (for health reports).
    pub fn key_ids(&self) -> Vec<String> {
        self.keys().keys.iter().map(|k| k.kid.clone()).collect()
    }

    /// Fetches started so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Checks `token` without waiting: remembered, or verified with the keys
    /// known now. `Err(UnknownKey)` means the keys must be fetched first
    /// ([`Self::verify`] does).
    pub fn check(&self, token: &str) -> Result<Verified, TokenError> {
        let now = clock::now_secs();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let remembered = self
            .verified
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&digest)
            .cloned();
        if let Some(verified) = remembered {
            return if now < verified.exp {
                Ok(verified)
            } else {
                Err(TokenError::Expired)
            };
        }
        let claims = verify(&self.keys(), token, now)?;
        let verified = Verified {
            caller: Arc::new(Caller::from_claims(&claims)),
            exp: claims.exp,
        };
        let mut memory = self
            .verified
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if memory.len() >= MAX_REMEMBERED {
            memory.retain(|_, v| now < v.exp);
            if memory.len() >= MAX_REMEMBERED {
                memory.clear();
            }
        }
        memory.insert(digest, verified.clone());
        Ok(verified)
    }

    /// Checks `token`, fetching the keys first when it names an unknown key id.
    pub async fn verify(&self, token: &str) -> Result<Verified, VerifyError> {
        let generation = self.completed.load(Ordering::SeqCst);
        match self.check(token) {
            Err(TokenError::UnknownKey) => {
                self.refresh_for_unknown_key(generation).await?;
                Ok(self.check(token)?)
            }
            other => Ok(other?),
        }
    }

    /// Fetches the keys once more after a token named a key id unknown to
    /// the keys of `generation`. Callers that found it unknown before a fetch
    /// completed share that fetch; fetches are at least the minimum interval
    /// apart (a caller waits for it).
    async fn refresh_for_unknown_key(&self, generation: u64) -> Result<(), VerifyError> {
        let mut last = self.last_fetch.lock().await;
        if self.completed.load(Ordering::SeqCst) != generation {
            // Keys newer than the ones this caller checked with: check again.
            return Ok(());
        }
        if let Some(at) = *last {
            tokio::time::sleep(self.min_interval.saturating_sub(at.elapsed())).await;
        }
        self.fetches.fetch_add(1, Ordering::SeqCst);
        *last = Some(Instant::now());
        self.fetch_keys()
            .await
            .map(drop)
            .map_err(|e| VerifyError::Unavailable(e.message))
    }

    /// Fetches the keys now (at start and periodically); true when they changed.
    pub async fn refresh(&self) -> Result<bool, ServiceError> {
        let mut last = self.last_fetch.lock().await;
        self.fetches.fetch_add(1, Ordering::SeqCst);
        *last = Some(Instant::now());
        self.fetch_keys().await
    }

    async fn fetch_keys(&self) -> Result<bool, ServiceError> {
        let jwks = (self.fetch)().await?;
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
            self.verified
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clear();
            tracing::info!(kids = ?self.key_ids(), "token keys loaded");
        }
        self.completed.fetch_add(1, Ordering::SeqCst);
        Ok(changed)
    }

    /// Forgets verified tokens that have expired.
    pub fn prune(&self) {
        let now = clock::now_secs();
        self.verified
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|_, v| now < v.exp);
    }

    /// Tokens remembered now.
    pub fn remembered(&self) -> usize {
        self.verified
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    use ed25519_dalek::{Signer, SigningKey};
    use futures::FutureExt;

    use super::*;
    use crate::auth::{thumbprint, Claims, Jwk, AUDIENCE, ISSUER};

    fn token(key: &SigningKey, sub: &str) -> String {
        let now = clock::now_secs();
        let kid = thumbprint(&key.verifying_key());
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
        let claims = Claims {
            sub: sub.into(),
            email: format!("{sub}@example.com"),
            roles: vec!["customer".into()],
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now,
            exp: now + 600,
        };
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        let signature = key.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    fn jwks(keys: &[&SigningKey]) -> Jwks {
        Jwks {
            keys: keys
                .iter()
                .map(|k| Jwk::ed25519(&k.verifying_key(), &thumbprint(&k.verifying_key())))
                .collect(),
        }
    }

    /// A verifier whose fetch answers `published` (after `delay`) and counts calls.
    fn verifier(
        published: Arc<RwLock<Jwks>>,
        calls: Arc<AtomicU64>,
        delay: Duration,
    ) -> TokenVerifier {
        TokenVerifier::new(Arc::new(move || {
            let (published, calls) = (published.clone(), calls.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                Ok(published.read().unwrap().clone())
            }
            .boxed()
        }))
    }

    #[tokio::test]
    async fn concurrent_unknown_key_ids_share_one_fetch() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let published = Arc::new(RwLock::new(jwks(&[&key])));
        let calls = Arc::new(AtomicU64::new(0));
        let verifier = Arc::new(verifier(
            published,
            calls.clone(),
            Duration::from_millis(50),
        ));
        let tokens: Vec<String> = (0..32).map(|i| token(&key, &format!("u{i}"))).collect();
        let results = futures::future::join_all(tokens.iter().map(|t| {
            let verifier = verifier.clone();
            let t = t.clone();
            tokio::spawn(async move { verifier.verify(&t).await })
        }))
        .await;
        for (i, result) in results.into_iter().enumerate() {
            let verified = result.unwrap().unwrap();
            assert_eq!(verified.caller.user_id, format!("u{i}"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one fetch for 32 requests");
        assert_eq!(verifier.remembered(), 32);
        // Remembered: no signature check, no fetch.
        assert!(verifier.check(&tokens[0]).is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn forged_key_ids_are_fetched_for_at_most_once_per_interval() {
        let real = SigningKey::from_bytes(&[4; 32]);
        let forger = SigningKey::from_bytes(&[5; 32]);
        let published = Arc::new(RwLock::new(jwks(&[&real])));
        let calls = Arc::new(AtomicU64::new(0));
        let verifier = Arc::new(
            verifier(published.clone(), calls.clone(), Duration::ZERO)
                .with_min_interval(Duration::from_millis(300)),
        );
        let forged = token(&forger, "mallory");
        let started = Instant::now();
        let attempts = futures::future::join_all((0..3).map(|_| {
            let (verifier, forged) = (verifier.clone(), forged.clone());
            tokio::spawn(async move { verifier.verify(&forged).await })
        }))
        .await;
        for attempt in attempts {
            assert_eq!(
                attempt.unwrap().unwrap_err(),
                VerifyError::Token(TokenError::UnknownKey)
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "concurrent: one fetch");
        assert_eq!(
            verifier.verify(&forged).await.unwrap_err(),
            VerifyError::Token(TokenError::UnknownKey)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "the second fetch waited for the interval"
        );

        // A real rotation is picked up by the next unknown key id.
        let rotated = SigningKey::from_bytes(&[6; 32]);
        *published.write().unwrap() = jwks(&[&rotated, &real]);
        let fresh = token(&rotated, "ann");
        assert_eq!(verifier.verify(&fresh).await.unwrap().caller.user_id, "ann");
    }

    #[tokio::test]
    async fn a_withdrawn_key_forgets_what_it_verified() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let published = Arc::new(RwLock::new(jwks(&[&key])));
        let calls = Arc::new(AtomicU64::new(0));
        let verifier = verifier(published.clone(), calls, Duration::ZERO);
        assert!(verifier.refresh().await.unwrap());
        let t = token(&key, "ann");
        assert!(verifier.check(&t).is_ok());
        *published.write().unwrap() = jwks(&[&SigningKey::from_bytes(&[10; 32])]);
        assert!(verifier.refresh().await.unwrap());
        assert_eq!(verifier.remembered(), 0);
        assert_eq!(verifier.check(&t).unwrap_err(), TokenError::UnknownKey);
        assert!(!verifier.refresh().await.unwrap(), "unchanged");
    }

    #[tokio::test]
    async fn unreachable_keys_are_a_503_not_a_401() {
        let verifier = TokenVerifier::new(Arc::new(|| {
            async { Err(ServiceError::unavailable("no instance of user")) }.boxed()
        }));
        let t = token(&SigningKey::from_bytes(&[1; 32]), "ann");
        let err = verifier.verify(&t).await.unwrap_err();
        assert!(matches!(err, VerifyError::Unavailable(_)), "{err:?}");
        assert_eq!(err.to_service_error().code, 503);
        assert_eq!(
            VerifyError::Token(TokenError::Expired)
                .to_service_error()
                .code,
            401
        );
    }
}
