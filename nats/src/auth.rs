//! Who is calling: access tokens and the caller identity that travels with a request.
//!
//! - Tokens are compact JWS with EdDSA (Ed25519) signatures, issued by the user
//!   service. [`verify`] is pure (keys, token and the current time in, claims or
//!   an error out), so anyone holding the reply of `user.keys` (a [`Jwks`]) can
//!   check a token without calling the user service.
//! - [`Caller`] is the verified identity the gateway passes downstream in the
//!   headers [`USER_ID_HEADER`] and [`USER_ROLES_HEADER`]. A request without them
//!   is a trusted internal call (an operator, another service). Anyone who may
//!   publish on a service's subjects can set them, so NATS permissions are the
//!   trust boundary: only the gateway and the services should publish there.

use async_nats::HeaderMap;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The only algorithm issued and accepted.
pub const ALG: &str = "EdDSA";
/// Largest token [`verify`] looks at.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// How far in the future `iat` may be (clock skew between hosts), in seconds.
pub const MAX_CLOCK_SKEW_SECS: u64 = 60;

/// Header carrying the verified user id of the caller.
pub const USER_ID_HEADER: &str = "Shop-User-Id";
/// Header carrying the caller's roles, comma-separated.
pub const USER_ROLES_HEADER: &str = "Shop-User-Roles";
/// The role that may act on anyone's data.
pub const ADMIN_ROLE: &str = "admin";

/// What a token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    pub email: String,
    /// `customer`, `admin`.
    pub roles: Vec<String>,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds: refused from this second on.
    pub exp: u64,
}

/// One public key (RFC 8037 OKP key in JWK form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    /// The 32-byte public key, base64url without padding.
    pub x: String,
    pub kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

impl Jwk {
    /// The JWK of an Ed25519 public key, for signatures, under `kid`.
    pub fn ed25519(key: &VerifyingKey, kid: &str) -> Self {
        Self {
            kty: "OKP".to_string(),
            crv: "Ed25519".to_string(),
            x: URL_SAFE_NO_PAD.encode(key.to_bytes()),
            kid: kid.to_string(),
            alg: Some(ALG.to_string()),
            use_: Some("sig".to_string()),
        }
    }
}

/// The reply of `user.keys`: every key a valid token may be signed with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// The protected header of a token.
#[derive(Debug, Serialize, Deserialize)]
pub struct JwsHeader {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Extensions a verifier must understand; we understand none.
    #[serde(default, skip_serializing)]
    pub crit: Option<serde_json::Value>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token algorithm {0:?} is not accepted (only EdDSA)")]
    Algorithm(String),
    #[error("token is signed with an unknown key")]
    UnknownKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is issued in the future")]
    NotYetValid,
}

/// RFC 7638 thumbprint of an Ed25519 public key: base64url(SHA-256 of the
/// canonical `{"crv","kty","x"}` JSON).
pub fn thumbprint(key: &VerifyingKey) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(key.to_bytes())
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Checks `token` against `jwks` at time `now` (Unix seconds): the algorithm
/// must be EdDSA, the key id must name an Ed25519 key of `jwks`, the signature
/// must verify (strictly), `now` must be before `exp`, and `iat` no more than
/// [`MAX_CLOCK_SKEW_SECS`] ahead of `now`.
pub fn verify(jwks: &Jwks, token: &str, now: u64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("too long"));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("expected three dot-separated parts"));
    };
    let header: JwsHeader = decode_json(header_b64, "header")?;
    if header.alg != ALG {
        return Err(TokenError::Algorithm(header.alg));
    }
    if header.typ.as_deref().is_some_and(|t| t != "JWT") {
        return Err(TokenError::Malformed("typ is not JWT"));
    }
    if header.crit.is_some() {
        return Err(TokenError::Malformed("critical header extensions"));
    }
    let kid = header
        .kid
        .ok_or(TokenError::Malformed("header has no kid"))?;
    let jwk = jwks
        .keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or(TokenError::UnknownKey)?;
    if jwk.kty != "OKP" || jwk.crv != "Ed25519" || jwk.alg.as_deref().is_some_and(|a| a != ALG) {
        return Err(TokenError::UnknownKey);
    }
    let public: [u8; 32] = URL_SAFE_NO_PAD
        .decode(&jwk.x)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(TokenError::UnknownKey)?;
    let public = VerifyingKey::from_bytes(&public).map_err(|_| TokenError::UnknownKey)?;
    let signature: [u8; 64] = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(TokenError::Malformed("signature is not 64 base64url bytes"))?;
    let signed = &token[..header_b64.len() + 1 + claims_b64.len()];
    public
        .verify_strict(signed.as_bytes(), &Signature::from_bytes(&signature))
        .map_err(|_| TokenError::BadSignature)?;
    let claims: Claims = decode_json(claims_b64, "claims")?;
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    if claims.iat > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

