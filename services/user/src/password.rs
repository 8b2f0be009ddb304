//! Password hashing with argon2id, off the async threads.
//!
//! Hashing is CPU- and memory-bound on purpose, so it runs on tokio's blocking
//! threads, at most `concurrency` at a time (a login flood queues here and then
//! fills the worker pool, which answers 503, instead of starving the process).
//! Verifying an unknown email's login against a dummy hash made with the same
//! parameters makes both failure paths cost one hash.

use std::sync::Arc;

use argon2::{
    password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString},
    Algorithm, Argon2, Params, Version,
};
use rand::RngCore;
use shop_nats::ServiceError;
use tokio::sync::Semaphore;

use crate::domain::Secret;

/// Cost parameters of argon2id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashCost {
    /// OWASP's recommendation for argon2id: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        Self {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
        }
    }
}

/// Hashes and verifies passwords; cheap to clone.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    permits: Arc<Semaphore>,
    dummy: Arc<str>,
}

impl Hasher {
    /// Checks the parameters and makes the dummy hash (one hash, on a blocking thread).
    pub async fn new(cost: HashCost, concurrency: usize) -> anyhow::Result<Self> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters {cost:?} are not valid: {e}"))?;
        let mut random = [0u8; 32];
        rand::rng().fill_bytes(&mut random);
        let unguessable = Secret::new(base64_of(&random));
        let dummy = {
            let params = params.clone();
            tokio::task::spawn_blocking(move || hash_blocking(&params, &unguessable))
                .await
                .map_err(|e| anyhow::anyhow!("hashing task failed: {e}"))?
                .map_err(|e| anyhow::anyhow!("making the dummy hash: {e}"))?
        };
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy: dummy.into(),
        })
    }

    /// A PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) of `password`.
    pub async fn hash(&self, password: &Secret) -> Result<String, ServiceError> {
        let params = self.params.clone();
        let password = password.clone();
        self.blocking(move || hash_blocking(&params, &password))
            .await?
            .map_err(|e| ServiceError::internal(format!("hashing password: {e}")))
    }

    /// Whether `password` matches `stored`; with no stored hash it is checked
    /// against the dummy hash (and never matches), at the same cost.
    pub async fn verify(
        &self,
        password: &Secret,
        stored: Option<&str>,
    ) -> Result<bool, ServiceError> {
        let known = stored.is_some();
        let phc: Arc<str> = stored.map(Arc::from).unwrap_or_else(|| self.dummy.clone());
        let password = password.clone();
        let matched = self
            .blocking(move || verify_blocking(&phc, &password))
            .await?
            .map_err(|e| ServiceError::internal(format!("checking password: {e}")))?;
        Ok(known && matched)
    }

    async fn blocking<T, F>(&self, work: F) -> Result<T, ServiceError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ServiceError::unavailable("password hashing is shutting down"))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ServiceError::internal(format!("password hashing task failed: {e}")))
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_blocking(params: &Params, password: &Secret) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2(params)
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

/// Verifies with the parameters recorded in the PHC string itself.
fn verify_blocking(phc: &str, password: &Secret) -> Result<bool, String> {
    let parsed = PasswordHash::new(phc).map_err(|e| format!("stored hash is not valid: {e}"))?;
    match argon2(&Params::default()).verify_password(password.expose().as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: HashCost = HashCost {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify() {
        let hasher = Hasher::new(CHEAP, 2).await.unwrap();
        let password = Secret::new("correct horse battery");
        let a = hasher.hash(&password).await.unwrap();
        let b = hasher.hash(&password).await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{a}");
        assert_ne!(a, b, "a fresh salt each time");
        assert!(!a.contains("correct horse"));
        assert!(hasher.verify(&password, Some(&a)).await.unwrap());
        assert!(!hasher
            .verify(&Secret::new("wrong horse battery"), Some(&a))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn unknown_accounts_never_match_but_cost_a_hash() {
        let hasher = Hasher::new(CHEAP, 1).await.unwrap();
        assert!(hasher.dummy.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(!hasher
            .verify(&Secret::new("anything at all"), None)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn hashes_made_with_other_costs_still_verify() {
        let old = Hasher::new(CHEAP, 1).await.unwrap();
        let hash = old.hash(&Secret::new("0123456789")).await.unwrap();
        let new = Hasher::new(
            HashCost {
                memory_kib: 2048,
                iterations: 2,
                parallelism: 1,
            },
            1,
        )
        .await
        .unwrap();
        assert!(new
            .verify(&Secret::new("0123456789"), Some(&hash))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn bad_parameters_and_corrupt_hashes_are_errors() {
        let too_little = HashCost {
            memory_kib: 1,
            ..CHEAP
        };
        assert!(Hasher::new(too_little, 1).await.is_err());
        let hasher = Hasher::new(CHEAP, 1).await.unwrap();
        let err = hasher
            .verify(&Secret::new("0123456789"), Some("not a hash"))
            .await
            .unwrap_err();
        assert_eq!(err.code, 500);
    }

    #[test]
    fn default_cost_is_owasp() {
        assert_eq!(
            HashCost::default(),
            HashCost {
                memory_kib: 19456,
                iterations: 2,
                parallelism: 1
            }
        );
    }
}
