//! Scaling runs: one scenario and load on 1, 2, 4 ... instances of its service.

use anyhow::{bail, Context, Result};

use crate::results::{ScalingPoint, ScalingRun, ScenarioResult};
use crate::scenarios::{self, Options, Scenario};
use crate::stack::Stack;

/// Instance counts, ascending and without duplicates; at least one, none zero.
pub fn counts(given: &[usize]) -> Result<Vec<usize>> {
    let mut counts = given.to_vec();
    counts.sort_unstable();
    counts.dedup();
    if counts.first().is_none_or(|n| *n == 0) {
        bail!("instance counts must be at least 1: {given:?}");
    }
    Ok(counts)
}

/// Scaling points from per-count results.
pub fn points(results: &[(usize, ScenarioResult)]) -> Vec<ScalingPoint> {
    let Some((base_n, base)) = results.first() else {
        return Vec::new();
    };
    let point = |(n, r): &(usize, ScenarioResult)| {
        let speedup = if base.throughput_per_s > 0.0 {
            r.throughput_per_s / base.throughput_per_s
        } else {
            0.0
        };
        ScalingPoint {
            instances: *n,
            throughput_per_s: r.throughput_per_s,
            speedup,
            efficiency: speedup / (*n as f64 / *base_n as f64),
            latency_ms: r.latency_ms,
            errors: r.errors,
            cpu: r.cpu.clone(),
        }
    };
    results.iter().map(point).collect()
}

/// Runs each of `plans` at each instance count on `stack`, adding instances as it goes.
pub async fn run_on(
    stack: &mut Stack,
    plans: &[(Scenario, Options)],
    counts: &[usize],
    mut progress: impl FnMut(&str),
) -> Result<Vec<ScalingRun>> {
    let mut per_plan: Vec<Vec<(usize, ScenarioResult)>> = vec![Vec::new(); plans.len()];
    for n in self::counts(counts)? {
        for (i, (scenario, opts)) in plans.iter().enumerate() {
            let Some(service) = scenario.scaled_service() else {
                bail!("{} has no service to scale", scenario.name());
            };
            while stack.count(service) < n {
                stack.start_service(service, &[]).await.with_context(|| {
                    format!("starting {service} instance {}", stack.count(service) + 1)
                })?;
            }
            stack.check_alive()?;
            let (name, model) = (scenario.name(), opts.model.describe());
            progress(&format!("scaling {name} ({model}) with {n} × {service}"));
            let result = scenarios::run(*scenario, &stack.target(Some(n))?, opts).await?;
            per_plan[i].push((n, result));
        }
    }
    let runs = plans.iter().zip(per_plan);
    let runs = runs.map(|((scenario, opts), results)| ScalingRun {
        scenario: scenario.name().to_string(),
        variant: results.first().and_then(|(_, r)| r.variant.clone()),
        model: opts.model,
        service: scenario.scaled_service().unwrap_or_default().to_string(),
        points: points(&results),
    });
    Ok(runs.collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Model;

    #[test]
    fn counts_are_sorted() {
        assert_eq!(counts(&[4, 1, 2, 2]).unwrap(), vec![1, 2, 4]);
        assert!(counts(&[0, 1]).is_err());
        assert!(counts(&[]).is_err());
    }

    #[test]
    fn efficiency_is_relative_to_the_first_point() {
        let c64 = Model::Closed { in_flight: 64 };
        let point =
            |rps: f64| crate::results::tests::point("product-get", Some("json"), c64, rps, 100);
        let p = points(&[(1, point(1000.0)), (2, point(1500.0)), (4, point(2000.0))]);
        assert_eq!(p.len(), 3);
        assert!((p[0].efficiency - 1.0).abs() < 1e-9);
        assert!((p[1].speedup - 1.5).abs() < 1e-9 && (p[1].efficiency - 0.75).abs() < 1e-9);
        assert!((p[2].speedup - 2.0).abs() < 1e-9 && (p[2].efficiency - 0.5).abs() < 1e-9);
    }
}
