//! NATS JWTs (decentralized auth, version 2): operator, account and user
//! claims, signed with the issuer's nkey.
//!
//! A JWT is `base64url(header).base64url(claims).base64url(signature)`, no
//! padding; the header is `{"typ":"JWT","alg":"ed25519-nkey"}`; the signature
//! is Ed25519 by the issuer over the first two parts. Claims carry `jti` (a
//! hash of the claims), `iat`, `iss` (issuer public key), `sub` (subject
//! public key), `name` and `nats` (`type`, `version: 2` and the kind's fields).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use nkeys::KeyPair;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::permissions::Identity;

const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;
/// "No limit" in NATS JWT limits.
const NO_LIMIT: i64 = -1;

/// Signs `claims` (without `jti`, `iat`, `iss`) as `issuer`, issued at `iat`
/// (seconds since the epoch).
pub fn encode(mut claims: Value, issuer: &KeyPair, iat: i64) -> Result<String> {
    let object = claims
        .as_object_mut()
        .context("JWT claims must be a JSON object")?;
    object.insert("iat".into(), json!(iat));
    object.insert("iss".into(), json!(issuer.public_key()));
    object.insert("jti".into(), json!(""));
    let hash = Sha256::digest(serde_json::to_vec(&claims).context("encoding JWT claims")?);
    claims["jti"] = json!(data_encoding::BASE32_NOPAD.encode(&hash));
    let body = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).context("encoding JWT claims")?)
    );
    let signature = issuer
        .sign(body.as_bytes())
        .map_err(|e| anyhow::anyhow!("signing a JWT: {e}"))?;
    Ok(format!("{body}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// The claims of `jwt`, after checking its signature against its issuer
/// (`iss`). Whether the issuer is trusted is the caller's question.
pub fn decode(jwt: &str) -> Result<Value> {
    let mut parts = jwt.trim().split('.');
    let (Some(header), Some(body), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        anyhow::bail!("a JWT has three dot-separated parts");
    };
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(body)
            .context("JWT claims are not base64url")?,
    )
    .context("JWT claims are not JSON")?;
    let issuer = claims["iss"].as_str().context("JWT without an issuer")?;
    let key = KeyPair::from_public_key(issuer)
        .map_err(|e| anyhow::anyhow!("JWT issuer is not a public nkey: {e}"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .context("JWT signature is not base64url")?;
    key.verify(format!("{header}.{body}").as_bytes(), &signature)
        .map_err(|e| anyhow::anyhow!("JWT signature does not verify: {e}"))?;
    Ok(claims)
}

/// The operator: signs the accounts; names the system account.
pub fn operator(name: &str, operator: &KeyPair, system_account: &str) -> Value {
    json!({
        "name": name,
        "sub": operator.public_key(),
        "nats": {
            "system_account": system_account,
            "type": "operator",
            "version": 2,
        },
    })
}

/// An account, with JetStream on or off, and the user keys it no longer
/// accepts (public key → JWTs issued up to this second are refused).
pub fn account(
    name: &str,
    account: &str,
    jetstream: bool,
    revocations: &BTreeMap<String, i64>,
) -> Value {
    let storage = if jetstream { NO_LIMIT } else { 0 };
    let mut nats = json!({
        "limits": {
            "subs": NO_LIMIT, "data": NO_LIMIT, "payload": NO_LIMIT,
            "imports": NO_LIMIT, "exports": NO_LIMIT, "wildcards": true,
            "conn": NO_LIMIT, "leaf": NO_LIMIT,
            "mem_storage": storage, "disk_storage": storage,
            "streams": NO_LIMIT, "consumer": NO_LIMIT,
        },
        "default_permissions": { "pub": {}, "sub": {} },
        "type": "account",
        "version": 2,
    });
    if !revocations.is_empty() {
        nats["revocations"] = json!(revocations);
    }
    json!({ "name": name, "sub": account, "nats": nats })
}

/// A user of the account that signs it, with its identity's permissions
/// (none: everything).
pub fn user(identity: &Identity, user: &str) -> Value {
    let mut nats = json!({
        "subs": NO_LIMIT, "data": NO_LIMIT, "payload": NO_LIMIT,
        "type": "user",
        "version": 2,
    });
    if let Some(p) = &identity.permissions {
        nats["pub"] = json!({ "allow": p.publish });
        nats["sub"] = json!({ "allow": p.subscribe });
        if p.responses {
            // One reply per request received; the server's default expiry (2 min).
            nats["resp"] = json!({ "max": 1, "ttl": 0 });
        }
    }
    json!({
        "name": identity.name,
        "sub": user,
        "nats": nats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::permissions::Permissions;

    #[test]
    fn a_signed_jwt_decodes_and_verifies() {
        let operator_key = KeyPair::new_operator();
        let claims = operator("shop", &operator_key, "ABC");
        let jwt = encode(claims, &operator_key, 1_700_000_000).unwrap();
        let header = jwt.split('.').next().unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(header).unwrap(), HEADER.as_bytes());
        let decoded = decode(&jwt).unwrap();
        assert_eq!(decoded["iss"], operator_key.public_key());
        assert_eq!(decoded["sub"], operator_key.public_key());
        assert_eq!(decoded["iat"], 1_700_000_000);
        assert_eq!(decoded["nats"]["type"], "operator");
        assert_eq!(decoded["nats"]["version"], 2);
        assert_eq!(decoded["jti"].as_str().unwrap().len(), 52);

        let mut tampered: Vec<&str> = jwt.split('.').collect();
        let other = encode(json!({"name": "x"}), &operator_key, 1).unwrap();
        tampered[1] = other.split('.').nth(1).unwrap();
        assert!(decode(&tampered.join(".")).is_err());
    }

    #[test]
    fn accounts_carry_jetstream_and_revocations() {
        let revoked = BTreeMap::from([("UABC".to_string(), 42)]);
        let app = account("SHOP", "AAAA", true, &revoked);
        assert_eq!(app["nats"]["limits"]["disk_storage"], -1);
        assert_eq!(app["nats"]["revocations"]["UABC"], 42);
        let system = account("SYS", "ABBB", false, &BTreeMap::new());
        assert_eq!(system["nats"]["limits"]["disk_storage"], 0);
        assert!(system["nats"].get("revocations").is_none());
    }

    #[test]
    fn users_carry_their_permissions_or_none() {
        let mut p = Permissions::default();
        p.publish.insert("a.b".into());
        p.subscribe.insert("a.> a".into());
        p.responses = true;
        let limited = Identity {
            name: "a".into(),
            permissions: Some(p),
        };
        let claims = user(&limited, "UAAA");
        assert_eq!(claims["nats"]["pub"]["allow"], json!(["a.b"]));
        assert_eq!(claims["nats"]["sub"]["allow"], json!(["a.> a"]));
        assert_eq!(claims["nats"]["resp"]["max"], 1);
        let operator = Identity {
            name: "operator".into(),
            permissions: None,
        };
        let claims = user(&operator, "UBBB");
        assert!(claims["nats"].get("pub").is_none());
        assert!(claims["nats"].get("resp").is_none());
    }
}
