//! The targets, checked against one results file (figures from one run).

use crate::load::Model;
use crate::results::{ResultsFile, ScenarioResult, TargetCheck};
use crate::table::{fmt_ms, fmt_rate};

/// product-get at 64 in flight: at least this share of echo's requests per second.
pub const PRODUCT_GET_VS_ECHO: f64 = 0.60;
/// gateway-get uncached: at least this many times the Express gateway.
pub const GATEWAY_VS_EXPRESS: f64 = 10.0;
/// Issue 6: the uncached gateway's p99 at 64 connections, in ms.
pub const GATEWAY_P99_MS: f64 = 10.0;
/// order-place: this many orders per second, sustained ...
pub const ORDER_RATE: f64 = 500.0;
/// ... with p99 time-to-confirmed under this (ms).
pub const ORDER_P99_MS: f64 = 250.0;
/// "Sustained": at least this share of the offered rate confirmed, and at most
/// this share of orders failed or unsettled.
const SUSTAINED_SHARE: f64 = 0.98;
const MAX_ORDER_ERRORS: f64 = 0.001;

fn find<'a>(
    file: &'a ResultsFile,
    scenario: &str,
    variant: &str,
    model: Model,
) -> Option<&'a ScenarioResult> {
    file.results.iter().find(|r| {
        r.scenario == scenario && r.variant.as_deref() == Some(variant) && r.model == model
    })
}

fn ratio_check(
    name: &str,
    target: String,
    num: Option<&ScenarioResult>,
    den: Option<&ScenarioResult>,
    at_least: f64,
    percent: bool,
) -> TargetCheck {
    match (num, den) {
        (Some(n), Some(d)) if d.throughput_per_s > 0.0 => {
            let ratio = n.throughput_per_s / d.throughput_per_s;
            TargetCheck {
                name: name.to_string(),
                target,
                measured: format!(
                    "{} ({} vs {} ok/s)",
                    if percent {
                        format!("{:.0}%", ratio * 100.0)
                    } else {
                        format!("{ratio:.1}×")
                    },
                    fmt_rate(n.throughput_per_s),
                    fmt_rate(d.throughput_per_s)
                ),
                met: Some(ratio >= at_least && n.errors == 0),
            }
        }
        _ => TargetCheck {
            name: name.to_string(),
            target,
            measured: "-".to_string(),
            met: None,
        },
    }
}

/// The uncached gateway's p99 at 64 connections, against [`GATEWAY_P99_MS`].
fn gateway_p99_check(uncached: Option<&ScenarioResult>) -> TargetCheck {
    let p99 = uncached.and_then(|r| r.latency_ms.map(|l| l.p99));
    TargetCheck {
        name: "gateway-get uncached p99 (64 connections)".to_string(),
        target: format!("< {GATEWAY_P99_MS:.0} ms"),
        measured: p99.map_or_else(|| "-".to_string(), |p| format!("{p:.2} ms")),
        met: p99.map(|p| p < GATEWAY_P99_MS),
    }
}

