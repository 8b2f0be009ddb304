//! The request contract through raw JSON, exactly what `nats req` sends.

mod common;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use common::{jwt_parts, Cluster};
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{json, Value};
use shop_nats::clock::now_secs;

/// Checks a token's signature by hand against the raw `user.keys` reply.
fn verify_by_hand(keys: &Value, token: &str) -> bool {
    let (header, _) = jwt_parts(token);
    let Some(jwk) = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
    else {
        return false;
    };
    let x: [u8; 32] = URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let key = VerifyingKey::from_bytes(&x).unwrap();
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let signature: [u8; 64] = URL_SAFE_NO_PAD
        .decode(signature)
        .unwrap()
        .try_into()
        .unwrap();
    key.verify_strict(signed.as_bytes(), &Signature::from_bytes(&signature))
        .is_ok()
}

#[tokio::test]
async fn register_login_get_update_keys() {
    let c = Cluster::start(1).await.unwrap();

    let registered = c
        .req(
            "user.register",
            json!({"email": "  Ann.Lee@Example.COM ", "password": "correct horse battery", "name": " Ann Lee "}),
        )
        .await;
    assert!(registered.is_ok(), "{:?}", registered.error);
    let user = registered.body.clone();
    let id = user["id"].as_str().expect("an id").to_string();
    assert_eq!(user["email"], "ann.lee@example.com");
    assert_eq!(user["name"], "Ann Lee");
    assert_eq!(user["roles"], json!(["customer"]));
    assert!(user["created_at"].as_str().unwrap().ends_with('Z'));
    let rev1 = user["revision"].as_u64().unwrap();
    assert!(rev1 > 0);
    let mut fields: Vec<&str> = user
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        ["created_at", "email", "id", "name", "revision", "roles"],
        "a profile never carries a credential"
    );

    let got = c.req("user.get", json!({"id": id})).await;
    assert_eq!(got.body, user);

    // Login normalizes the email the same way.
    let login = c
        .login("ANN.LEE@example.com ", "correct horse battery")
        .await;
    assert!(login.is_ok(), "{:?}", login.error);
    assert_eq!(login.body["token_type"], "Bearer");
    assert_eq!(login.body["user"], user);
    let token = login.body["token"].as_str().unwrap();
    let (header, claims) = jwt_parts(token);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["email"], "ann.lee@example.com");
    assert_eq!(claims["roles"], json!(["customer"]));
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert!(iat.abs_diff(now_secs()) < 30);
    assert_eq!(exp - iat, 3600, "default TOKEN_TTL_SECS");
    assert_eq!(login.body["expires_at"], exp);
    assert_eq!(claims["iss"], "shop/user");
    assert_eq!(claims["aud"], "shop");

    // The token reaches its own profile only; claimed headers reach nothing.
    let own = shop_nats::auth::bearer_headers(token);
    let mine = testkit::request_json_with_headers(
        &c.client,
        "user.get",
        own.clone(),
        json!({"id": id}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(mine.body, user);
    let other = c
        .register("zed@example.com", "correct horse battery", "Zed")
        .await;
    let other_id = other["id"].as_str().unwrap();
    for (subject, payload) in [
        ("user.get", json!({"id": other_id})),
        ("user.update", json!({"id": other_id, "name": "Hacked"})),
    ] {
        let refused = testkit::request_json_with_headers(
            &c.client,
            subject,
            own.clone(),
            payload.to_string(),
        )
        .await
        .unwrap();
        assert_eq!(
            refused.error_code,
            Some(404),
            "{subject}: {:?}",
            refused.error
        );
        let mut claimed = async_nats::HeaderMap::new();
        claimed.insert("Shop-User-Id", other_id);
        claimed.insert("Shop-User-Roles", "customer,admin");
        let refused =
            testkit::request_json_with_headers(&c.client, subject, claimed, payload.to_string())
                .await
                .unwrap();
        assert_eq!(
            refused.error_code,
            Some(401),
            "{subject}: {:?}",
            refused.error
        );
    }
    let zed = c.req("user.get", json!({"id": other_id})).await;
    assert_eq!(zed.body["name"], "Zed", "nothing changed");

    let keys = c.req_raw("user.keys", String::new()).await;
    assert!(keys.is_ok(), "{:?}", keys.error);
    let also_keys = c.req("user.keys", json!({})).await;
    assert_eq!(also_keys.body, keys.body);
    let jwk = &keys.body["keys"][0];
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert_eq!(jwk["alg"], "EdDSA");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["kid"], header["kid"]);
    assert!(jwk.get("d").is_none(), "never a private key");
    assert!(verify_by_hand(&keys.body, token), "signature verifies");
    let tampered = {
        let (_, rest) = token.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let admin = URL_SAFE_NO_PAD.encode(
            json!({"sub": id, "email": "ann.lee@example.com", "roles": ["admin"], "iat": iat, "exp": exp})
                .to_string(),
        );
        format!("{}.{admin}.{signature}", token.split('.').next().unwrap())
    };
    assert!(
        !verify_by_hand(&keys.body, &tampered),
        "altered claims fail"
    );
    // The crate's verifier (the one other services reuse) agrees.
    let jwks: user_service::token::Jwks = serde_json::from_value(keys.body.clone()).unwrap();
    let verified = user_service::token::verify(&jwks, token, now_secs()).unwrap();
    assert_eq!(verified.sub, id);
    assert!(user_service::token::verify(&jwks, &tampered, now_secs()).is_err());

    let updated = c
        .req(
            "user.update",
            json!({"id": id, "name": "Ann L.", "expected_revision": rev1}),
        )
        .await;
    assert!(updated.is_ok(), "{:?}", updated.error);
    assert_eq!(updated.body["name"], "Ann L.");
    assert_eq!(updated.body["email"], "ann.lee@example.com");
    assert_eq!(updated.body["roles"], json!(["customer"]));
    let rev2 = updated.body["revision"].as_u64().unwrap();
    assert!(rev2 > rev1);
    let got = c
        .req("user.get", json!({"id": id, "min_revision": rev2}))
        .await;
    assert_eq!(got.body, updated.body);

    let stale = c
        .req(
            "user.update",
            json!({"id": id, "name": "Nope", "expected_revision": rev1}),
        )
        .await;
    assert_eq!(stale.error_code, Some(409));
    assert!(stale.error.unwrap().contains("revision"));
    assert_eq!(stale.body["error"]["code"], 409);

    let same = c
        .req("user.update", json!({"id": id, "name": "Ann L."}))
        .await;
    assert!(same.is_ok());
    assert_eq!(same.body["revision"], rev2, "no change, no event");

    // A second update after the first: the profile subject's revision is tracked.
    let again = c.req("user.update", json!({"id": id, "name": "Ann"})).await;
    assert!(again.is_ok(), "{:?}", again.error);
    assert!(again.body["revision"].as_u64().unwrap() > rev2);

    let missing = c.req("user.get", json!({"id": "nobody"})).await;
    assert_eq!(missing.error_code, Some(404));
    assert_eq!(missing.body["error"]["message"], "user nobody not found");
    let missing = c
        .req("user.update", json!({"id": "nobody", "name": "X"}))
        .await;
    assert_eq!(missing.error_code, Some(404));
}

