//! A short fuzz run against the whole system: every declared endpoint of all
//! five services gets random and mutated payloads from its request schema; no
//! reply may break the contract and no service may go down.

use std::{process::Command, time::Duration};

use shop_chaos::fuzz::{self, Plan, Target};
use shop_nats::manifest::Manifest;
use testkit::{request_json, workspace_bin, NatsServer, ServiceProcess};

const ADMIN_EMAIL: &str = "admin@shop.test";
const ADMIN_PASSWORD: &str = "admin-password-for-tests";

/// The admin's token (the account appears a moment after the user service is ready).
async fn admin_token(client: &async_nats::Client) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let login =
            shop_nats::login::login(client, ADMIN_EMAIL, ADMIN_PASSWORD, Duration::from_secs(10))
                .await;
        match login {
            Ok(token) => return token,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "admin login: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_survives_random_and_mutated_payloads() {
    let shop = workspace_bin("shop").unwrap();
    let out = Command::new(shop)
        .args(["manifest", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let manifest: Manifest = serde_json::from_slice(&out.stdout).unwrap();
    let targets = Target::all(&manifest);
    assert!(
        targets.len() >= 19,
        "every declared endpoint: {}",
        targets.len()
    );

    let nats = NatsServer::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut services = Vec::new();
    for service in ["product", "user", "payment", "notification", "order"] {
        let env: &[(&str, &str)] = match service {
            "user" => &[
                ("ARGON2_MEMORY_KIB", "1024"),
                ("ARGON2_ITERATIONS", "1"),
                ("ADMIN_EMAIL", ADMIN_EMAIL),
                ("ADMIN_PASSWORD", ADMIN_PASSWORD),
            ],
            _ => &[],
        };
        let bin = workspace_bin(&format!("{service}-service")).unwrap();
        let process =
            ServiceProcess::start(&bin, &nats.url(), service, &data.path().join(service), env)
                .await
                .unwrap();
        services.push(process);
    }
    let client = nats.client().await.unwrap();
    // FUZZ_REQUESTS / FUZZ_SEED make a longer or different run of the same test.
    let number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let requests = number("FUZZ_REQUESTS", 2_000);
    let plan = Plan {
        requests,
        seed: number("FUZZ_SEED", 20261201),
        concurrency: 8,
        timeout: Duration::from_secs(10),
        // As the admin: user and admin endpoints get past the access check
        // to the decoding and validation being fuzzed.
        headers: shop_nats::auth::bearer_headers(&admin_token(&client).await),
    };
    let report = fuzz::run(&client, &targets, &plan).await;
    println!("{}", report.summary());
    assert_eq!(report.sent, requests);
    assert!(
        report.findings.is_empty(),
        "{} findings, first: {:#?}",
        report.findings.len(),
        report.findings.iter().take(5).collect::<Vec<_>>()
    );
    // Bad input was refused, not silently accepted everywhere: 4xx were seen.
    let refused: u64 = report
        .outcomes
        .values()
        .flat_map(|o| o.iter())
        .filter(|(label, _)| label.starts_with('4'))
        .map(|(_, n)| n)
        .sum();
    assert!(refused > requests / 2, "{}", report.summary());
    // Every service is still up and answering.
    for service in ["product", "user", "payment", "notification", "order"] {
        let ping = request_json(&client, &format!("$SRV.PING.{service}"), "")
            .await
            .unwrap();
        assert_eq!(ping.body["name"], service);
    }
    drop(services);
}
