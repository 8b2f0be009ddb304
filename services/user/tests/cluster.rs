//! Several instances on one queue group: shared work, one winner per email,
//! and one set of signing keys that survives restarts and rotations.

mod common;

use std::{process::Command, time::Duration};

use common::{jwt_parts, Cluster};
use serde_json::json;
use shop_nats::clock::now_secs;
use user_service::token::verify;

#[tokio::test]
async fn three_instances_share_work_and_read_their_writes() {
    let c = Cluster::start(3).await.unwrap();
    for i in 0..15 {
        let email = format!("shopper{i}@example.com");
        let user = c
            .register(&email, "0123456789", &format!("Shopper {i}"))
            .await;
        let revision = user["revision"].as_u64().unwrap();
        // Read at once through whichever instance takes it: never stale.
        let got = c
            .req(
                "user.get",
                json!({"id": user["id"], "min_revision": revision}),
            )
            .await;
        assert_eq!(got.body, user, "{email}: stale read");
        // Login sees every acknowledged registration, whichever instance answers.
        let login = c.login(&email, "0123456789").await;
        assert!(login.is_ok(), "{email}: {:?}", login.error);
        assert_eq!(login.body["user"]["id"], user["id"]);
    }
    for (endpoint, total) in [("register", 15), ("get", 15), ("login", 15)] {
        let served = c.served_by_instance("user", endpoint).await.unwrap();
        assert_eq!(
            served.iter().map(|(_, n)| n).sum::<u64>(),
            total,
            "{endpoint}"
        );
        assert!(
            served.iter().filter(|(_, n)| *n > 0).count() >= 2,
            "{endpoint} spread over instances: {served:?}"
        );
    }
    let gets = c.served_by_instance("user", "get").await.unwrap();
    let logins = c.served_by_instance("user", "login").await.unwrap();
    let registers = c.served_by_instance("user", "register").await.unwrap();
    for i in 0..3 {
        assert!(
            gets[i].1 + logins[i].1 + registers[i].1 > 0,
            "every instance took work: {gets:?} {logins:?} {registers:?}"
        );
    }
}

#[tokio::test]
async fn one_email_registered_concurrently_through_three_instances() {
    let c = Cluster::start(3).await.unwrap();
    const EMAILS: usize = 4;
    const ATTEMPTS: usize = 12;
    let mut tasks = Vec::new();
    for e in 0..EMAILS {
        for a in 0..ATTEMPTS {
            let client = c.client.clone();
            tasks.push(tokio::spawn(async move {
                // Differently written, the same address after normalization.
                let email = if a % 2 == 0 {
                    format!("race{e}@example.com")
                } else {
                    format!(" RACE{e}@Example.com")
                };
                let request = json!({"email": email, "password": format!("password-{a}-xyz"), "name": format!("Racer {a}")});
                let reply = testkit::request_json(&client, "user.register", request.to_string())
                    .await
                    .unwrap();
                (e, a, reply)
            }));
        }
    }
    let mut winners = vec![Vec::new(); EMAILS];
    for task in tasks {
        let (e, a, reply) = task.await.unwrap();
        match reply.error_code {
            None => winners[e].push((a, reply.body)),
            Some(409) => assert_eq!(reply.error.as_deref(), Some("email is already registered")),
            other => panic!(
                "race{e} attempt {a}: unexpected {other:?} {:?}",
                reply.error
            ),
        }
    }
    let events = c.events().await;
    for (e, won) in winners.iter().enumerate() {
        assert_eq!(
            won.len(),
            1,
            "race{e}: exactly one registration succeeds: {won:?}"
        );
        let (attempt, user) = &won[0];
        let key = user_service::domain::email_key(&format!("race{e}@example.com"));
        let claims: Vec<_> = events
            .iter()
            .filter(|ev| ev.subject == format!("events.user.registered.{key}"))
            .collect();
        assert_eq!(claims.len(), 1, "race{e}: one claim in the stream");
        assert_eq!(claims[0].json["user"]["id"], user["id"]);
        // The winner's password is the one that works, on any instance.
        for _ in 0..3 {
            let login = c
                .login(
                    &format!("race{e}@example.com"),
                    &format!("password-{attempt}-xyz"),
                )
                .await;
            assert!(login.is_ok(), "{:?}", login.error);
            assert_eq!(login.body["user"]["id"], user["id"]);
        }
    }
    // Losers that got past their instance's local check stored a credential
    // before losing the claim: proof that the stream, not a local lookup, decided.
    let credentials = events
        .iter()
        .filter(|ev| ev.subject.starts_with("events.user.credential."))
        .count();
    assert!(
        credentials > EMAILS,
        "concurrent claims reached the stream: {credentials} credentials for {EMAILS} accounts"
    );
    let served = c.served_by_instance("user", "register").await.unwrap();
    assert_eq!(
        served.iter().map(|(_, n)| n).sum::<u64>(),
        (EMAILS * ATTEMPTS) as u64
    );
    assert!(
        served.iter().all(|(_, n)| *n > 0),
        "every instance took part: {served:?}"
    );
}