/// Every target, measured or not.
pub fn check(file: &ResultsFile) -> Vec<TargetCheck> {
    let c64 = Model::Closed { in_flight: 64 };
    let echo = file
        .results
        .iter()
        .find(|r| r.scenario == "echo" && r.model == c64);
    let mut checks = vec![
        ratio_check(
            "product-get vs echo (64 in flight)",
            format!("≥ {:.0}% of echo", PRODUCT_GET_VS_ECHO * 100.0),
            find(file, "product-get", "json", c64),
            echo,
            PRODUCT_GET_VS_ECHO,
            true,
        ),
        // The stack the target names: express-http-proxy as such guides set
        // it up (a new upstream connection per request).
        ratio_check(
            "gateway-get uncached vs Express (express-http-proxy defaults)",
            format!("≥ {GATEWAY_VS_EXPRESS:.0}× Express + express-http-proxy"),
            find(file, "gateway-get", "uncached", c64),
            find(file, "gateway-get", "express", c64),
            GATEWAY_VS_EXPRESS,
            false,
        ),
        // The same stack tuned with keep-alive upstream connections, so the
        // ratio is also shown against the stronger configuration.
        ratio_check(
            "gateway-get uncached vs Express (keep-alive upstream)",
            format!("≥ {GATEWAY_VS_EXPRESS:.0}× tuned Express + express-http-proxy"),
            find(file, "gateway-get", "uncached", c64),
            find(file, "gateway-get", "express-keepalive", c64),
            GATEWAY_VS_EXPRESS,
            false,
        ),
        gateway_p99_check(find(file, "gateway-get", "uncached", c64)),
    ];
    let orders: Vec<&ScenarioResult> = file
        .results
        .iter()
        .filter(|r| r.scenario == "order-place" && r.model == Model::Open { rate: ORDER_RATE })
        .collect();
    let wanted = format!("{ORDER_RATE:.0}/s sustained, p99 to confirmed < {ORDER_P99_MS:.0} ms");
    if orders.is_empty() {
        checks.push(TargetCheck {
            name: "order-place".to_string(),
            target: wanted.clone(),
            measured: "-".to_string(),
            met: None,
        });
    }
    for r in orders {
        let p99 = r.latency_ms.map(|l| l.p99);
        let met = r.throughput_per_s >= ORDER_RATE * SUSTAINED_SHARE
            && r.error_rate() <= MAX_ORDER_ERRORS
            && p99.is_some_and(|p| p < ORDER_P99_MS);
        checks.push(TargetCheck {
            name: format!(
                "order-place ({})",
                r.nats_sync
                    .as_deref()
                    .map(|s| format!("sync {s}"))
                    .or_else(|| r.variant.clone())
                    .unwrap_or_default()
            ),
            target: wanted.clone(),
            measured: format!(
                "{}/s confirmed, p99 {} ms, {} failed or unsettled",
                fmt_rate(r.throughput_per_s),
                p99.map_or("-".to_string(), fmt_ms),
                r.errors
            ),
            met: Some(met),
        });
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::run_stats;
    use crate::results::{Meta, SCHEMA};

    fn point(
        scenario: &str,
        variant: Option<&str>,
        model: Model,
        rps: f64,
        p99_us: u64,
    ) -> ScenarioResult {
        let mut r = ScenarioResult::from_runs(
            Meta::new(scenario, variant, "x"),
            &[run_stats(model, &[("op", p99_us)], 0)],
            Vec::new(),
        )
        .unwrap();
        r.throughput_per_s = rps;
        r
    }

    #[test]
    fn targets_from_one_file() {
        let c64 = Model::Closed { in_flight: 64 };
        let r500 = Model::Open { rate: 500.0 };
        let file = ResultsFile {
            schema: SCHEMA.into(),
            created_at: String::new(),
            command: String::new(),
            machine: crate::machine::machine(),
            versions: Default::default(),
            settings: Default::default(),
            results: vec![
                point("echo", None, c64, 50_000.0, 1000),
                point("product-get", Some("json"), c64, 31_000.0, 1000),
                point("gateway-get", Some("uncached"), c64, 9_000.0, 1000),
                point("gateway-get", Some("express"), c64, 1_000.0, 1000),
                point("order-place", Some("sync-always"), r500, 495.0, 300_000),
                point("order-place", Some("sync-default"), r500, 499.0, 120_000),
            ],
            scaling: Vec::new(),
            targets: Vec::new(),
            notes: Vec::new(),
        };
        let checks = check(&file);
        assert_eq!(checks.len(), 6);
        assert_eq!(checks[0].met, Some(true), "{:?}", checks[0]);
        assert!(checks[0].measured.starts_with("62%"), "{:?}", checks[0]);
        assert_eq!(checks[1].met, Some(false), "9× is short of 10×");
        assert_eq!(checks[2].met, None, "no keep-alive baseline measured");
        assert_eq!(checks[3].met, Some(true), "p99 1 ms: {:?}", checks[3]);
        assert_eq!(checks[4].met, Some(false), "p99 300 ms");
        assert_eq!(checks[5].met, Some(true), "{:?}", checks[5]);
    }

    #[test]
    fn unmeasured_targets_say_so() {
        let file = ResultsFile {
            schema: SCHEMA.into(),
            created_at: String::new(),
            command: String::new(),
            machine: crate::machine::machine(),
            versions: Default::default(),
            settings: Default::default(),
            results: Vec::new(),
            scaling: Vec::new(),
            targets: Vec::new(),
            notes: Vec::new(),
        };
        assert!(check(&file).iter().all(|c| c.met.is_none()));
    }
}