#[tokio::test]
async fn duplicates_and_wrong_credentials() {
    let c = Cluster::start(1).await.unwrap();
    let first = c.register("bob@example.com", "0123456789", "Bob").await;
    for email in ["bob@example.com", " BOB@Example.com", "Bob@EXAMPLE.COM\t"] {
        let dup = c
            .req(
                "user.register",
                json!({"email": email, "password": "another password", "name": "Bobby"}),
            )
            .await;
        assert_eq!(dup.error_code, Some(409), "{email:?}");
        assert_eq!(dup.error.as_deref(), Some("email is already registered"));
    }
    let got = c.req("user.get", json!({"id": first["id"]})).await;
    assert_eq!(got.body["name"], "Bob", "the first account is untouched");

    let wrong = c.login("bob@example.com", "9876543210").await;
    let unknown = c.login("nobody@example.com", "0123456789").await;
    for reply in [&wrong, &unknown] {
        assert_eq!(reply.error_code, Some(401));
        assert_eq!(reply.error.as_deref(), Some("invalid email or password"));
        assert_eq!(
            reply.body,
            json!({"error": {"code": 401, "message": "invalid email or password"}})
        );
    }
    assert!(c.login("bob@example.com", "0123456789").await.is_ok());
}

#[tokio::test]
async fn events_carry_no_credential_where_others_read() {
    let c = Cluster::start(1).await.unwrap();
    let password = "s3cret-Passw0rd!";
    let user = c.register("carol@example.com", password, "Carol").await;
    let id = user["id"].as_str().unwrap();
    c.req("user.update", json!({"id": id, "name": "Caroline"}))
        .await;

    let events = c.events().await;
    let registered: Vec<_> = events
        .iter()
        .filter(|e| e.subject.starts_with("events.user.registered."))
        .collect();
    assert_eq!(registered.len(), 1);
    let event = registered[0];
    let email_key = user_service::domain::email_key("carol@example.com");
    assert_eq!(event.subject, format!("events.user.registered.{email_key}"));
    assert_eq!(
        event.headers.get("Shop-Event-Type").map(|v| v.as_str()),
        Some("user.registered")
    );
    assert!(event.headers.get("traceparent").is_some());
    assert_eq!(
        event.json,
        json!({"type": "user.registered", "user": {
            "id": id, "email": "carol@example.com", "name": "Carol",
            "roles": ["customer"], "created_at": user["created_at"],
        }})
    );
    assert_eq!(event.sequence, user["revision"].as_u64().unwrap());

    let profile: Vec<_> = events
        .iter()
        .filter(|e| e.subject == format!("events.user.profile.{id}"))
        .collect();
    assert_eq!(profile.len(), 1);
    assert_eq!(profile[0].json["type"], "user.updated");
    assert_eq!(profile[0].json["user"]["name"], "Caroline");

    // The hash lives on the account's credential subject only, sealed with
    // the user data key; neither it nor the password is anywhere in clear.
    for e in &events {
        assert!(!e.raw.contains(password), "password in {}", e.subject);
        assert!(
            !e.raw.contains("$argon2"),
            "a hash in clear in {}",
            e.subject
        );
    }
    let credential = events
        .iter()
        .find(|e| e.subject.starts_with("events.user.credential."))
        .unwrap();
    assert_eq!(credential.json["type"], "user.credential_set");
    assert!(credential.json.get("password_hash").is_none());
    let sealed = credential.json["sealed_password_hash"].as_str().unwrap();
    let hash = c
        .data_keys()
        .open_text(sealed, &format!("user.credential:{id}"))
        .expect("sealed with the user data key for this account");
    assert!(hash.starts_with("$argon2id$"), "the real hash, sealed");
    assert!(!credential.raw.contains(&hash));

    // The signing key's seed is sealed in its bucket too.
    let js = async_nats::jetstream::new(c.client.clone());
    let kv = js.get_key_value("user_signing_keys").await.unwrap();
    let stored = kv.get("keyset").await.unwrap().unwrap();
    let set: user_service::keys::KeySet = serde_json::from_slice(&stored).unwrap();
    let seed = set.keys[0].signer(&c.data_keys()).unwrap().seed();
    let stored = String::from_utf8_lossy(&stored);
    assert!(!stored.contains(&URL_SAFE_NO_PAD.encode(seed)), "{stored}");
    assert!(!stored.contains(&base64::engine::general_purpose::STANDARD.encode(seed)));
    assert!(
        credential.sequence < event.sequence,
        "the credential is stored before the email is claimed"
    );
}

#[tokio::test]
async fn services_protocol_lists_every_endpoint() {
    let c = Cluster::start(1).await.unwrap();
    let info = c.client.request("$SRV.INFO.user", "".into()).await.unwrap();
    let info: Value = serde_json::from_slice(&info.payload).unwrap();
    assert_eq!(info["name"], "user");
    let mut subjects: Vec<&str> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "user.get",
            "user.keys",
            "user.login",
            "user.register",
            "user.update"
        ]
    );
}
