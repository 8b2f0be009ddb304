//! The secrets of an auth directory: nkey seeds kept across runs, the
//! revocation list, data keys; every one written with mode 0600 in a
//! directory only its owner can enter.

use std::{
    collections::BTreeMap,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use nkeys::KeyPair;
use rand::RngCore;

/// The seeds under `<dir>/keys/`.
pub struct KeyDir {
    dir: PathBuf,
}

impl KeyDir {
    /// `<auth dir>/keys`, created (mode 0700) if absent.
    pub fn open(auth_dir: &Path) -> Result<Self> {
        let dir = auth_dir.join("keys");
        private_dir(&dir)?;
        private_dir(&dir.join("users"))?;
        Ok(Self { dir })
    }

    /// The operator's signing key.
    pub fn operator(&self) -> Result<KeyPair> {
        load_or_create(&self.dir.join("operator.nk"), KeyPair::new_operator)
    }

    /// The account every shop process connects in.
    pub fn account(&self) -> Result<KeyPair> {
        load_or_create(&self.dir.join("account.nk"), KeyPair::new_account)
    }

    /// The server's system account.
    pub fn system_account(&self) -> Result<KeyPair> {
        load_or_create(&self.dir.join("system-account.nk"), KeyPair::new_account)
    }

    /// The user key of `identity`: the stored one, or a new one when there is
    /// none or `rotate` is set; with the public key it replaced, if any.
    pub fn user(&self, identity: &str, rotate: bool) -> Result<(KeyPair, Option<String>)> {
        let path = self.dir.join("users").join(format!("{identity}.nk"));
        let old = match path.exists() {
            true => Some(read_seed(&path)?),
            false => None,
        };
        match (old, rotate) {
            (Some(key), false) => Ok((key, None)),
            (old, _) => {
                let key = KeyPair::new_user();
                write_secret(&path, seed(&key)?.as_bytes())?;
                Ok((key, old.map(|k| k.public_key())))
            }
        }
    }

    /// The operator JWT issued by an earlier run, if any.
    pub fn operator_jwt(&self) -> Result<Option<String>> {
        let path = self.dir.join("operator.jwt");
        match path.exists() {
            true => std::fs::read_to_string(&path)
                .map(|text| Some(text.trim().to_string()))
                .with_context(|| format!("reading {}", path.display())),
            false => Ok(None),
        }
    }

    pub fn save_operator_jwt(&self, jwt: &str) -> Result<()> {
        write_secret(&self.dir.join("operator.jwt"), jwt.as_bytes())
    }

    /// User public keys no longer accepted, with the second they were revoked.
    pub fn revocations(&self) -> Result<BTreeMap<String, i64>> {
        let path = self.dir.join("revocations.json");
        if !path.exists() {
            return Ok(BTreeMap::new());
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn save_revocations(&self, revocations: &BTreeMap<String, i64>) -> Result<()> {
        let text = serde_json::to_string_pretty(revocations).context("encoding revocations")?;
        write_secret(&self.dir.join("revocations.json"), text.as_bytes())
    }
}

fn seed(key: &KeyPair) -> Result<String> {
    key.seed()
        .map_err(|e| anyhow::anyhow!("reading a new key's seed: {e}"))
}

fn read_seed(path: &Path) -> Result<KeyPair> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    KeyPair::from_seed(text.trim())
        .map_err(|e| anyhow::anyhow!("{} holds no valid nkey seed: {e}", path.display()))
}

fn load_or_create(path: &Path, new: fn() -> KeyPair) -> Result<KeyPair> {
    if path.exists() {
        return read_seed(path);
    }
    let key = new();
    write_secret(path, seed(&key)?.as_bytes())?;
    Ok(key)
}

/// Creates `dir` (and its parents) if needed and makes it private (0700).
pub fn private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))
}

/// Writes `contents` to `path` with mode 0600, replacing it at once (a
/// temporary file renamed over it), so a reader never sees half a file.
pub fn write_secret(path: &Path, contents: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no file name", path.display()))?;
    let temporary = path.with_file_name(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))
}

/// A 32-byte random key, standard base64 on one line, written to `path`
/// unless it exists (data encrypted with it must stay readable). True when
/// it was created.
pub fn ensure_data_key(path: &Path) -> Result<bool> {
    if path.exists() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private", path.display()))?;
        return Ok(false);
    }
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    write_secret(path, format!("{}\n", STANDARD.encode(key)).as_bytes())?;
    Ok(true)
}

/// A `.creds` file as `nsc` writes it and `nats --creds` and async-nats read
/// it: the user JWT and the user's nkey seed between their markers.
pub fn creds(jwt: &str, user: &KeyPair) -> Result<String> {
    Ok(format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n",
        seed(user)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn keys_are_kept_private_and_reused_until_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::open(dir.path()).unwrap();
        assert_eq!(mode(&dir.path().join("keys")), 0o700);
        let operator = keys.operator().unwrap();
        assert_eq!(keys.operator().unwrap().public_key(), operator.public_key());
        assert_eq!(mode(&dir.path().join("keys/operator.nk")), 0o600);

        let (first, replaced) = keys.user("product", false).unwrap();
        assert_eq!(replaced, None);
        let (again, replaced) = keys.user("product", false).unwrap();
        assert_eq!(again.public_key(), first.public_key());
        assert_eq!(replaced, None);
        let (rotated, replaced) = keys.user("product", true).unwrap();
        assert_ne!(rotated.public_key(), first.public_key());
        assert_eq!(replaced, Some(first.public_key()));
    }

    #[test]
    fn a_data_key_is_32_random_bytes_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user-data.key");
        assert!(ensure_data_key(&path).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert_eq!(STANDARD.decode(text.trim()).unwrap().len(), 32);
        assert_eq!(mode(&path), 0o600);
        assert!(!ensure_data_key(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn creds_hold_the_jwt_and_the_seed_between_markers() {
        let user = KeyPair::new_user();
        let text = creds("eyJhbGc.eyJzdWI.c2ln", &user).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "-----BEGIN NATS USER JWT-----");
        assert_eq!(lines[1], "eyJhbGc.eyJzdWI.c2ln");
        assert_eq!(lines[2], "------END NATS USER JWT------");
        let seed_at = lines
            .iter()
            .position(|l| *l == "-----BEGIN USER NKEY SEED-----")
            .unwrap();
        assert_eq!(lines[seed_at + 1], user.seed().unwrap());
        assert_eq!(lines[seed_at + 2], "------END USER NKEY SEED------");
    }
}
