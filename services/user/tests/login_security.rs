//! Login hardening: repeated failures slowed down across instances, the same
//! answer in about the same time for unknown emails and wrong passwords, no
//! secret in any log line, and the admin account bootstrapped exactly once.

mod common;

use std::time::{Duration, Instant};

use common::{jwt_parts, Cluster};
use serde_json::json;
use testkit::Reply;

/// Logs in until the answer is not 429 (the lockout has passed), at most `limit`.
async fn login_when_unlocked(c: &Cluster, email: &str, password: &str, limit: Duration) -> Reply {
    let deadline = Instant::now() + limit;
    loop {
        let reply = c.login(email, password).await;
        if reply.error_code != Some(429) {
            return reply;
        }
        assert!(Instant::now() < deadline, "still locked after {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn repeated_failures_are_slowed_down_on_every_instance() {
    let c = Cluster::start_with_env(
        3,
        &[("LOGIN_MAX_FAILURES", "3"), ("LOGIN_LOCKOUT_SECS", "1")],
    )
    .await
    .unwrap();
    c.register("victim@example.com", "right password", "Victim")
        .await;
    c.register("bystander@example.com", "right password", "Bystander")
        .await;

    for _ in 0..3 {
        assert_eq!(
            c.login("victim@example.com", "wrong password")
                .await
                .error_code,
            Some(401)
        );
    }
    let third_failure = Instant::now();
    for password in ["wrong password", "right password"] {
        let locked = c.login("victim@example.com", password).await;
        assert_eq!(
            locked.error_code,
            Some(429),
            "{password}: {:?}",
            locked.error
        );
        assert_eq!(
            locked.error.as_deref(),
            Some("too many failed logins for this account; retry after 1 s")
        );
    }
    assert!(
        c.login("bystander@example.com", "right password")
            .await
            .is_ok(),
        "other accounts are not affected"
    );
    // An unknown email is treated exactly alike: nothing tells it apart.
    for _ in 0..3 {
        assert_eq!(
            c.login("ghost@example.com", "wrong password")
                .await
                .error_code,
            Some(401)
        );
    }
    assert_eq!(
        c.login("ghost@example.com", "wrong password")
            .await
            .error_code,
        Some(429)
    );

    // After the lockout, one more failure locks for twice as long.
    let unlocked = login_when_unlocked(
        &c,
        "victim@example.com",
        "wrong password",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        third_failure.elapsed() >= Duration::from_millis(900),
        "locked for about 1 s"
    );
    assert_eq!(unlocked.error_code, Some(401));
    let locked = c.login("victim@example.com", "right password").await;
    assert_eq!(
        locked.error.as_deref(),
        Some("too many failed logins for this account; retry after 2 s")
    );
    let fourth_failure = Instant::now();
    let ok = login_when_unlocked(
        &c,
        "victim@example.com",
        "right password",
        Duration::from_secs(5),
    )
    .await;
    assert!(ok.is_ok(), "{:?}", ok.error);
    assert!(
        fourth_failure.elapsed() >= Duration::from_millis(1800),
        "locked for about 2 s"
    );

    // A success clears the count.
    for _ in 0..2 {
        assert_eq!(
            c.login("victim@example.com", "wrong password")
                .await
                .error_code,
            Some(401)
        );
    }
    assert!(c
        .login("victim@example.com", "right password")
        .await
        .is_ok());

    let served = c.served_by_instance("user", "login").await.unwrap();
    assert!(
        served.iter().filter(|(_, n)| *n > 0).count() >= 2,
        "the count is shared by instances: {served:?}"
    );
}

#[tokio::test]
async fn a_burst_of_guesses_cannot_all_pass_the_check() {
    let c = Cluster::start_with_env(
        3,
        &[("LOGIN_MAX_FAILURES", "3"), ("LOGIN_LOCKOUT_SECS", "60")],
    )
    .await
    .unwrap();
    c.register("target@example.com", "right password", "Target")
        .await;
    // Twenty guesses sent at once, spread over three instances: each is counted
    // before its hash is checked, so no more than three are ever checked.
    let guesses = (0..20).map(|i| {
        let password = format!("guess number {i}");
        let c = &c;
        async move { c.login("target@example.com", &password).await }
    });
    let replies = futures::future::join_all(guesses).await;
    let checked = replies.iter().filter(|r| r.error_code == Some(401)).count();
    let refused = replies
        .iter()
        .filter(|r| matches!(r.error_code, Some(429) | Some(503)))
        .count();
    assert!(checked <= 3, "{checked} guesses were checked: {replies:?}");
    assert_eq!(
        checked + refused,
        20,
        "every guess is checked or refused: {replies:?}"
    );
    assert!(replies.iter().all(|r| !r.is_ok()));
    // The right password is refused too while the lockout lasts.
    assert_eq!(
        c.login("target@example.com", "right password")
            .await
            .error_code,
        Some(429)
    );
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test]
async fn unknown_email_and_wrong_password_take_the_same_time() {
    // Hashing must dominate a login for the comparison to mean anything: the
    // production defaults (argon2 is optimised even in test builds), and no lockout.
    let c = Cluster::start_with_env(
        1,
        &[
            ("ARGON2_MEMORY_KIB", "19456"),
            ("ARGON2_ITERATIONS", "2"),
            ("LOGIN_MAX_FAILURES", "100000"),
        ],
    )
    .await
    .unwrap();
    c.register("timed@example.com", "right password", "Timed")
        .await;

    let attempt = |email: &'static str| {
        let c = &c;
        async move {
            let started = Instant::now();
            let reply = c.login(email, "wrong password").await;
            assert_eq!(reply.error_code, Some(401));
            assert_eq!(reply.error.as_deref(), Some("invalid email or password"));
            started.elapsed()
        }
    };
    for _ in 0..2 {
        attempt("timed@example.com").await;
        attempt("nobody@example.com").await;
    }
    // Paired rounds (order alternating) so drift in machine load cancels out.
    let (mut all, mut differences) = (Vec::new(), Vec::new());
    for round in 0..16 {
        let (known, unknown) = if round % 2 == 0 {
            let known = attempt("timed@example.com").await;
            (known, attempt("nobody@example.com").await)
        } else {
            let unknown = attempt("nobody@example.com").await;
            (attempt("timed@example.com").await, unknown)
        };
        all.extend([known, unknown]);
        differences.push(known.as_secs_f64() - unknown.as_secs_f64());
    }
    differences.sort_by(f64::total_cmp);
    let difference = differences[differences.len() / 2].abs();
    let typical = median(all).as_secs_f64();
    eprintln!(
        "median login {:.1} ms; median of (wrong password - unknown email) {:.1} ms",
        typical * 1e3,
        difference * 1e3
    );
    assert!(
        typical >= 0.010,
        "a login must pay for a hash for this comparison to mean anything: {typical} s"
    );
    assert!(
        difference * 4.0 < typical,
        "wrong password and unknown email differ by {difference} s, more than a quarter of a login ({typical} s)"
    );
}

#[tokio::test]
async fn no_password_hash_or_token_in_any_log_line() {
    let admin_password = "admin-Secret-42!";
    let mut c = Cluster::start_with_env(
        1,
        &[
            ("RUST_LOG", "debug"),
            ("ADMIN_EMAIL", "root@example.com"),
            ("ADMIN_PASSWORD", admin_password),
        ],
    )
    .await
    .unwrap();
    c.instances[0]
        .wait_for_log("admin account created", Duration::from_secs(10))
        .await
        .unwrap();
    let password = "Tr0ub4dor&3-horse";
    c.register("eve@example.com", password, "Eve").await;
    let login = c.login("eve@example.com", password).await;
    assert!(login.is_ok());
    let token = login.body["token"].as_str().unwrap().to_string();
    let admin_login = c.login("root@example.com", admin_password).await;
    assert!(admin_login.is_ok());
    let admin_token = admin_login.body["token"].as_str().unwrap().to_string();
    assert_eq!(
        c.login("eve@example.com", "not-the-password-1")
            .await
            .error_code,
        Some(401)
    );
    assert_eq!(
        c.req(
            "user.register",
            json!({"email": "eve@example.com", "password": password, "name": "Eve"})
        )
        .await
        .error_code,
        Some(409)
    );
    assert_eq!(
        c.req(
            "user.register",
            json!({"email": "x@example.com", "password": "short-pw", "name": "X"})
        )
        .await
        .error_code,
        Some(400)
    );

    let mut instance = c.instances.remove(0);
    instance.sigterm().unwrap();
    assert!(instance
        .wait_exit(Duration::from_secs(15))
        .await
        .unwrap()
        .success());
    let logs = instance.logs();
    assert!(
        logs.iter().any(|l| l.contains("login succeeded")),
        "logs were captured"
    );
    assert!(
        logs.iter().any(|l| l.contains("\"level\":\"DEBUG\"")),
        "at debug level"
    );
    for line in &logs {
        for secret in [
            password,
            admin_password,
            "not-the-password-1",
            "short-pw",
            "$argon2",
            token.as_str(),
            admin_token.as_str(),
        ] {
            assert!(!line.contains(secret), "{secret:?} logged: {line}");
        }
    }
}

#[tokio::test]
async fn admin_is_bootstrapped_once_with_both_roles() {
    let env = [
        ("ADMIN_EMAIL", " Root@Example.com"),
        ("ADMIN_PASSWORD", "admin password 1"),
        ("ADMIN_NAME", "Shop Admin"),
    ];
    let mut c = Cluster::start(0).await.unwrap();
    // Two instances racing on an empty stream.
    let (a, b) = tokio::join!(
        c.spawn_instance("user-1", &env),
        c.spawn_instance("user-2", &env)
    );
    c.instances.push(a.unwrap());
    c.instances.push(b.unwrap());
    let mut outcomes = Vec::new();
    for instance in &c.instances {
        let line = instance
            .wait_for_log("\"admin account", Duration::from_secs(20))
            .await
            .unwrap();
        outcomes.push(line);
    }
    let created = outcomes
        .iter()
        .filter(|l| l.contains("admin account created"))
        .count();
    let present = outcomes
        .iter()
        .filter(|l| l.contains("admin account already present"))
        .count();
    assert_eq!((created, present), (1, 1), "{outcomes:?}");

    let login = c.login("root@example.com", "admin password 1").await;
    assert!(login.is_ok(), "{:?}", login.error);
    let mut roles: Vec<String> =
        serde_json::from_value(login.body["user"]["roles"].clone()).unwrap();
    roles.sort();
    assert_eq!(roles, ["admin", "customer"]);
    assert_eq!(login.body["user"]["name"], "Shop Admin");
    let (_, claims) = jwt_parts(login.body["token"].as_str().unwrap());
    let mut claimed: Vec<String> = serde_json::from_value(claims["roles"].clone()).unwrap();
    claimed.sort();
    assert_eq!(claimed, ["admin", "customer"]);

    // A third instance later finds it and writes nothing.
    let before = c.stream_last_sequence().await;
    c.add_instance("user-3", &env).await.unwrap();
    c.instances[2]
        .wait_for_log("admin account already present", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(c.stream_last_sequence().await, before);
    let key = user_service::domain::email_key("root@example.com");
    let claims: Vec<_> = c
        .events()
        .await
        .into_iter()
        .filter(|e| e.subject == format!("events.user.registered.{key}"))
        .collect();
    assert_eq!(claims.len(), 1, "one admin account");

    // Registering the admin's email through the API is refused like any other duplicate.
    let dup = c
        .req(
            "user.register",
            json!({"email": "root@example.com", "password": "0123456789", "name": "X"}),
        )
        .await;
    assert_eq!(dup.error_code, Some(409));
}
