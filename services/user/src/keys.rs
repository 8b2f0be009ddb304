//! Token signing keys, shared by every instance and kept across restarts in
//! the key-value bucket `user_signing_keys` (private to this service).
//!
//! The bucket holds one value, `keyset`: every key with its secret seed
//! sealed with the user data key (`USER_DATA_KEY`, [`shop_nats::sealed`]; only
//! this service is given it, so whoever reads the bucket learns no seed), its
//! public key, when it was made and when it was retired. A set written by an
//! older version (seeds in clear) or sealed with the previous data key is
//! sealed again with the current one when an instance loads it; clear
//! revisions are then deleted from the bucket's history. The newest key that is not retired
//! signs; a retired key stays published for one token lifetime after its
//! retirement, so the tokens it signed keep verifying until they expire.
//! Every change is a compare-and-set on the value's revision, so instances
//! that start or rotate at the same moment agree on one key set.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use shop_nats::{
    auth::Jwk,
    sealed::{is_sealed, DataKeys},
    ServiceError,
};

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
    /// The Ed25519 secret seed, sealed with the user data key for this key id
    /// (older versions: base64url in clear, sealed at the next load).
    seed: String,
    /// The public key, base64url (what `user.keys` publishes; no seed needed).
    #[serde(default)]
    public: String,
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

/// What a seed is sealed for: its key id, so a sealed seed moved to another key does not open.
fn seed_context(kid: &str) -> String {
    format!("{BUCKET}:{kid}")
}

impl StoredKey {
    /// A fresh random key made at `now`, its seed sealed with `data_keys`.
    pub fn generate(now: u64, data_keys: &DataKeys) -> Self {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let signer = TokenSigner::from_seed(&seed);
        let key = Self {
            kid: signer.kid().to_string(),
            seed: data_keys.seal(&seed, &seed_context(signer.kid())),
            public: signer.jwk().x,
            created_at: now,
            retired_at: None,
        };
        seed.fill(0);
        key
    }

    /// The signing key, its seed opened with `data_keys`.
    pub fn signer(&self, data_keys: &DataKeys) -> Result<TokenSigner, ServiceError> {
        let seed = if is_sealed(&self.seed) {
            data_keys
                .open(&self.seed, &seed_context(&self.kid))
                .map_err(|e| ServiceError::internal(format!("signing key {}: {e}", self.kid)))?
        } else {
            URL_SAFE_NO_PAD.decode(&self.seed).unwrap_or_default()
        };
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| ServiceError::internal(format!("signing key {} is corrupt", self.kid)))?;
        let signer = TokenSigner::from_seed(&seed);
        if signer.kid() != self.kid {
            return Err(ServiceError::internal(format!(
                "signing key {} does not match its seed",
                self.kid
            )));
        }
        Ok(signer)
    }

    /// Whether the seed is in clear (written by an older version).
    pub fn in_clear(&self) -> bool {
        !is_sealed(&self.seed)
    }

    /// The public key as `user.keys` publishes it.
    pub fn jwk(&self, data_keys: &DataKeys) -> Result<Jwk, ServiceError> {
        if self.public.is_empty() {
            return Ok(self.signer(data_keys)?.jwk());
        }
        Ok(Jwk {
            kty: "OKP".to_string(),
            crv: "Ed25519".to_string(),
            x: self.public.clone(),
            kid: self.kid.clone(),
            alg: Some(crate::token::ALG.to_string()),
            use_: Some("sig".to_string()),
        })
    }

    /// Seals the seed again with the current data key when it is in clear or
    /// under the previous key, and fills in the public key; true if it changed.
    fn reseal(&mut self, data_keys: &DataKeys) -> Result<bool, ServiceError> {
        if !self.in_clear() && data_keys.is_current(&self.seed) && !self.public.is_empty() {
            return Ok(false);
        }
        let signer = self.signer(data_keys)?;
        let seed = signer.seed();
        self.seed = data_keys.seal(&seed, &seed_context(&self.kid));
        self.public = signer.jwk().x;
        Ok(true)
    }
}

/// Every key a token may be signed with, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySet {
    pub keys: Vec<StoredKey>,
}

impl KeySet {
    /// A set with one fresh key.
    pub fn generate(now: u64, data_keys: &DataKeys) -> Self {
        Self {
            keys: vec![StoredKey::generate(now, data_keys)],
        }
    }