fn rotate_keys(c: &Cluster) -> serde_json::Value {
    let output = Command::new(common::user_bin())
        .arg("rotate-keys")
        .env("NATS_URL", c.nats.url())
        .env("USER_DATA_KEY_FILE", c.data.path().join("user-data.key"))
        .envs(testkit::service_auth_env(
            &c.nats.url(),
            &common::user_bin(),
        ))
        .env("LOG_FORMAT", "json")
        .env("TOKEN_TTL_SECS", "3600")
        .output()
        .expect("running user-service rotate-keys");
    assert!(
        output.status.success(),
        "rotate-keys failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Log lines share stdout; the result is the line with `current`.
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|v| v.get("current").is_some())
        .expect("rotate-keys prints the new key set")
}

#[tokio::test]
async fn keys_are_shared_survive_restarts_and_rotate() {
    let mut c = Cluster::start(2).await.unwrap();
    c.register("dora@example.com", "0123456789", "Dora").await;

    let keys = c.keys().await;
    assert_eq!(keys.keys.len(), 1);
    let first_kid = keys.keys[0].kid.clone();
    for _ in 0..10 {
        assert_eq!(
            c.keys().await,
            keys,
            "every instance publishes the same keys"
        );
    }
    assert!(
        c.served_by_instance("user", "keys")
            .await
            .unwrap()
            .iter()
            .all(|(_, n)| *n > 0),
        "both instances answered user.keys"
    );
    let old_token = c.login("dora@example.com", "0123456789").await.body["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(jwt_parts(&old_token).0["kid"], first_kid.as_str());

    // Stop every instance, start them again: same keys, old tokens still verify.
    for instance in &mut c.instances {
        instance.sigterm().unwrap();
        assert!(instance
            .wait_exit(Duration::from_secs(15))
            .await
            .unwrap()
            .success());
    }
    for instance in &mut c.instances {
        instance.restart().await.unwrap();
    }
    let after_restart = c.keys().await;
    assert_eq!(after_restart, keys, "keys survive restarts");
    assert!(verify(&after_restart, &old_token, now_secs()).is_ok());
    let token = c.login("dora@example.com", "0123456789").await.body["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(jwt_parts(&token).0["kid"], first_kid.as_str());

    // Rotation: a new key signs, the old one stays published until its tokens expire.
    let rotated = rotate_keys(&c);
    let new_kid = rotated["current"].as_str().unwrap().to_string();
    assert_ne!(new_kid, first_kid);
    assert_eq!(rotated["keys"], json!([new_kid, first_kid]));
    let keys = c.keys().await;
    let kids: Vec<&str> = keys.keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, [new_kid.as_str(), first_kid.as_str()]);
    assert!(
        verify(&keys, &old_token, now_secs()).is_ok(),
        "old tokens keep working"
    );
    for _ in 0..6 {
        let token = c.login("dora@example.com", "0123456789").await.body["token"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            jwt_parts(&token).0["kid"],
            new_kid.as_str(),
            "every instance signs with the new key"
        );
        assert!(verify(&keys, &token, now_secs()).is_ok());
    }
    for _ in 0..6 {
        assert_eq!(c.keys().await, keys);
    }
}
