//! Token signing keys, shared by every instance and kept across restarts in
//! the key-value bucket `user_signing_keys` (private to this service).
//!
//! The bucket holds one value, `keyset`: every key with its secret seed, when
//! it was made and when it was retired. The newest key that is not retired
//! signs; a retired key stays published for one token lifetime after its
//! retirement, so the tokens it signed keep verifying until they expire.
//! Every change is a compare-and-set on the value's revision, so instances
//! that start or rotate at the same moment agree on one key set.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use shop_nats::ServiceError;

use crate::token::{Jwks, TokenSigner};

/// The key-value bucket holding the key set.
pub const BUCKET: &str = "user_signing_keys";
/// The key of the key set in [`BUCKET`].
pub const KEYSET: &str = "keyset";
/// Compare-and-set attempts before giving up on a contended change.
const CAS_ATTEMPTS: u32 = 10;

/// One signing key as stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    pub kid: String,
    /// The Ed25519 secret seed, base64url.
    seed: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; `None` while it is the signing key.
    pub retired_at: Option<u64>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

impl StoredKey {
    /// A fresh random key made at `now`.
    pub fn generate(now: u64) -> Self {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let signer = TokenSigner::from_seed(&seed);
        Self {
            kid: signer.kid().to_string(),
            seed: URL_SAFE_NO_PAD.encode(seed),
            created_at: now,
            retired_at: None,
        }
    }

    pub fn signer(&self) -> Result<TokenSigner, ServiceError> {
        let seed: [u8; 32] = URL_SAFE_NO_PAD
            .decode(&self.seed)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                ServiceError::internal(format!("signing key {} is corrupt", self.kid))
            })?;
        Ok(TokenSigner::from_seed(&seed))
    }
}

/// Every key a token may be signed with, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySet {
    pub keys: Vec<StoredKey>,
}

impl KeySet {
    /// A set with one fresh key.
    pub fn generate(now: u64) -> Self {
        Self {
            keys: vec![StoredKey::generate(now)],
        }
    }

    /// The key that signs new tokens: the newest one not retired.
    pub fn current(&self) -> Result<&StoredKey, ServiceError> {
        self.keys
            .iter()
            .rev()
            .find(|k| k.retired_at.is_none())
            .ok_or_else(|| ServiceError::internal("no current signing key"))
    }

    /// Retires the current key at `now`, adds `new` as the current one, and
    /// drops keys whose tokens have all expired (retired more than `token_ttl` ago).
    pub fn rotate(&mut self, new: StoredKey, now: u64, token_ttl: Duration) {
        for key in &mut self.keys {
            key.retired_at.get_or_insert(now);
        }
        self.keys.push(new);
        self.keys.retain(|k| still_valid(k, now, token_ttl));
    }

    /// The public keys of every key whose tokens may still be valid at `now`,
    /// the signing key first.
    pub fn published(&self, now: u64, token_ttl: Duration) -> Result<Jwks, ServiceError> {
        let mut keys = Vec::with_capacity(self.keys.len());
        for key in self.keys.iter().rev() {
            if still_valid(key, now, token_ttl) {
                keys.push(key.signer()?.jwk());
            }
        }
        Ok(Jwks { keys })
    }
}

fn still_valid(key: &StoredKey, now: u64, token_ttl: Duration) -> bool {
    match key.retired_at {
        None => true,
        Some(retired) => retired.saturating_add(token_ttl.as_secs()) > now,
    }
}

/// The key set in NATS: read, created once, rotated with compare-and-set.
#[derive(Clone)]
pub struct KeyRing {
    kv: kv::Store,
}

