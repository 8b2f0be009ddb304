//! Secrets at rest: values only their owning service can read, sealed with a
//! data key that only that service is given.
//!
//! - A data key is 32 random bytes, written as standard base64 on one line
//!   (`head -c 32 /dev/urandom | base64`; `shop auth init` writes one per
//!   service). [`DataKeys::from_env`] reads it from `<NAME>_FILE` (a file) or
//!   `<NAME>` (the value), e.g. `USER_DATA_KEY_FILE`, and an optional previous
//!   key from `<NAME>_PREVIOUS_FILE` / `<NAME>_PREVIOUS`, kept for decryption
//!   while values sealed with it remain (key rotation).
//! - A sealed value is text: `v1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`,
//!   XChaCha20-Poly1305 with a random 24-byte nonce. The key id (derived from
//!   the key, it tells nothing about it) says which key opens it. The value is
//!   bound to a `context` (e.g. `user.credential:<user id>`) given as associated
//!   data, so a sealed value moved to another place or aggregate does not open.
//! - Nothing here prints a key or a plaintext: `Debug` shows key ids only, and
//!   errors name the variable or the key id, never a value.

use std::path::Path;

use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine,
};
use chacha20poly1305::{
    aead::{Aead, Payload},
    KeyInit, XChaCha20Poly1305, XNonce,
};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The format tag every sealed value starts with.
pub const FORMAT: &str = "v1";
/// Length of a data key in bytes.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// Why a data key could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Invalid(String),
}

/// Why a sealed value did not open. Never carries the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the value is not sealed (expected {FORMAT}.<key id>.<data>)")]
    NotSealed,
    #[error(
        "the value is sealed with key {0}, which this service is not given (set the previous key?)"
    )]
    UnknownKey(String),
    #[error("the sealed value does not open with key {0}: altered, or sealed for another place")]
    Corrupt(String),
}

/// One data key and its id.
#[derive(Clone)]
pub struct DataKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    /// The key made of these bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"shop data key id\0");
        hasher.update(bytes);
        let id = URL_SAFE_NO_PAD.encode(&hasher.finalize()[..9]);
        Self {
            id,
            cipher: XChaCha20Poly1305::new(bytes.into()),
        }
    }

    /// A key from its text form (standard base64 of 32 bytes; surrounding
    /// whitespace ignored). `what` names where it came from in the error.
    pub fn parse(text: &str, what: &str) -> Result<Self, KeyError> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| {
            KeyError::Invalid(format!(
                "{what} is not standard base64 (expected {KEY_LEN} random bytes: `head -c {KEY_LEN} /dev/urandom | base64`)"
            ))
        })?;
        let bytes: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
            KeyError::Invalid(format!(
                "{what} holds {} bytes; a data key is exactly {KEY_LEN}",
                bytes.len()
            ))
        })?;
        Ok(Self::from_bytes(&bytes))
    }

    /// A fresh random key in its text form (for tests and tooling).
    pub fn generate_text() -> String {
        let mut bytes = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut bytes);
        STANDARD.encode(bytes)
    }

    /// The key's id, as sealed values name it.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn associated(&self, context: &str) -> String {
        format!("{FORMAT}.{}.{context}", self.id)
    }
}

/// The key a service seals with, and the previous one it still opens with.
#[derive(Debug, Clone)]
pub struct DataKeys {
    current: DataKey,
    previous: Option<DataKey>,
}

impl DataKeys {
    pub fn new(current: DataKey, previous: Option<DataKey>) -> Self {
        Self { current, previous }
    }

    /// The keys named by the environment variables `<name>_FILE` or `<name>`,
    /// and optionally `<name>_PREVIOUS_FILE` or `<name>_PREVIOUS`; e.g. `name`
    /// = `USER_DATA_KEY`. The current key is required.
    pub fn from_env(name: &str) -> Result<Self, KeyError> {
        Self::from_lookup(
            name,
            |var| std::env::var(var).ok(),
            |path| std::fs::read_to_string(path),
        )
    }

    /// [`Self::from_env`] with the variables and files read through `var` and `read`.
    pub fn from_lookup(
        name: &str,
        var: impl Fn(&str) -> Option<String>,
        read: impl Fn(&Path) -> std::io::Result<String>,
    ) -> Result<Self, KeyError> {
        let current = load_one(name, &var, &read)?.ok_or_else(|| {
            KeyError::Missing(format!(
                "{name}_FILE (a file holding the key) or {name} must be set: 32 random bytes in standard base64 \
                 (`head -c 32 /dev/urandom | base64`, or `shop auth init`); secrets at rest are sealed with it"
            ))
        })?;
        let previous = load_one(&format!("{name}_PREVIOUS"), &var, &read)?;
        if previous.as_ref().is_some_and(|p| p.id == current.id) {
            return Err(KeyError::Invalid(format!(
                "{name}_PREVIOUS is the same key as {name}"
            )));
        }
        Ok(Self { current, previous })
    }

