//! Access tokens. Signing, verification and the token types live in
//! [`shop_nats::auth`] (so the gateway and any service can check a token
//! without depending on this crate; tests sign their own) and are
//! re-exported here; the signing keys themselves live only in this service
//! ([`crate::keys`]).

pub use shop_nats::auth::{
    thumbprint, verify, Claims, Jwk, Jwks, JwsHeader, TokenError, TokenSigner, ALG, AUDIENCE,
    ISSUER, MAX_CLOCK_SKEW_SECS, MAX_TOKEN_LEN, MAX_TOKEN_LIFETIME_SECS,
};

#[cfg(test)]
mod tests {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

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
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
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
    fn each_key_has_its_own_kid() {
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
        let forger = TokenSigner::claiming_kid(&[9; 32], key.kid());
        let forged = forger.sign(&claims()).unwrap();
        assert_eq!(
            verify(&jwks(&[&key]), &forged, NOW),
            Err(TokenError::BadSignature)
        );

        let token = key.sign(&claims()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let admin = b64(&serde_json::json!({
            "sub": "u1", "email": "ann@example.com", "roles": ["admin"], "iss": ISSUER, "aud": AUDIENCE, "iat": NOW, "exp": NOW + 3600
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
