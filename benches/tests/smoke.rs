//! Smoke test of the harness: every scenario runs for about a second against
//! real processes (one nats-server and one set of services, whatever profile
//! the test is built with) and reports sane numbers; a scaling run goes from
//! one instance to two; the results survive a JSON round trip and render as
//! tables. It checks that the harness works, never how fast anything is.
//!
//! Needs the workspace's binaries next to the test's: `scripts/test.sh` builds
//! them (`cargo build --workspace --bins`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shop_bench::load::Model;
use shop_bench::results::{check_targets, ResultsFile, ScenarioResult, Settings};
use shop_bench::scenarios::{self, Options, Scenario, Target, ECHO_SUBJECT};
use shop_bench::stack::{JetStreamSync, Stack, StackConfig};
use shop_bench::suite::GATEWAY_CACHE_ENV;
use shop_bench::{report, scaling};
use shop_nats::Encoding;
use shop_process::workspace_root;

const SERVICES: [&str; 5] = ["product", "user", "payment", "notification", "order"];

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_shop-bench"))
        .parent()
        .expect("shop-bench has a directory")
        .to_path_buf()
}

fn require_binaries(config: &StackConfig, gateway: bool) {
    let mut needed: Vec<PathBuf> = SERVICES.iter().map(|s| config.service_bin(s)).collect();
    if gateway {
        needed.push(config.gateway_bin());
    }
    let missing: Vec<String> = needed
        .iter()
        .filter(|b| !b.exists())
        .map(|b| b.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "missing {}: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        missing.join(", ")
    );
}

fn short(model: Model) -> Options {
    Options {
        model,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        timeout: Duration::from_secs(5),
        products: 50,
        settle_timeout: Duration::from_secs(10),
        ..Options::default()
    }
}

fn target(stack: &Stack, http_url: Option<String>) -> Target {
    Target {
        http_url,
        ..stack.target(Some(1)).expect("nats")
    }
}

