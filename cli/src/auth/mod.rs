//! `shop auth init DIR [--rotate]` and `shop auth permissions`: the bus as the
//! security boundary, with every identity's permissions generated from the
//! services' declarations ([`crate::manifest::all`]).
//!
//! `init` writes into DIR (mode 0700):
//! - `nats-server.conf`, a complete server configuration that includes
//!   `auth.conf` (operator, system account, memory resolver with the account
//!   JWTs preloaded; a cluster's nodes include the same file);
//! - `<identity>.creds` for every service, the gateway and `operator`;
//! - `user-data.key` and `order-data.key` (32 random bytes, base64), made once;
//! - `keys/`: the operator, account and user nkey seeds and the revocation
//!   list, kept so that running `init` again re-issues the JWTs with the
//!   current permissions for the same identities. `--rotate` gives every user
//!   identity a new key and revokes the old one in the account JWT; a running
//!   server then needs `nats-server --signal reload` (or a restart).
//!
//! Every secret file is mode 0600; nothing secret is printed or logged.

pub mod jwt;
pub mod keys;
pub mod permissions;
pub mod server_config;

use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use nkeys::KeyPair;
use shop_nats::manifest::Manifest;

use crate::exit::{Failure, USAGE};
use keys::KeyDir;
use permissions::Identity;

/// The server configuration in an auth directory.
pub const SERVER_CONFIG: &str = "nats-server.conf";
/// The auth part of it, for cluster nodes to include.
pub const AUTH_INCLUDE: &str = "auth.conf";
/// The data keys an auth directory holds: (file, environment variable of the
/// service that reads it).
pub const DATA_KEYS: [(&str, &str, &str); 2] = [
    ("user", "user-data.key", "USER_DATA_KEY_FILE"),
    ("order", "order-data.key", "ORDER_DATA_KEY_FILE"),
];
const OPERATOR_NAME: &str = "shop";
const ACCOUNT_NAME: &str = "SHOP";
const SYSTEM_ACCOUNT_NAME: &str = "SYS";

/// `<dir>/<identity>.creds`.
pub fn creds_path(dir: &Path, identity: &str) -> PathBuf {
    dir.join(format!("{identity}.creds"))
}

/// What `init` did.
#[derive(Debug)]
pub struct Initialized {
    /// Every identity, in declaration order, `operator` last.
    pub identities: Vec<String>,
    /// User keys revoked by this run (`--rotate`).
    pub revoked: usize,
    /// Data keys created by this run (file names).
    pub new_data_keys: Vec<String>,
}

/// Writes (or refreshes) the auth directory `dir` for `manifest`.
pub fn init(dir: &Path, manifest: &Manifest, rotate: bool) -> Result<Initialized> {
    let identities = permissions::identities(manifest)
        .map_err(|e| anyhow::anyhow!("the declarations cannot be enforced: {e}"))?;
    keys::private_dir(dir)?;
    let keys = KeyDir::open(dir)?;
    let operator = keys.operator()?;
    let account = keys.account()?;
    let system = keys.system_account()?;
    let now = now()?;

    let mut revocations = keys.revocations()?;
    let mut users = Vec::new();
    let mut revoked = 0;
    for identity in &identities {
        let (user, replaced) = keys.user(&identity.name, rotate)?;
        if let Some(old) = replaced {
            revocations.insert(old, now);
            revoked += 1;
        }
        users.push((identity, user));
    }
    keys.save_revocations(&revocations)?;

    for (identity, user) in &users {
        let claims = jwt::user(identity, &user.public_key());
        let token = jwt::encode(claims, &account, now)
            .with_context(|| format!("issuing the JWT of {}", identity.name))?;
        keys::write_secret(
            &creds_path(dir, &identity.name),
            keys::creds(&token, user)?.as_bytes(),
        )?;
    }

    let operator_jwt = operator_jwt(&keys, &operator, &system.public_key(), now)?;
    let account_jwt = jwt::encode(
        jwt::account(ACCOUNT_NAME, &account.public_key(), true, &revocations),
        &operator,
        now,
    )?;
    let system_jwt = jwt::encode(
        jwt::account(
            SYSTEM_ACCOUNT_NAME,
            &system.public_key(),
            false,
            &Default::default(),
        ),
        &operator,
        now,
    )?;
    let auth = server_config::auth_block(
        &operator_jwt,
        &system.public_key(),
        &[
            (account.public_key(), account_jwt),
            (system.public_key(), system_jwt),
        ],
    );
    keys::write_secret(&dir.join(AUTH_INCLUDE), auth.as_bytes())?;
    keys::write_secret(
        &dir.join(SERVER_CONFIG),
        server_config::single_server(AUTH_INCLUDE).as_bytes(),
    )?;

    let mut new_data_keys = Vec::new();
    for (_, file, _) in DATA_KEYS {
        if keys::ensure_data_key(&dir.join(file))? {
            new_data_keys.push(file.to_string());
        }
    }
    Ok(Initialized {
        identities: identities.into_iter().map(|i| i.name).collect(),
        revoked,
        new_data_keys,
    })
}

/// The operator JWT: the one issued before while it still names this
/// operator and system account, since a running server cannot reload a
/// changed operator (`config reload not supported for TrustedOperators`).
fn operator_jwt(
    keys: &KeyDir,
    operator: &KeyPair,
    system_account: &str,
    now: i64,
) -> Result<String> {
    if let Some(kept) = keys.operator_jwt()? {
        let claims = jwt::decode(&kept)?;
        if claims["sub"] == operator.public_key().as_str()
            && claims["iss"] == operator.public_key().as_str()
            && claims["nats"]["system_account"] == system_account
        {
            return Ok(kept);
        }
    }
    let issued = jwt::encode(
        jwt::operator(OPERATOR_NAME, operator, system_account),
        operator,
        now,
    )?;
    keys.save_operator_jwt(&issued)?;
    Ok(issued)
}