fn decode_json<T: serde::de::DeserializeOwned>(
    part: &str,
    what: &'static str,
) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| {
        TokenError::Malformed(if what == "header" {
            "header is not base64url"
        } else {
            "claims are not base64url"
        })
    })?;
    serde_json::from_slice(&bytes).map_err(|_| {
        TokenError::Malformed(if what == "header" {
            "header is not the expected JSON"
        } else {
            "claims are not the expected JSON"
        })
    })
}

/// The verified identity a request is made on behalf of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub roles: Vec<String>,
}

impl Caller {
    /// The bearer of verified `claims`.
    pub fn from_claims(claims: &Claims) -> Self {
        Self {
            user_id: claims.sub.clone(),
            roles: claims.roles.clone(),
        }
    }

    /// Whether the caller may act on anyone's data.
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == ADMIN_ROLE)
    }

    /// Whether the caller is `user_id` or an admin.
    pub fn may_act_for(&self, user_id: &str) -> bool {
        self.user_id == user_id || self.is_admin()
    }

    /// The caller a message carries: `None` without a non-empty [`USER_ID_HEADER`].
    pub fn from_headers(headers: Option<&HeaderMap>) -> Option<Self> {
        let headers = headers?;
        let user_id = headers.get(USER_ID_HEADER)?.as_str().trim();
        if user_id.is_empty() {
            return None;
        }
        let roles = headers
            .get(USER_ROLES_HEADER)
            .map(|v| {
                v.as_str()
                    .split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Some(Self {
            user_id: user_id.to_string(),
            roles,
        })
    }

    /// Writes the caller into `headers` (replacing any caller already there).
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        headers.insert(USER_ID_HEADER, self.user_id.as_str());
        headers.insert(USER_ROLES_HEADER, self.roles.join(",").as_str());
    }

    /// The headers that carry this caller.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        self.insert_into(&mut headers);
        headers
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn claims() -> Claims {
        Claims {
            sub: "u1".into(),
            email: "ann@example.com".into(),
            roles: vec!["customer".into()],
            iat: NOW,
            exp: NOW + 3600,
        }
    }

    fn b64(value: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    /// A token signed by `key`, with the header `header`.
    fn sign(key: &SigningKey, header: &serde_json::Value, claims: &Claims) -> String {
        let signed = format!(
            "{}.{}",
            b64(header),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
        );
        let signature = key.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    fn keyset(key: &SigningKey) -> (Jwks, String) {
        let kid = thumbprint(&key.verifying_key());
        let jwks = Jwks {
            keys: vec![Jwk::ed25519(&key.verifying_key(), &kid)],
        };
        (jwks, kid)
    }

    #[test]
    fn verifies_a_token_signed_with_a_listed_key() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let (jwks, kid) = keyset(&key);
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
        let token = sign(&key, &header, &claims());
        assert_eq!(verify(&jwks, &token, NOW + 1), Ok(claims()));
        assert_eq!(verify(&jwks, &token, NOW + 3600), Err(TokenError::Expired));
        let other = sign(
            &SigningKey::from_bytes(&[8; 32]),
            &header,
            &Claims {
                roles: vec!["admin".into()],
                ..claims()
            },
        );
        assert_eq!(verify(&jwks, &other, NOW), Err(TokenError::BadSignature));
        let hs256 = serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": kid});
        assert_eq!(
            verify(&jwks, &sign(&key, &hs256, &claims()), NOW),
            Err(TokenError::Algorithm("HS256".into()))
        );
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        // RFC 8037 appendix A.3: thumbprint of the example Ed25519 key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        let key = VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
        assert_eq!(
            thumbprint(&key),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn caller_round_trips_through_headers() {
        let caller = Caller {
            user_id: "u1".into(),
            roles: vec!["customer".into(), "admin".into()],
        };
        let headers = caller.headers();
        assert_eq!(
            headers.get(USER_ROLES_HEADER).map(|v| v.as_str()),
            Some("customer,admin")
        );
        let back = Caller::from_headers(Some(&headers)).unwrap();
        assert_eq!(back, caller);
        assert!(back.is_admin());
        assert!(back.may_act_for("someone-else"));
    }

    #[test]
    fn no_user_id_means_no_caller() {
        assert_eq!(Caller::from_headers(None), None);
        assert_eq!(Caller::from_headers(Some(&HeaderMap::new())), None);
        let mut headers = HeaderMap::new();
        headers.insert(USER_ID_HEADER, " ");
        headers.insert(USER_ROLES_HEADER, "admin");
        assert_eq!(Caller::from_headers(Some(&headers)), None);
        let mut headers = HeaderMap::new();
        headers.insert(USER_ID_HEADER, "u2");
        let customer = Caller::from_headers(Some(&headers)).unwrap();
        assert!(customer.roles.is_empty());
        assert!(!customer.is_admin());
        assert!(customer.may_act_for("u2"));
        assert!(!customer.may_act_for("u3"));
    }
}