    /// The key new values are sealed with.
    pub fn current(&self) -> &DataKey {
        &self.current
    }

    /// The previous key, if one is given.
    pub fn previous(&self) -> Option<&DataKey> {
        self.previous.as_ref()
    }

    /// `plaintext` sealed with the current key for `context`.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> String {
        let key = &self.current;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = key.associated(context);
        // Encryption with a valid key and nonce cannot fail (only for inputs
        // past the cipher's length limit, far beyond any secret here).
        let ciphertext = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut data = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        data.extend_from_slice(&nonce);
        data.extend_from_slice(&ciphertext);
        format!("{FORMAT}.{}.{}", key.id, URL_SAFE_NO_PAD.encode(data))
    }

    /// The plaintext of a value sealed (with the current or previous key) for `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, SealError> {
        let (kid, data) = split(sealed).ok_or(SealError::NotSealed)?;
        let key = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|k| k.id == kid)
            .ok_or_else(|| SealError::UnknownKey(kid.to_string()))?;
        let data = URL_SAFE_NO_PAD
            .decode(data)
            .map_err(|_| SealError::Corrupt(kid.to_string()))?;
        if data.len() < NONCE_LEN {
            return Err(SealError::Corrupt(kid.to_string()));
        }
        let (nonce, ciphertext) = data.split_at(NONCE_LEN);
        let aad = key.associated(context);
        key.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SealError::Corrupt(kid.to_string()))
    }

    /// [`Self::open`] for text.
    pub fn open_text(&self, sealed: &str, context: &str) -> Result<String, SealError> {
        let bytes = self.open(sealed, context)?;
        String::from_utf8(bytes).map_err(|_| {
            SealError::Corrupt(split(sealed).map(|(k, _)| k).unwrap_or("?").to_string())
        })
    }

    /// Whether `sealed` is sealed with the current key (else it wants resealing
    /// before the previous key can be dropped).
    pub fn is_current(&self, sealed: &str) -> bool {
        split(sealed).is_some_and(|(kid, _)| kid == self.current.id)
    }
}

/// Whether `text` has the form of a sealed value.
pub fn is_sealed(text: &str) -> bool {
    split(text).is_some()
}

/// The key id and data of a sealed value.
fn split(sealed: &str) -> Option<(&str, &str)> {
    let rest = sealed.strip_prefix(FORMAT)?.strip_prefix('.')?;
    let (kid, data) = rest.split_once('.')?;
    (!kid.is_empty() && !data.is_empty()).then_some((kid, data))
}