fn now() -> Result<i64> {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    i64::try_from(seconds).context("the clock is past the year 292 billion")
}

fn system_identities() -> Result<(Manifest, Vec<Identity>), Failure> {
    let manifest = crate::manifest::all()
        .map_err(|e| Failure::new(USAGE, format!("invalid declaration: {e}")))?;
    let identities = permissions::identities(&manifest)
        .map_err(|e| Failure::new(USAGE, format!("the declarations cannot be enforced: {e}")))?;
    Ok((manifest, identities))
}

/// `shop auth init DIR [--rotate]`.
pub fn run_init(dir: &Path, rotate: bool) -> Result<(), Failure> {
    let (manifest, _) = system_identities()?;
    let done = init(dir, &manifest, rotate)
        .map_err(|e| Failure::new(USAGE, format!("shop auth init {}: {e:#}", dir.display())))?;
    println!(
        "shop auth: {} ready: {} and a .creds file for each of {}",
        dir.display(),
        SERVER_CONFIG,
        done.identities.join(", ")
    );
    for file in &done.new_data_keys {
        println!("shop auth: new data key {file}");
    }
    if done.revoked > 0 {
        println!(
            "shop auth: {} old identities revoked; a running server needs `nats-server --signal reload` (or a restart), and every process its new .creds",
            done.revoked
        );
    }
    println!(
        "shop auth: keep {} secret (seeds, operator.creds, data keys); start the server with\n  NATS_STORE_DIR=<store> nats-server -c {}",
        dir.display(),
        dir.join(SERVER_CONFIG).display()
    );
    Ok(())
}

/// `shop auth permissions [--markdown|--json]`.
pub fn run_permissions(markdown: bool, json: bool) -> Result<(), Failure> {
    let (_, identities) = system_identities()?;
    if markdown {
        print!("{}", permissions::markdown_table(&identities));
    } else if json {
        let text = serde_json::to_string_pretty(&identities)
            .map_err(|e| Failure::new(USAGE, format!("encoding the permissions: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", permissions::text(&identities));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_the_server_config_creds_and_keys_and_keeps_identities() {
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("auth");
        let manifest = crate::manifest::all().unwrap();
        let first = init(&auth, &manifest, false).unwrap();
        assert_eq!(first.revoked, 0);
        assert_eq!(first.new_data_keys.len(), 2);
        assert_eq!(first.identities.len(), manifest.services.len() + 1);
        for name in &first.identities {
            let text = std::fs::read_to_string(creds_path(&auth, name)).unwrap();
            assert!(
                text.starts_with("-----BEGIN NATS USER JWT-----\n"),
                "{name}"
            );
            // The JWT travels in the CONNECT line, with a signature and the
            // client's options: half the server's limit leaves room to grow.
            let jwt_len = text.lines().nth(1).unwrap().len();
            let limit = 16 * 1024; // server_config::MAX_CONTROL_LINE
            assert!(jwt_len < limit / 2, "{name}: JWT of {jwt_len} bytes");
        }
        let config = std::fs::read_to_string(auth.join(SERVER_CONFIG)).unwrap();
        assert!(config.contains("include auth.conf"));
        let included = std::fs::read_to_string(auth.join(AUTH_INCLUDE)).unwrap();
        assert!(included.contains("resolver: MEMORY"));
        assert!(included.contains("max_control_line: 16KB"), "{included}");

        let jwt_of = |name: &str| {
            let text = std::fs::read_to_string(creds_path(&auth, name)).unwrap();
            jwt::decode(text.lines().nth(1).unwrap()).unwrap()
        };
        let product = jwt_of("product");
        let operator_line = |text: &str| {
            text.lines()
                .find(|l| l.starts_with("operator: "))
                .map(str::to_string)
        };
        let before = operator_line(&included);
        let again = init(&auth, &manifest, false).unwrap();
        let included = std::fs::read_to_string(auth.join(AUTH_INCLUDE)).unwrap();
        assert_eq!(operator_line(&included), before, "a server can reload it");
        assert!(again.new_data_keys.is_empty());
        assert_eq!(jwt_of("product")["sub"], product["sub"], "same identity");

        let rotated = init(&auth, &manifest, true).unwrap();
        assert_eq!(rotated.revoked, 7);
        assert_ne!(jwt_of("product")["sub"], product["sub"], "new identity");
        let included = std::fs::read_to_string(auth.join(AUTH_INCLUDE)).unwrap();
        let account_jwt = included
            .lines()
            .filter(|l| l.starts_with("  "))
            .filter_map(|l| l.trim().split_once(": "))
            .map(|(_, jwt)| jwt::decode(jwt).unwrap())
            .find(|claims| claims["name"] == ACCOUNT_NAME)
            .unwrap();
        let old = product["sub"].as_str().unwrap();
        assert!(account_jwt["nats"]["revocations"].get(old).is_some());
    }

    /// `docs/security.md` must carry the generated table as it is now
    /// (regenerate with `scripts/docs-manifest.sh`).
    #[test]
    fn docs_security_carries_the_generated_permissions() {
        let (_, identities) = system_identities().unwrap();
        let block = crate::manifest::generated_block(
            "docs/security.md",
            "shop auth permissions --markdown",
        );
        assert_eq!(
            block.as_deref(),
            Some(permissions::markdown_table(&identities).trim()),
            "docs/security.md's permissions table is out of date: run scripts/docs-manifest.sh"
        );
    }
}
