//! The short chaos run: the whole shop with 3 instances of every service,
//! 300 orders (declines, out-of-stock lines, user cancels, creates sent twice
//! with one key) while random instances are killed with SIGKILL every 3–6 s
//! and nats-server is killed twice; then every invariant, checked from the
//! streams, must hold. (The checker itself is shown to catch each kind of
//! violation by the unit tests in `src/invariants.rs`.)
//!
//! CHAOS_ORDERS / CHAOS_SEED / CHAOS_RATE make a longer or different run of
//! the same test; `shop-bench chaos` is the bench's.

use shop_chaos::run::{run, Config};

fn number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invariant_holds_through_kills_and_nats_restarts() {
    let config = Config {
        seed: number("CHAOS_SEED", 20261202),
        orders: number("CHAOS_ORDERS", 300),
        rate: number("CHAOS_RATE", 10.0),
        settle_secs: 150,
        ..Config::default()
    };
    let summary = run(&config).await.expect("the chaos run");
    println!("{}", summary.markdown());
    assert!(summary.settled, "every order final in time");
    assert!(
        summary.passed(),
        "invariants violated:\n{}",
        summary.markdown()
    );
    // The run did what it says: faults happened, orders of every kind went through.
    assert_eq!(summary.faults.nats_restarts, 2);
    assert!(summary.faults.kills.values().sum::<usize>() >= 2);
    assert!(summary.acknowledged >= config.orders * 9 / 10);
    assert!(summary.retried_same_key > 0 && summary.cancels > 0);
    for outcome in [
        "confirmed",
        "cancelled/payment_declined",
        "cancelled/out_of_stock",
    ] {
        assert!(
            summary.outcomes.get(outcome).copied().unwrap_or(0) > 0,
            "no {outcome} order: {:?}",
            summary.outcomes
        );
    }
}
