//! `--compare OLD.json`: each figure of this run against the same point of an
//! older run, as new/old ratios. Points are matched by their key (scenario,
//! variant, load model); scaling points by scenario, model and instance count.

use crate::results::{ResultsFile, ScenarioResult};
use crate::stats::Latency;
use crate::table::{fmt_ms, fmt_rate, Align, Table};

/// new / old, or `-` when either is missing or the old one is zero.
fn ratio(new: Option<f64>, old: Option<f64>) -> String {
    match (new, old) {
        (Some(n), Some(o)) if o > 0.0 => format!("{:.2}×", n / o),
        _ => "-".to_string(),
    }
}

fn pick(l: &Option<Latency>, f: fn(&Latency) -> f64) -> Option<f64> {
    l.as_ref().map(f)
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".to_string(), fmt_ms)
}

/// The figures of one point that are compared.
struct Figures<'a> {
    throughput: f64,
    latency: &'a Option<Latency>,
    errors: u64,
}

impl<'a> From<&'a ScenarioResult> for Figures<'a> {
    fn from(r: &'a ScenarioResult) -> Self {
        Self {
            throughput: r.throughput_per_s,
            latency: &r.latency_ms,
            errors: r.errors,
        }
    }
}

fn row(key: &str, new: Figures<'_>, old: Figures<'_>) -> Vec<String> {
    let (n, o) = (new.latency, old.latency);
    vec![
        key.to_string(),
        fmt_rate(old.throughput),
        fmt_rate(new.throughput),
        ratio(Some(new.throughput), Some(old.throughput)),
        format!("{} → {}", ms(pick(o, |l| l.p50)), ms(pick(n, |l| l.p50))),
        ratio(pick(n, |l| l.p50), pick(o, |l| l.p50)),
        ratio(pick(n, |l| l.p90), pick(o, |l| l.p90)),
        format!("{} → {}", ms(pick(o, |l| l.p99)), ms(pick(n, |l| l.p99))),
        ratio(pick(n, |l| l.p99), pick(o, |l| l.p99)),
        ratio(pick(n, |l| l.p99_9), pick(o, |l| l.p99_9)),
        ratio(pick(n, |l| l.max), pick(o, |l| l.max)),
        format!("{} → {}", old.errors, new.errors),
    ]
}

/// The comparison table and what could not be matched.
pub fn compare(new: &ResultsFile, old: &ResultsFile) -> (Table, Vec<String>) {
    let mut t = Table::new(&[
        ("point", Align::Left),
        ("ok/s old", Align::Right),
        ("ok/s new", Align::Right),
        ("ok/s ×", Align::Right),
        ("p50 ms", Align::Right),
        ("p50 ×", Align::Right),
        ("p90 ×", Align::Right),
        ("p99 ms", Align::Right),
        ("p99 ×", Align::Right),
        ("p99.9 ×", Align::Right),
        ("max ×", Align::Right),
        ("errors", Align::Right),
    ]);
    let mut notes = Vec::new();
    for r in &new.results {
        match old.result(&r.key) {
            Some(o) => t.row(row(&r.key, r.into(), o.into())),
            None => notes.push(format!("{}: not in the old file", r.key)),
        }
    }
    for o in &old.results {
        if new.result(&o.key).is_none() {
            notes.push(format!("{}: only in the old file", o.key));
        }
    }
    for run in &new.scaling {
        let Some(old_run) = old.scaling.iter().find(|o| {
            o.scenario == run.scenario && o.variant == run.variant && o.model == run.model
        }) else {
            notes.push(format!("scaling {}: not in the old file", run.scenario));
            continue;
        };
        for p in &run.points {
            let Some(op) = old_run.points.iter().find(|o| o.instances == p.instances) else {
                continue;
            };
            t.row(row(
                &format!(
                    "scaling {} {} ×{}",
                    run.scenario,
                    run.model.key(),
                    p.instances
                ),
                Figures {
                    throughput: p.throughput_per_s,
                    latency: &p.latency_ms,
                    errors: p.errors,
                },
                Figures {
                    throughput: op.throughput_per_s,
                    latency: &op.latency_ms,
                    errors: op.errors,
                },
            ));
        }
    }
    if new.machine.cpu_model != old.machine.cpu_model || new.machine.cores != old.machine.cores {
        notes.push(format!(
            "different machines: {} ({} cores) now, {} ({} cores) then",
            new.machine.cpu_model, new.machine.cores, old.machine.cpu_model, old.machine.cores
        ));
    }
    if new.settings.duration_s != old.settings.duration_s
        || new.settings.quick != old.settings.quick
    {
        notes.push(format!(
            "different durations: {:.0} s per point now, {:.0} s then",
            new.settings.duration_s, old.settings.duration_s
        ));
    }
    (t, notes)
}

/// The comparison as terminal text, with how to read it.
pub fn compare_text(new: &ResultsFile, old: &ResultsFile) -> String {
    let (t, notes) = compare(new, old);
    let mut out = format!(
        "compared with {} (git {}): ratios are new/old; ok/s above 1 and latency below 1 are better\n",
        old.created_at,
        old.versions.git_rev.as_deref().map_or("?", |r| &r[..r.len().min(10)])
    );
    out.push_str(&t.text());
    for n in notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Model;
    use crate::results::tests::run_stats;
    use crate::results::{Meta, SCHEMA};

    fn file(points: &[(&str, u64)]) -> ResultsFile {
        ResultsFile {
            schema: SCHEMA.to_string(),
            created_at: "2026-01-01T00:00:00Z".into(),
            command: "suite".into(),
            machine: crate::machine::machine(),
            versions: Default::default(),
            settings: Default::default(),
            results: points
                .iter()
                .map(|(scenario, us)| {
                    // 2 s window: 4 requests = 2/s.
                    let run = run_stats(Model::Closed { in_flight: 64 }, &[("op", *us); 4], 0);
                    let meta = Meta::new(scenario, None, "x");
                    ScenarioResult::from_runs(meta, &[run], Vec::new()).unwrap()
                })
                .collect(),
            scaling: Vec::new(),
            targets: Vec::new(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn ratios_are_new_over_old() {
        let old = file(&[("echo", 2000), ("gone", 1000)]);
        let mut new = file(&[("echo", 1000), ("fresh", 1000)]);
        new.results[0].throughput_per_s = 3.0;
        let (t, notes) = compare(&new, &old);
        let text = t.text();
        assert!(text.contains("2.00 → 1.00"), "{text}");
        assert!(text.contains("1.50×"), "{text}");
        assert!(text.contains("0.50×"), "{text}");
        assert!(notes
            .iter()
            .any(|n| n.contains("fresh c64: not in the old")));
        assert!(notes
            .iter()
            .any(|n| n.contains("gone c64: only in the old")));
    }

    #[test]
    fn missing_or_zero_gives_no_ratio() {
        assert_eq!(ratio(Some(1.0), Some(0.0)), "-");
        assert_eq!(ratio(None, Some(1.0)), "-");
        assert_eq!(ratio(Some(3.0), Some(2.0)), "1.50×");
    }
}
