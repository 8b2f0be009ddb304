//! Access tokens: compact JWS with EdDSA (Ed25519) signatures, and the
//! JWKS-like key list that verifies them.
//!
//! [`verify`] is pure (keys, token and the current time in, claims or an error
//! out) so any service holding the output of `user.keys` can check a token
//! without calling the user service. This module depends only on
//! `ed25519-dalek`, `base64`, `sha2` and serde, so it can move to a shared crate.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The only algorithm issued and accepted.
pub const ALG: &str = "EdDSA";
/// Largest token [`verify`] looks at.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// How far in the future `iat` may be (clock skew between hosts), in seconds.
pub const MAX_CLOCK_SKEW_SECS: u64 = 60;

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

/// The reply of `user.keys`: every key a valid token may be signed with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    /// Extensions a verifier must understand; we understand none.
    #[serde(default, skip_serializing)]
    crit: Option<serde_json::Value>,
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

/// A private signing key and its key id.
#[derive(Clone)]
pub struct TokenSigner {
    kid: String,
    key: SigningKey,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// The key from its 32-byte secret seed; the key id is the RFC 7638 thumbprint.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let kid = thumbprint(&key.verifying_key());
        Self { kid, key }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn jwk(&self) -> Jwk {
        public_jwk(&self.key.verifying_key(), &self.kid)
    }

    /// A compact JWS of `claims`, with the header `{"alg":"EdDSA","typ":"JWT","kid":...}`.
    pub fn sign(&self, claims: &Claims) -> Result<String, serde_json::Error> {
        let header = Header {
            alg: ALG.to_string(),
            typ: Some("JWT".to_string()),
            kid: Some(self.kid.clone()),
            crit: None,
        };
        let mut token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?));
        let signature = self.key.sign(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        Ok(token)
    }
}

fn public_jwk(key: &VerifyingKey, kid: &str) -> Jwk {
    Jwk {
        kty: "OKP".to_string(),
        crv: "Ed25519".to_string(),
        x: URL_SAFE_NO_PAD.encode(key.to_bytes()),
        kid: kid.to_string(),
        alg: Some(ALG.to_string()),
        use_: Some("sig".to_string()),
    }
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
    let header: Header = decode_json(header_b64, "header")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn signer(byte: u8) -> TokenSigner {
        TokenSigner::from_seed(&[byte; 32])
    }

    fn claims() -> Claims {
        Claims {
            sub: "u1".into(),
            email: "ann@example.com".into(),
            roles: vec!["customer".into()],
            iat: NOW,
            exp: NOW + 3600,
        }
    }

    fn jwks(signers: &[&TokenSigner]) -> Jwks {
        Jwks {
            keys: signers.iter().map(|s| s.jwk()).collect(),
        }
    }

    fn b64(value: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    #[test]
    fn a_signed_token_verifies_and_carries_its_claims() {
        let key = signer(1);
        let token = key.sign(&claims()).unwrap();
        assert_eq!(verify(&jwks(&[&key]), &token, NOW + 10).unwrap(), claims());
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid()})
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
        assert_ne!(signer(1).kid(), signer(2).kid());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let key = signer(1);
        let token = key.sign(&claims()).unwrap();
        assert!(verify(&jwks(&[&key]), &token, NOW + 3599).is_ok());
        assert_eq!(
            verify(&jwks(&[&key]), &token, NOW + 3600),
            Err(TokenError::Expired)
        );
        let future = key
            .sign(&Claims {
                iat: NOW + 3000,
                ..claims()
            })
            .unwrap();
        assert_eq!(
            verify(&jwks(&[&key]), &future, NOW),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn forged_or_altered_tokens_are_refused() {
        let key = signer(1);
        let forger = TokenSigner {
            kid: key.kid().to_string(),
            key: SigningKey::from_bytes(&[9; 32]),
        };
        let forged = forger.sign(&claims()).unwrap();
        assert_eq!(
            verify(&jwks(&[&key]), &forged, NOW),
            Err(TokenError::BadSignature)
        );

        let token = key.sign(&claims()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let admin = b64(&serde_json::json!({
            "sub": "u1", "email": "ann@example.com", "roles": ["admin"], "iat": NOW, "exp": NOW + 3600
        }));
        let altered = format!("{}.{}.{}", parts[0], admin, parts[2]);
        assert_eq!(
            verify(&jwks(&[&key]), &altered, NOW),
            Err(TokenError::BadSignature)
        );
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            &format!("{}.{}.!!", parts[0], parts[1]),
            &format!("{}.{}.{}", parts[0], parts[1], &parts[2][..10]),
        ] {
            assert!(
                matches!(
                    verify(&jwks(&[&key]), bad, NOW),
                    Err(TokenError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn other_algorithms_are_refused() {
        let key = signer(1);
        let token = key.sign(&claims()).unwrap();
        let rest = token.split_once('.').unwrap().1;
        for alg in ["none", "HS256", "RS256", "ES256", "eddsa"] {
            let header = b64(&serde_json::json!({"alg": alg, "typ": "JWT", "kid": key.kid()}));
            assert_eq!(
                verify(&jwks(&[&key]), &format!("{header}.{rest}"), NOW),
                Err(TokenError::Algorithm(alg.into()))
            );
        }
        let unsigned = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none"})),
            rest.split_once('.').unwrap().0
        );
        assert!(verify(&jwks(&[&key]), &unsigned, NOW).is_err());
    }

    #[test]
    fn unknown_key_ids_are_refused() {
        let (old, new) = (signer(1), signer(2));
        let token = old.sign(&claims()).unwrap();
        assert_eq!(
            verify(&jwks(&[&new]), &token, NOW),
            Err(TokenError::UnknownKey)
        );
        assert!(verify(&jwks(&[&new, &old]), &token, NOW).is_ok());
        let mut wrong_curve = jwks(&[&old]);
        wrong_curve.keys[0].crv = "X25519".into();
        assert_eq!(
            verify(&wrong_curve, &token, NOW),
            Err(TokenError::UnknownKey)
        );
        // A key listed under the right kid but different bytes does not verify.
        let mut swapped = jwks(&[&new]);
        swapped.keys[0].kid = old.kid().to_string();
        assert_eq!(verify(&swapped, &token, NOW), Err(TokenError::BadSignature));
        let no_kid = format!(
            "{}.{}",
            b64(&serde_json::json!({"alg": "EdDSA", "typ": "JWT"})),
            token.split_once('.').unwrap().1
        );
        assert_eq!(
            verify(&jwks(&[&old]), &no_kid, NOW),
            Err(TokenError::Malformed("header has no kid"))
        );
    }

    #[test]
    fn jwks_serializes_as_jwk_set() {
        let key = signer(3);
        let json = serde_json::to_value(jwks(&[&key])).unwrap();
        let jwk = &json["keys"][0];
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], key.kid());
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(jwk["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
    }
}