impl KeyRing {
    /// Opens the bucket, creating it if needed.
    pub async fn open(js: &jetstream::Context, replicas: usize) -> anyhow::Result<Self> {
        let kv = shop_nats::jetstream::ensure_kv(
            js,
            kv::Config {
                bucket: BUCKET.to_string(),
                description: "user service token signing keys (private)".to_string(),
                history: 10,
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
        Ok(Self { kv })
    }

    /// The stored key set, creating the first key if there is none yet. When
    /// several instances start at once, one `create` wins and the others read it.
    pub async fn load_or_create(&self, now: u64) -> Result<KeySet, ServiceError> {
        for _ in 0..CAS_ATTEMPTS {
            if let Some((set, _)) = self.read().await? {
                return Ok(set);
            }
            let set = KeySet::generate(now);
            match self.kv.create(KEYSET, encode(&set)?).await {
                Ok(_) => {
                    tracing::info!(kid = %set.keys[0].kid, "created the first signing key");
                    return Ok(set);
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                Err(e) => return Err(unavailable("creating the signing key", e)),
            }
        }
        Err(ServiceError::unavailable(
            "signing keys are being changed concurrently; retry",
        ))
    }

    /// Makes a new signing key current; the previous one stays published for
    /// one token lifetime. Returns the new set.
    pub async fn rotate(&self, now: u64, token_ttl: Duration) -> Result<KeySet, ServiceError> {
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut set, revision)) = self.read().await? else {
                self.load_or_create(now).await?;
                continue;
            };
            set.rotate(StoredKey::generate(now), now, token_ttl);
            match self.kv.update(KEYSET, encode(&set)?, revision).await {
                Ok(_) => return Ok(set),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(unavailable("storing the rotated signing keys", e)),
            }
        }
        Err(ServiceError::unavailable(
            "signing keys are being changed concurrently; retry",
        ))
    }

    async fn read(&self) -> Result<Option<(KeySet, u64)>, ServiceError> {
        let entry = self
            .kv
            .entry(KEYSET)
            .await
            .map_err(|e| unavailable("reading the signing keys", e))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let set: KeySet = serde_json::from_slice(&entry.value).map_err(|e| {
                    ServiceError::internal(format!("stored signing keys are corrupt: {e}"))
                })?;
                Ok(Some((set, entry.revision)))
            }
            _ => Ok(None),
        }
    }
}

fn encode(set: &KeySet) -> Result<bytes::Bytes, ServiceError> {
    serde_json::to_vec(set)
        .map(Into::into)
        .map_err(|e| ServiceError::internal(format!("encoding signing keys: {e}")))
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> ServiceError {
    ServiceError::unavailable(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{verify, Claims};

    const TTL: Duration = Duration::from_secs(3600);

    fn claims(now: u64) -> Claims {
        Claims {
            sub: "u1".into(),
            email: "a@b.co".into(),
            roles: vec!["customer".into()],
            iat: now,
            exp: now + TTL.as_secs(),
        }
    }

    #[test]
    fn rotation_keeps_the_old_key_until_its_tokens_expire() {
        let mut set = KeySet::generate(1_000);
        let old = set.current().unwrap().clone();
        let old_token = old.signer().unwrap().sign(&claims(1_500)).unwrap();

        set.rotate(StoredKey::generate(2_000), 2_000, TTL);
        let new = set.current().unwrap().clone();
        assert_ne!(new.kid, old.kid);
        assert_eq!(set.keys.len(), 2);

        let jwks = set.published(2_000, TTL).unwrap();
        assert_eq!(jwks.keys[0].kid, new.kid, "the signing key comes first");
        assert_eq!(jwks.keys[1].kid, old.kid);
        assert!(verify(&jwks, &old_token, 2_000).is_ok());

        // Retired at 2000 with a one-hour lifetime: gone from 5600 on.
        assert_eq!(set.published(5_599, TTL).unwrap().keys.len(), 2);
        assert_eq!(set.published(5_600, TTL).unwrap().keys.len(), 1);

        // A later rotation drops keys past their lifetime.
        set.rotate(StoredKey::generate(6_000), 6_000, TTL);
        let kids: Vec<&str> = set.keys.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids.len(), 2);
        assert!(!kids.contains(&old.kid.as_str()));
        assert!(kids.contains(&new.kid.as_str()));
    }

    #[test]
    fn stored_keys_round_trip_and_hide_their_seed() {
        let set = KeySet::generate(1);
        let json = serde_json::to_string(&set).unwrap();
        let back: KeySet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set);
        assert_eq!(
            back.current().unwrap().signer().unwrap().kid(),
            set.keys[0].kid
        );
        assert!(!format!("{set:?}").contains(&set.keys[0].seed));
    }
}