    /// Seals every seed with the current data key (see [`StoredKey`]); true if any changed.
    pub fn reseal(&mut self, data_keys: &DataKeys) -> Result<bool, ServiceError> {
        let mut changed = false;
        for key in &mut self.keys {
            changed |= key.reseal(data_keys)?;
        }
        Ok(changed)
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
    pub fn published(
        &self,
        now: u64,
        token_ttl: Duration,
        data_keys: &DataKeys,
    ) -> Result<Jwks, ServiceError> {
        let mut keys = Vec::with_capacity(self.keys.len());
        for key in self.keys.iter().rev() {
            if still_valid(key, now, token_ttl) {
                keys.push(key.jwk(data_keys)?);
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

/// The key set in NATS: read, created once, rotated with compare-and-set;
/// seeds sealed with the data keys it holds.
#[derive(Clone)]
pub struct KeyRing {
    kv: kv::Store,
    js: jetstream::Context,
    data_keys: DataKeys,
}

impl KeyRing {
    /// Opens the bucket, creating it if needed.
    pub async fn open(
        js: &jetstream::Context,
        replicas: usize,
        data_keys: DataKeys,
    ) -> anyhow::Result<Self> {
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
        Ok(Self {
            kv,
            js: js.clone(),
            data_keys,
        })
    }

    /// The data keys the seeds are sealed with.
    pub fn data_keys(&self) -> &DataKeys {
        &self.data_keys
    }

    /// The stored key set, creating the first key if there is none yet. When
    /// several instances start at once, one `create` wins and the others read it.
    pub async fn load_or_create(&self, now: u64) -> Result<KeySet, ServiceError> {
        for _ in 0..CAS_ATTEMPTS {
            if let Some((set, _)) = self.read().await? {
                return Ok(set);
            }
            let set = KeySet::generate(now, &self.data_keys);
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

    /// Seals the stored seeds with the current data key where they are in
    /// clear or under the previous one (compare-and-set), and deletes clear
    /// revisions from the bucket's history. True when something was resealed.
    pub async fn reseal(&self) -> Result<bool, ServiceError> {
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut set, revision)) = self.read().await? else {
                return Ok(false);
            };
            let had_clear = set.keys.iter().any(StoredKey::in_clear);
            if !set.reseal(&self.data_keys)? {
                return Ok(false);
            }
            match self.kv.update(KEYSET, encode(&set)?, revision).await {
                Ok(new_revision) => {
                    tracing::info!(
                        keys = set.keys.len(),
                        "signing keys sealed with the current data key"
                    );
                    if had_clear {
                        self.delete_history_before(new_revision).await?;
                    }
                    return Ok(true);
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(unavailable("storing the resealed signing keys", e)),
            }
        }
        Err(ServiceError::unavailable(
            "signing keys are being changed concurrently; retry",
        ))
    }

    /// Deletes the key set's revisions older than `revision` from the bucket's stream.
    async fn delete_history_before(&self, revision: u64) -> Result<(), ServiceError> {
        use futures::StreamExt;
        let stream = self
            .js
            .get_stream(format!("KV_{BUCKET}"))
            .await
            .map_err(|e| unavailable("opening the signing keys' stream", e))?;
        let mut history = self
            .kv
            .history(KEYSET)
            .await
            .map_err(|e| unavailable("reading the signing keys' history", e))?;
        let mut old = Vec::new();
        while let Some(entry) = history.next().await {
            let entry = entry.map_err(|e| unavailable("reading the signing keys' history", e))?;
            if entry.revision < revision {
                old.push(entry.revision);
            }
        }
        for sequence in old {
            stream
                .delete_message(sequence)
                .await
                .map_err(|e| unavailable("deleting a clear revision of the signing keys", e))?;
        }
        Ok(())
    }

    /// Makes a new signing key current; the previous one stays published for
    /// one token lifetime. Returns the new set.
    pub async fn rotate(&self, now: u64, token_ttl: Duration) -> Result<KeySet, ServiceError> {
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut set, revision)) = self.read().await? else {
                self.load_or_create(now).await?;
                continue;
            };
            set.reseal(&self.data_keys)?;
            set.rotate(StoredKey::generate(now, &self.data_keys), now, token_ttl);
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
    use shop_nats::sealed::DataKey;

    use super::*;
    use crate::token::{verify, Claims, AUDIENCE, ISSUER};

    const TTL: Duration = Duration::from_secs(3600);

    fn data_keys(byte: u8) -> DataKeys {
        DataKeys::new(DataKey::from_bytes(&[byte; 32]), None)
    }

    fn claims(now: u64) -> Claims {
        Claims {
            sub: "u1".into(),
            email: "a@b.co".into(),
            roles: vec!["customer".into()],
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now,
            exp: now + TTL.as_secs(),
        }
    }

    #[test]
    fn rotation_keeps_the_old_key_until_its_tokens_expire() {
        let keys = data_keys(1);
        let mut set = KeySet::generate(1_000, &keys);
        let old = set.current().unwrap().clone();
        let old_token = old.signer(&keys).unwrap().sign(&claims(1_500)).unwrap();

        set.rotate(StoredKey::generate(2_000, &keys), 2_000, TTL);
        let new = set.current().unwrap().clone();
        assert_ne!(new.kid, old.kid);
        assert_eq!(set.keys.len(), 2);

        let jwks = set.published(2_000, TTL, &keys).unwrap();
        assert_eq!(jwks.keys[0].kid, new.kid, "the signing key comes first");
        assert_eq!(jwks.keys[1].kid, old.kid);
        assert_eq!(jwks.keys[1], old.signer(&keys).unwrap().jwk());
        assert!(verify(&jwks, &old_token, 2_000).is_ok());

        // Retired at 2000 with a one-hour lifetime: gone from 5600 on.
        assert_eq!(set.published(5_599, TTL, &keys).unwrap().keys.len(), 2);
        assert_eq!(set.published(5_600, TTL, &keys).unwrap().keys.len(), 1);

        // A later rotation drops keys past their lifetime.
        set.rotate(StoredKey::generate(6_000, &keys), 6_000, TTL);
        let kids: Vec<&str> = set.keys.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids.len(), 2);
        assert!(!kids.contains(&old.kid.as_str()));
        assert!(kids.contains(&new.kid.as_str()));
    }

    #[test]
    fn seeds_are_stored_sealed_and_open_only_with_the_data_key() {
        let keys = data_keys(1);
        let set = KeySet::generate(1, &keys);
        let json = serde_json::to_string(&set).unwrap();
        let key = &set.keys[0];
        let seed = key.signer(&keys).unwrap().seed();
        let clear = URL_SAFE_NO_PAD.encode(seed);
        assert!(!json.contains(&clear), "no seed in clear: {json}");
        assert!(key.seed.starts_with("v1."), "{json}");
        let back: KeySet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set);
        assert_eq!(
            back.current().unwrap().signer(&keys).unwrap().kid(),
            key.kid
        );
        assert!(!format!("{set:?}").contains(&key.seed));
        let err = key.signer(&data_keys(2)).unwrap_err();
        assert_eq!(err.code, 500);
        assert!(!err.message.contains(&clear));
        // A sealed seed moved under another key id does not open.
        let mut moved = set.keys[0].clone();
        moved.kid = "another".into();
        assert!(moved.signer(&keys).is_err());
    }

    #[test]
    fn clear_or_old_seeds_are_sealed_again_with_the_current_key() {
        let old = data_keys(1);
        let mut set = KeySet::generate(1, &old);
        let signer = set.keys[0].signer(&old).unwrap();
        // As an older version stored it: the seed in clear, no public key.
        let mut legacy = set.clone();
        legacy.keys[0].seed = URL_SAFE_NO_PAD.encode(signer.seed());
        legacy.keys[0].public = String::new();
        assert!(legacy.keys[0].in_clear());
        assert!(legacy.reseal(&old).unwrap());
        assert!(!legacy.keys[0].in_clear());
        assert_eq!(
            legacy.published(1, TTL, &old).unwrap().keys[0],
            signer.jwk()
        );
        assert!(!legacy.reseal(&old).unwrap(), "nothing left to do");

        // Rotating the data key: the previous one opens, the current one seals.
        let rotated = DataKeys::new(
            DataKey::from_bytes(&[2; 32]),
            Some(DataKey::from_bytes(&[1; 32])),
        );
        assert!(set.reseal(&rotated).unwrap());
        assert!(rotated.is_current(&set.keys[0].seed));
        assert_eq!(
            set.keys[0].signer(&data_keys(2)).unwrap().kid(),
            signer.kid()
        );
    }
}
