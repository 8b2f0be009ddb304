//! Who is calling: access tokens and the caller identity that travels with a request.
//!
//! - Tokens are compact JWS with EdDSA (Ed25519) signatures, issued by the user
//!   service. [`verify`] is pure (keys, token and the current time in, claims or
//!   an error out), so anyone holding the reply of `user.keys` (a [`Jwks`]) can
//!   check a token without calling the user service.
//! - Tokens carry `iss` [`ISSUER`] and `aud` [`AUDIENCE`], and live at most
//!   [`MAX_TOKEN_LIFETIME_SECS`]; [`verify`] refuses anything else.
//! - A request made on behalf of a user carries the user's token in the NATS
//!   header [`AUTHORIZATION_HEADER`] (`Bearer <token>`), as the gateway received
//!   it; the receiving service verifies it ([`crate::verifier`]). [`Caller`] is
//!   the identity a verified token proves: nothing else makes one, no header
//!   that merely claims a user counts.

use async_nats::HeaderMap;
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

/// Longest a token may live (`exp - iat`), in seconds: one day.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 24 * 3600;
/// The `iss` of every token: the user service.
pub const ISSUER: &str = "shop/user";
/// The `aud` of every token: the shop's services and gateway.
pub const AUDIENCE: &str = "shop";
/// The header (HTTP and NATS) carrying a user's token: `Bearer <token>`.
pub const AUTHORIZATION_HEADER: &str = "Authorization";
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
    /// Issuer: [`ISSUER`].
    #[serde(default)]
    pub iss: String,
    /// Audience: [`AUDIENCE`].
    #[serde(default)]
    pub aud: String,
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
    #[error("token is not for this shop: {0}")]
    WrongClaims(&'static str),
}

impl TokenError {
    /// A short label for metrics: `malformed`, `algorithm`, `unknown_key`,
    /// `bad_signature`, `expired`, `not_yet_valid`, `claims`.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "malformed",
            TokenError::Algorithm(_) => "algorithm",
            TokenError::UnknownKey => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::WrongClaims(_) => "claims",
        }
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
/// must verify (strictly), `now` must be before `exp`, `iat` no more than
/// [`MAX_CLOCK_SKEW_SECS`] ahead of `now`, `iss` and `aud` must be the shop's
/// and the lifetime at most [`MAX_TOKEN_LIFETIME_SECS`].
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
    if claims.iss != ISSUER {
        return Err(TokenError::WrongClaims("wrong issuer"));
    }
    if claims.aud != AUDIENCE {
        return Err(TokenError::WrongClaims("wrong audience"));
    }
    if claims.exp <= claims.iat || claims.exp - claims.iat > MAX_TOKEN_LIFETIME_SECS {
        return Err(TokenError::WrongClaims("lifetime over 24 h"));
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
}

/// A private signing key and its key id (the user service signs with the
/// keys it alone holds; tests sign with their own).
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

    /// A key that claims another key's id: a forger, for tests.
    pub fn claiming_kid(seed: &[u8; 32], kid: &str) -> Self {
        Self {
            kid: kid.to_string(),
            key: SigningKey::from_bytes(seed),
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The secret seed (for sealing it; never log it).
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn jwk(&self) -> Jwk {
        Jwk::ed25519(&self.key.verifying_key(), &self.kid)
    }

    /// A compact JWS of `claims`, with the header `{"alg":"EdDSA","typ":"JWT","kid":...}`.
    pub fn sign(&self, claims: &Claims) -> Result<String, serde_json::Error> {
        let header = JwsHeader {
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

/// What an `Authorization` value holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bearer<'a> {
    /// No header.
    None,
    /// `Bearer <token>`.
    Token(&'a str),
    /// Something else, with why it is refused.
    Invalid(&'static str),
}

/// Reads an `Authorization` value (`None` when the header is absent).
pub fn bearer(value: Option<&str>) -> Bearer<'_> {
    let Some(value) = value else {
        return Bearer::None;
    };
    match value.trim().split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            if token.is_empty() {
                Bearer::Invalid("empty bearer token")
            } else {
                Bearer::Token(token)
            }
        }
        _ => Bearer::Invalid("Authorization must be \"Bearer <token>\""),
    }
}

/// The NATS headers that carry `token` on a request made for its user.
pub fn bearer_headers(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION_HEADER, format!("Bearer {token}").as_str());
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn claims() -> Claims {
        Claims {
            sub: "u1".into(),
            email: "ann@example.com".into(),
            roles: vec!["customer".into()],
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
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
    fn issuer_audience_and_lifetime_are_checked() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let (jwks, kid) = keyset(&key);
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
        let with = |claims: Claims| verify(&jwks, &sign(&key, &header, &claims), NOW);
        assert_eq!(
            with(Claims {
                iss: "elsewhere".into(),
                ..claims()
            }),
            Err(TokenError::WrongClaims("wrong issuer"))
        );
        assert_eq!(
            with(Claims {
                aud: String::new(),
                ..claims()
            }),
            Err(TokenError::WrongClaims("wrong audience"))
        );
        assert_eq!(
            with(Claims {
                exp: NOW + MAX_TOKEN_LIFETIME_SECS + 1,
                ..claims()
            }),
            Err(TokenError::WrongClaims("lifetime over 24 h"))
        );
        assert!(with(Claims {
            exp: NOW + MAX_TOKEN_LIFETIME_SECS,
            ..claims()
        })
        .is_ok());
        assert_eq!(TokenError::WrongClaims("x").reason(), "claims");
    }

    #[test]
    fn callers_act_for_themselves_and_admins_for_anyone() {
        let customer = Caller::from_claims(&claims());
        assert_eq!(customer.user_id, "u1");
        assert!(!customer.is_admin());
        assert!(customer.may_act_for("u1") && !customer.may_act_for("u2"));
        let admin = Caller {
            user_id: "a".into(),
            roles: vec!["customer".into(), "admin".into()],
        };
        assert!(admin.is_admin() && admin.may_act_for("someone-else"));
    }

    #[test]
    fn reads_bearer_values() {
        assert_eq!(bearer(None), Bearer::None);
        assert_eq!(
            bearer(Some("Bearer abc.def.ghi")),
            Bearer::Token("abc.def.ghi")
        );
        assert_eq!(bearer(Some("bearer  abc")), Bearer::Token("abc"));
        assert!(matches!(
            bearer(Some("Basic dXNlcjpwdw==")),
            Bearer::Invalid(_)
        ));
        assert!(matches!(bearer(Some("Bearer ")), Bearer::Invalid(_)));
        assert!(matches!(bearer(Some("abc")), Bearer::Invalid(_)));
        let headers = bearer_headers("t.o.k");
        assert_eq!(
            bearer(headers.get(AUTHORIZATION_HEADER).map(|v| v.as_str())),
            Bearer::Token("t.o.k")
        );
    }
}
