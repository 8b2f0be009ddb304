//! Every kind of bad token is refused with 401 at the gateway; a key rotation
//! is picked up at once (the gateway fetches the keys again when a token names
//! a key id it does not know).

mod common;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use common::Shop;
use serde_json::json;
use user_service::{
    keys::{KeySet, BUCKET, KEYSET},
    token::{Claims, TokenSigner, AUDIENCE, ISSUER},
};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The user service's current signing key, read from its bucket on the test's
/// server: tokens the gateway must trust, with any claims we like.
async fn real_signer(shop: &Shop) -> TokenSigner {
    let js = async_nats::jetstream::new(shop.client.clone());
    let kv = js.get_key_value(BUCKET).await.unwrap();
    let value = kv.get(KEYSET).await.unwrap().expect("key set");
    let keys: KeySet = serde_json::from_slice(&value).unwrap();
    keys.current()
        .unwrap()
        .signer(&shop.user_data_keys())
        .unwrap()
}

fn b64(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_and_rotation_is_followed() {
    let shop = Shop::start(&["user"], &[("GATEWAY_RATE_LIMIT_PER_SEC", "0")]).await;
    let http = &shop.http;
    let (user_id, token) = shop.customer("carol@example.com").await;
    let ok = http.get("/api/users/me", Some(&token)).await;
    assert_eq!(ok.status, 200, "{ok:?}");

    let signer = real_signer(&shop).await;
    let claims = |iat: u64, exp: u64| Claims {
        sub: user_id.clone(),
        email: "carol@example.com".into(),
        roles: vec!["customer".into()],
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        iat,
        exp,
    };
    let handmade = signer.sign(&claims(now(), now() + 600)).unwrap();
    assert_eq!(
        http.get("/api/users/me", Some(&handmade)).await.status,
        200,
        "a token signed with the real key is accepted"
    );
    let expired = signer.sign(&claims(now() - 600, now() - 1)).unwrap();
    let future = signer.sign(&claims(now() + 3_600, now() + 7_200)).unwrap();

    let forger = TokenSigner::from_seed(&[42; 32]);
    let parts: Vec<&str> = handmade.split('.').collect();
    // Claims signed by another key but claiming the real key id.
    let forged = {
        let other = forger.sign(&claims(now(), now() + 600)).unwrap();
        let other: Vec<&str> = other.split('.').collect();
        format!("{}.{}.{}", parts[0], parts[1], other[2])
    };
    // The real signature over other claims (an admin role added).
    let altered = format!(
        "{}.{}.{}",
        parts[0],
        b64(
            &json!({"sub": user_id, "email": "carol@example.com", "roles": ["customer", "admin"], "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 600})
        ),
        parts[2]
    );
    let kid = signer.kid().to_string();
    let wrong_alg = |alg: &str| {
        format!(
            "{}.{}.{}",
            b64(&json!({"alg": alg, "typ": "JWT", "kid": kid})),
            parts[1],
            parts[2]
        )
    };
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        parts[1]
    );
    let unknown_key = forger.sign(&claims(now(), now() + 600)).unwrap();

    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "missing bearer token"),
        ("not bearer", Some("Basic Y2Fyb2w6cHc=".into()), "Bearer"),
        ("empty", Some("Bearer    ".into()), "Bearer"),
        ("garbage", Some("Bearer not-a-token".into()), "malformed"),
        ("expired", Some(format!("Bearer {expired}")), "expired"),
        (
            "from the future",
            Some(format!("Bearer {future}")),
            "future",
        ),
        (
            "forged signature",
            Some(format!("Bearer {forged}")),
            "signature",
        ),
        (
            "altered claims",
            Some(format!("Bearer {altered}")),
            "signature",
        ),
        (
            "HS256",
            Some(format!("Bearer {}", wrong_alg("HS256"))),
            "algorithm",
        ),
        (
            "RS256",
            Some(format!("Bearer {}", wrong_alg("RS256"))),
            "algorithm",
        ),
        ("alg none", Some(format!("Bearer {unsigned}")), "algorithm"),
        (
            "unknown key",
            Some(format!("Bearer {unknown_key}")),
            "unknown key",
        ),
    ];
    for (what, authorization, expected) in &cases {
        let headers: Vec<(&str, &str)> = authorization
            .iter()
            .map(|a| ("authorization", a.as_str()))
            .collect();
        for path in ["/api/users/me", "/api/orders"] {
            let reply = http.send(hyper::Method::GET, path, &headers, None).await;
            assert_eq!(reply.status, 401, "{what} on {path}: {reply:?}");
            assert_eq!(reply.json["error"]["code"], 401);
            assert!(
                reply.message().contains(expected),
                "{what}: {:?} does not mention {expected:?}",
                reply.message()
            );
            assert!(
                reply
                    .header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{what}"
            );
        }
    }
    let metrics = shop.admin.get("/metrics", None).await;
    let text = std::str::from_utf8(&metrics.body).unwrap();
    for reason in [
        "expired",
        "bad_signature",
        "algorithm",
        "unknown_key",
        "malformed",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("shop_gateway_auth_failures_total")
                    && l.contains(&format!("reason=\"{reason}\""))),
            "{reason} counted:\n{text}"
        );
    }

    // Admin routes need the admin role, checked from the token.
    let not_admin = http
        .post(
            "/api/products",
            Some(&token),
            json!({"name": "x", "price_cents": 1, "currency": "USD", "stock": 1}),
        )
        .await;
    assert_eq!(not_admin.status, 403);

    // Rotation: the new key is unknown to the gateway until a token names it.
    let user_bin = testkit::workspace_bin("user-service").unwrap();
    let rotate = std::process::Command::new(&user_bin)
        .arg("rotate-keys")
        .env("NATS_URL", shop.nats.url())
        .env("USER_DATA_KEY_FILE", shop.data_key_file("user"))
        .envs(testkit::service_auth_env(&shop.nats.url(), &user_bin))
        .env("LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert!(rotate.status.success(), "{rotate:?}");
    let fresh = shop.login("carol@example.com", common::PASSWORD).await;
    assert_ne!(
        fresh.split('.').next(),
        token.split('.').next(),
        "signed with the new key"
    );
    let after_rotation = http.get("/api/users/me", Some(&fresh)).await;
    assert_eq!(after_rotation.status, 200, "{after_rotation:?}");
    let old = http.get("/api/users/me", Some(&token)).await;
    assert_eq!(old.status, 200, "tokens of the retired key stay valid");
    let health = shop.admin.get("/health", None).await;
    assert_eq!(
        health.json["checks"]["token_keys"]["kids"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{}",
        health.json
    );
}