/// What is wrong with a point, beyond [`ScenarioResult::problems`].
fn check(r: &ScenarioResult, max_error_rate: f64) -> Vec<String> {
    let mut problems = r.problems(max_error_rate);
    if r.throughput_per_s <= 0.0 {
        problems.push(format!("{}: throughput {}", r.key, r.throughput_per_s));
    }
    if !r
        .cpu
        .iter()
        .any(|c| c.role == "load-generator" && c.cores > 0.0)
    {
        problems.push(format!(
            "{}: no CPU sampled for the load generator: {:?}",
            r.key, r.cpu
        ));
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_and_reports_sane_numbers() {
    let started = Instant::now();
    let logs = tempfile::tempdir().expect("temp dir");
    let config = StackConfig::new(bin_dir(), logs.path().to_path_buf());
    let with_gateway = workspace_root()
        .join("services/gateway/Cargo.toml")
        .exists();
    require_binaries(&config, with_gateway);

    let mut stack = Stack::new(config).expect("stack");
    stack
        .start_nats(JetStreamSync::Always)
        .await
        .expect("nats-server");
    for service in SERVICES {
        stack.start_service(service, &[]).await.expect(service);
    }
    stack.start_echo(ECHO_SUBJECT, 220).await.expect("echo");
    let gateway_url = if with_gateway {
        let base = stack
            .start_gateway("gateway", &[(GATEWAY_CACHE_ENV, "off")])
            .await
            .expect("gateway");
        Some(format!("{base}{}", scenarios::gateway_get::PRODUCT_PATH))
    } else {
        eprintln!("services/gateway is not in this workspace: gateway-get not smoke-tested");
        None
    };

    let closed = Model::Closed { in_flight: 8 };
    let mut points: Vec<(Scenario, Options, f64)> = vec![
        (Scenario::Echo, short(closed), 0.02),
        (Scenario::ProductGet, short(closed), 0.02),
        (
            Scenario::ProductGet,
            Options {
                encoding: Encoding::Bincode,
                ..short(Model::Open { rate: 200.0 })
            },
            0.02,
        ),
        (
            Scenario::ProductList,
            short(Model::Closed { in_flight: 4 }),
            0.02,
        ),
        (
            Scenario::StockContention,
            Options {
                contention_products: 2,
                ..short(closed)
            },
            0.02,
        ),
        (
            Scenario::OrderPlace,
            short(Model::Open { rate: 20.0 }),
            0.02,
        ),
        (Scenario::Mixed, short(Model::Open { rate: 60.0 }), 0.02),
    ];
    if gateway_url.is_some() {
        points.push((
            Scenario::GatewayGet,
            Options {
                variant: Some("uncached".into()),
                ..short(closed)
            },
            0.02,
        ));
    }

    let mut problems = Vec::new();
    let mut results = Vec::new();
    for (scenario, opts, max_error_rate) in &points {
        let t = target(&stack, gateway_url.clone());
        match scenarios::run(*scenario, &t, opts).await {
            Ok(r) => {
                eprintln!(
                    "{}: {:.0} ok/s, {} ok, {} errors, p50 {:?} ms",
                    r.key,
                    r.throughput_per_s,
                    r.ok,
                    r.errors,
                    r.latency_ms.map(|l| l.p50)
                );
                problems.extend(check(&r, *max_error_rate));
                results.push(r);
            }
            Err(e) => problems.push(format!("{}: {e:#}", scenario.name())),
        }
    }

    let contention = results
        .iter()
        .find(|r| r.scenario == "stock-contention")
        .expect("stock-contention ran");
    assert_eq!(contention.checks.len(), 3, "{:?}", contention.checks);

    // Little stock on two products: they run out within the second, so
    // refusals (409) are expected and the accounting is checked at its edge.
    let exhausted = scenarios::run(
        Scenario::StockContention,
        &target(&stack, None),
        &Options {
            contention_products: 2,
            contention_stock: 30,
            warmup: Duration::ZERO,
            ..short(closed)
        },
    )
    .await
    .expect("stock-contention until exhaustion");
    let failed: Vec<_> = exhausted.checks.iter().filter(|c| !c.passed).collect();
    assert!(failed.is_empty(), "{failed:?}");
    let (reserved, unknown) = (
        exhausted.extra["reserved_total"],
        exhausted.extra["unknown_outcome_total"],
    );
    assert!(
        reserved <= 60.0 && reserved + unknown >= 60.0,
        "60 units, {reserved} reserved, {unknown} unknown: {:?}",
        exhausted.checks
    );
    assert!(
        exhausted.extra["refused_409_total"] > 0.0,
        "60 units cannot cover a second of reserves: {:?}",
        exhausted.extra
    );
    let orders = results
        .iter()
        .find(|r| r.scenario == "order-place")
        .expect("order-place ran");
    assert!(
        orders.phases.iter().any(|p| p.latency_ms.is_some()),
        "order.create reply timed as a phase"
    );
    let mixed = results
        .iter()
        .find(|r| r.scenario == "mixed")
        .expect("mixed ran");
    assert!(
        mixed.ops.iter().any(|o| o.name == "product.get") && mixed.ops.len() >= 3,
        "per-operation figures: {:?}",
        mixed.ops
    );

    let scaled = scaling::run_on(
        &mut stack,
        &[(Scenario::ProductGet, short(closed))],
        &[1, 2],
        |what| eprintln!("{what}"),
    )
    .await;
    let scaled = match scaled {
        Ok(runs) => runs,
        Err(e) => {
            problems.push(format!("scaling: {e:#}"));
            Vec::new()
        }
    };
    if let Some(run) = scaled.first() {
        assert_eq!(run.points.len(), 2);
        assert_eq!(stack.count("product"), 2);
        for p in &run.points {
            assert!(
                p.throughput_per_s > 0.0 && p.efficiency.is_finite() && p.efficiency > 0.0,
                "{p:?}"
            );
        }
    }
    stack.stop().await;

    let mut file = ResultsFile {
        results,
        scaling: scaled,
        command: "smoke".to_string(),
        ..ResultsFile::new(Settings::default())
    };
    file.targets = check_targets(&file);
    let path = logs.path().join("results.json");
    file.write(&path).expect("write results");
    let back = ResultsFile::read(&path).expect("read results");
    let summary = |f: &ResultsFile| -> Vec<(String, u64, u64)> {
        f.results
            .iter()
            .map(|r| (r.key.clone(), r.ok, r.errors))
            .collect()
    };
    assert_eq!(summary(&back), summary(&file));
    assert_eq!(back.scaling.len(), file.scaling.len());
    let text = report::report_text(&file);
    for r in &file.results {
        assert!(
            text.contains(&r.scenario),
            "{} missing from:\n{text}",
            r.key
        );
    }
    let sections = report::sections(&file);
    assert!(
        sections["reads"].contains("product-get"),
        "{}",
        sections["reads"]
    );
    assert!(
        sections["scaling"].contains("efficiency"),
        "{}",
        sections["scaling"]
    );

    assert!(problems.is_empty(), "problems:\n{}", problems.join("\n"));
    eprintln!("smoke test took {:.1} s", started.elapsed().as_secs_f64());
}