fn load_one(
    name: &str,
    var: &impl Fn(&str) -> Option<String>,
    read: &impl Fn(&Path) -> std::io::Result<String>,
) -> Result<Option<DataKey>, KeyError> {
    let file_var = format!("{name}_FILE");
    let file = var(&file_var).filter(|v| !v.trim().is_empty());
    let value = var(name).filter(|v| !v.trim().is_empty());
    match (file, value) {
        (Some(_), Some(_)) => Err(KeyError::Invalid(format!(
            "set {file_var} or {name}, not both"
        ))),
        (Some(path), None) => {
            let text = read(Path::new(&path))
                .map_err(|e| KeyError::Invalid(format!("{file_var}: cannot read {path}: {e}")))?;
            DataKey::parse(&text, &format!("{file_var} ({path})")).map(Some)
        }
        (None, Some(text)) => DataKey::parse(&text, name).map(Some),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn key(byte: u8) -> DataKey {
        DataKey::from_bytes(&[byte; KEY_LEN])
    }

    fn text(byte: u8) -> String {
        STANDARD.encode([byte; KEY_LEN])
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let keys = DataKeys::new(key(1), None);
        let sealed = keys.seal(b"$argon2id$secret-hash", "user.credential:u1");
        assert!(
            sealed.starts_with(&format!("v1.{}.", key(1).id())),
            "{sealed}"
        );
        assert!(!sealed.contains("argon2"));
        assert_eq!(
            keys.open(&sealed, "user.credential:u1").unwrap(),
            b"$argon2id$secret-hash"
        );
        // Random nonces: the same plaintext seals differently each time.
        assert_ne!(
            sealed,
            keys.seal(b"$argon2id$secret-hash", "user.credential:u1")
        );
        assert_eq!(
            keys.open(&sealed, "user.credential:u2"),
            Err(SealError::Corrupt(key(1).id().to_string()))
        );
        let other = DataKeys::new(key(2), None);
        assert_eq!(
            other.open(&sealed, "user.credential:u1"),
            Err(SealError::UnknownKey(key(1).id().to_string()))
        );
        let mut altered = sealed.clone();
        let last = altered.pop().unwrap();
        altered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(matches!(
            keys.open(&altered, "user.credential:u1"),
            Err(SealError::Corrupt(_))
        ));
        assert_eq!(keys.open("$argon2id$clear", "x"), Err(SealError::NotSealed));
        assert!(!is_sealed("$argon2id$clear") && is_sealed(&sealed));
    }

    #[test]
    fn a_previous_key_still_opens_what_it_sealed() {
        let old = DataKeys::new(key(1), None);
        let sealed = old.seal(b"seed", "ctx");
        let rotated = DataKeys::new(key(2), Some(key(1)));
        assert_eq!(rotated.open(&sealed, "ctx").unwrap(), b"seed");
        assert!(!rotated.is_current(&sealed));
        let resealed = rotated.seal(b"seed", "ctx");
        assert!(rotated.is_current(&resealed));
        assert_eq!(
            DataKeys::new(key(2), None).open(&resealed, "ctx").unwrap(),
            b"seed"
        );
    }

    fn lookup(
        vars: &[(&str, &str)],
        files: &[(&str, &str)],
        name: &str,
    ) -> Result<DataKeys, KeyError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let files: HashMap<String, String> = files
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DataKeys::from_lookup(
            name,
            |var| vars.get(var).cloned(),
            |path| {
                files
                    .get(&path.display().to_string())
                    .cloned()
                    .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
            },
        )
    }

    #[test]
    fn keys_come_from_a_file_or_a_value_and_errors_name_the_variable() {
        let from_file = lookup(
            &[("USER_DATA_KEY_FILE", "/k/user-data.key")],
            &[("/k/user-data.key", &format!("{}\n", text(1)))],
            "USER_DATA_KEY",
        )
        .unwrap();
        assert_eq!(from_file.current().id(), key(1).id());
        assert!(from_file.previous().is_none());
        let with_previous = lookup(
            &[
                ("USER_DATA_KEY", &text(2)),
                ("USER_DATA_KEY_PREVIOUS", &text(1)),
            ],
            &[],
            "USER_DATA_KEY",
        )
        .unwrap();
        assert_eq!(with_previous.current().id(), key(2).id());
        assert_eq!(with_previous.previous().map(DataKey::id), Some(key(1).id()));

        let missing = lookup(&[], &[], "ORDER_DATA_KEY").unwrap_err();
        assert!(
            missing.to_string().contains("ORDER_DATA_KEY_FILE"),
            "{missing}"
        );
        let short = lookup(&[("USER_DATA_KEY", "c2hvcnQ=")], &[], "USER_DATA_KEY").unwrap_err();
        assert!(short.to_string().contains("5 bytes"), "{short}");
        let unreadable =
            lookup(&[("USER_DATA_KEY_FILE", "/nope")], &[], "USER_DATA_KEY").unwrap_err();
        assert!(unreadable.to_string().contains("/nope"), "{unreadable}");
        let both = lookup(
            &[("USER_DATA_KEY", &text(1)), ("USER_DATA_KEY_FILE", "/k")],
            &[],
            "USER_DATA_KEY",
        )
        .unwrap_err();
        assert!(both.to_string().contains("not both"), "{both}");
        let same = lookup(
            &[
                ("USER_DATA_KEY", &text(1)),
                ("USER_DATA_KEY_PREVIOUS", &text(1)),
            ],
            &[],
            "USER_DATA_KEY",
        )
        .unwrap_err();
        assert!(same.to_string().contains("same key"), "{same}");
        let bad = lookup(&[("USER_DATA_KEY", "%%%")], &[], "USER_DATA_KEY").unwrap_err();
        assert!(!bad.to_string().contains("%%%"), "{bad}");
    }

    #[test]
    fn debug_shows_only_key_ids() {
        let keys = DataKeys::new(key(7), Some(key(8)));
        let shown = format!("{keys:?}");
        assert!(shown.contains(key(7).id()), "{shown}");
        assert!(!shown.contains(&text(7)), "{shown}");
        assert_eq!(
            DataKey::parse(&DataKey::generate_text(), "x").map(|_| ()),
            Ok(())
        );
    }
}
