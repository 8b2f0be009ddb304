//! Smoke test: the suite with 1-second points, then stock-contention until products run out.
//! Needs the workspace's binaries (`scripts/test.sh` builds them).

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::ValueEnum;
use shop_bench::load::Model;
use shop_bench::scenarios::{self, from_flags, Options, Scenario};
use shop_bench::stack::{JetStreamSync, Stack, StackConfig};
use shop_bench::suite::{self, SuiteConfig};
use shop_bench::{report, results::ResultsFile};

fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_shop-bench")).parent();
    dir.expect("shop-bench has a directory").to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_and_reports_sane_numbers() {
    let started = Instant::now();
    let logs = tempfile::tempdir().expect("temp dir");
    let stack = StackConfig::new(bin_dir(), logs.path().to_path_buf());
    let services = Scenario::OrderPlace.services().iter();
    let mut needed: Vec<PathBuf> = services.map(|s| stack.service_bin(s)).collect();
    needed.push(stack.gateway_bin());
    let missing: Vec<_> = needed.iter().filter(|b| !b.exists()).collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}: run `cargo build --workspace --bins` first (scripts/test.sh does)"
    );

    let flags = "--duration 1s --warmup 200ms --rounds 1 --read-rate 200 --mixed-rate 60 \
                 --order-rates 20 --instances 1,2 --no-wrk";
    let config: SuiteConfig = from_flags(flags).expect("flags");
    let (file, failures) = suite::run(&config, &stack).await.expect("suite");
    assert!(failures.is_empty(), "{failures:#?}");
    for scenario in Scenario::value_variants() {
        let ran = file.results.iter().any(|r| r.scenario == scenario.name());
        assert!(ran, "{} did not run: {:#?}", scenario.name(), file.notes);
    }
    for r in &file.results {
        let (key, rate, ok, errors) = (&r.key, r.throughput_per_s, r.ok, r.errors);
        eprintln!("{key}: {rate:.0} ok/s, {ok} ok, {errors} errors");
        let problems = r.problems(0.02);
        assert!(problems.is_empty() && rate > 0.0, "{problems:?}");
        let generator = r.cpu.iter().find(|c| c.role == "load-generator");
        let busy = generator.is_some_and(|c| c.cores > 0.0);
        assert!(busy, "{key}: {:?}", r.cpu);
    }
    let of = |scenario: &str| file.results.iter().find(|r| r.scenario == scenario);
    let contention = of("stock-contention").expect("stock-contention ran");
    assert_eq!(contention.checks.len(), 5, "{:?}", contention.checks);
    let orders = of("order-place").expect("order-place ran");
    let timed = orders.phases.iter().any(|p| p.latency_ms.is_some());
    assert!(timed, "order.create reply timed as a phase");
    // Every order appends to ORDER at least once (created) in the window.
    let order_appends = orders.appends_per_s.get("ORDER").copied().unwrap_or(0.0);
    assert!(
        order_appends >= orders.throughput_per_s,
        "ORDER appends {order_appends}/s for {} orders/s: {:?}",
        orders.throughput_per_s,
        orders.appends_per_s
    );
    let mixed = of("mixed").expect("mixed ran");
    let ops = &mixed.ops;
    let has_get = ops.iter().any(|o| o.name == "product.get");
    assert!(has_get && ops.len() >= 3, "{ops:?}");
    assert_eq!(file.scaling.len(), 2, "product-get and product-list");
    for p in file.scaling.iter().flat_map(|run| &run.points) {
        let sane = p.throughput_per_s > 0.0 && p.efficiency.is_finite() && p.efficiency > 0.0;
        assert!(sane, "{p:?}");
    }

    let path = logs.path().join("results.json");
    file.write(&path).expect("write results");
    let back = ResultsFile::read(&path).expect("read results");
    let summary = |f: &ResultsFile| {
        let points = f.results.iter().map(|r| (r.key.clone(), r.ok, r.errors));
        (points.collect::<Vec<_>>(), f.scaling.len())
    };
    assert_eq!(summary(&back), summary(&file));
    let text = report::report_text(&file);
    for r in &file.results {
        assert!(text.contains(&r.key), "{} missing from:\n{text}", r.key);
    }
    let sections = report::sections(&file);
    for (name, word) in [("reads", "product-get"), ("scaling", "efficiency")] {
        assert!(sections[name].contains(word), "{}", sections[name]);
    }

    exhausted_stock_is_accounted_for(&stack).await;
    eprintln!("smoke test took {:.1} s", started.elapsed().as_secs_f64());
}

/// Little stock on two products: they run out within the second, so refusals (409).
async fn exhausted_stock_is_accounted_for(config: &StackConfig) {
    let mut config = config.clone();
    config.logs_dir = config.logs_dir.join("exhausted");
    let mut stack = Stack::new(config).expect("stack");
    let nats = stack.start_nats(JetStreamSync::Always).await;
    nats.expect("nats-server");
    stack.start_service("product", &[]).await.expect("product");
    let flags = "--duration 1s --warmup 0s --contention-products 2 --stock 30";
    let opts: Options = from_flags(flags).expect("flags");
    let opts = opts.with_model(Model::Closed { in_flight: 8 });
    let target = stack.target(Some(1)).expect("nats");
    let outcome = scenarios::run(Scenario::StockContention, &target, &opts).await;
    stack.stop().await;
    let r = outcome.expect("stock-contention until exhaustion");
    let failed: Vec<_> = r.checks.iter().filter(|c| !c.passed).collect();
    assert!(failed.is_empty(), "{failed:?}");
    let (reserved, unknown) = (r.extra["reserved_total"], r.extra["unknown_outcome_total"]);
    assert!(
        reserved <= 60.0 && reserved + unknown >= 60.0,
        "60 units, {reserved} reserved, {unknown} unknown: {:?}",
        r.checks
    );
    let refused = r.extra["refused_409_total"];
    assert!(
        refused > 0.0,
        "60 units cannot cover a second of reserves: {:?}",
        r.extra
    );
}
