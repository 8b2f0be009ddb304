//! Tables of results: aligned text for the terminal, markdown for BENCHMARKS.md.

use crate::cpu::CpuUse;
use crate::load::Model;
use crate::results::{ResultsFile, ScalingRun, ScenarioResult};
use crate::stats::Latency;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table rendered as aligned text or as markdown.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            headers: columns.iter().map(|(h, _)| h.to_string()).collect(),
            align: columns.iter().map(|(_, a)| *a).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra ones are dropped.
    pub fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn text(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([self.headers[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let parts: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| match self.align[i] {
                    Align::Left => format!("{c:<w$}", w = widths[i]),
                    Align::Right => format!("{c:>w$}", w = widths[i]),
                })
                .collect();
            parts.join("  ").trim_end().to_string()
        };
        let mut out = line(&self.headers);
        out.push('\n');
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&rule.join("  "));
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("| {} |\n", self.headers.join(" | "));
        let rule: Vec<&str> = self
            .align
            .iter()
            .map(|a| match a {
                Align::Left => "---",
                Align::Right => "---:",
            })
            .collect();
        out.push_str(&format!("|{}|\n", rule.join("|")));
        for r in &self.rows {
            let cells: Vec<String> = r.iter().map(|c| c.replace('|', "\\|")).collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        out
    }
}

/// Milliseconds with about three significant digits.
pub fn fmt_ms(v: f64) -> String {
    if v < 1.0 {
        format!("{v:.3}")
    } else if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        group_thousands(v.round() as u64)
    }
}

/// Seconds without needless decimals: `2`, `0.5`.
pub fn fmt_secs(v: f64) -> String {
    let text = format!("{v:.1}");
    text.strip_suffix(".0").map(str::to_string).unwrap_or(text)
}

/// A rate: whole numbers with thousands separators, one decimal below 100.
pub fn fmt_rate(v: f64) -> String {
    if v < 100.0 {
        format!("{v:.1}")
    } else {
        group_thousands(v.round() as u64)
    }
}

pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn opt_ms(l: &Option<Latency>, f: fn(&Latency) -> f64) -> String {
    l.as_ref().map_or("-".to_string(), |l| fmt_ms(f(l)))
}

/// `nats-server 0.92, product 0.61, load-generator 0.48; machine busy 1.85,
/// stolen 0.04` (cores).
pub fn cpu_summary(cpu: &[CpuUse]) -> String {
    let mut sorted: Vec<&CpuUse> = cpu
        .iter()
        .filter(|c| !crate::cpu::is_machine_role(&c.role))
        .collect();
    sorted.sort_by(|a, b| b.cores.total_cmp(&a.cores));
    let mut text = sorted
        .iter()
        .map(|c| {
            if c.processes > 1 {
                format!("{}×{} {:.2}", c.role, c.processes, c.cores)
            } else {
                format!("{} {:.2}", c.role, c.cores)
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let machine = |role: &str| cpu.iter().find(|c| c.role == role).map(|c| c.cores);
    if let (Some(busy), Some(stolen)) = (
        machine(crate::cpu::MACHINE_BUSY),
        machine(crate::cpu::MACHINE_STOLEN),
    ) {
        text.push_str(&format!("; machine busy {busy:.2}, stolen {stolen:.2}"));
    }
    text
}

/// The echo result a closed-loop point is measured against: the same
/// concurrency (open-loop points run at a chosen rate, so no ratio).
pub fn echo_baseline<'a>(file: &'a ResultsFile, r: &ScenarioResult) -> Option<&'a ScenarioResult> {
    if !matches!(r.model, Model::Closed { .. }) {
        return None;
    }
    file.results
        .iter()
        .find(|e| e.scenario == "echo" && e.model == r.model)
}

/// The percentile columns every latency table shows, between `before` and `after`.
fn with_latency(
    before: &[(&'static str, Align)],
    after: &[(&'static str, Align)],
) -> Vec<(&'static str, Align)> {
    let latency = ["p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"].map(|h| (h, Align::Right));
    [before, &latency[..], after].concat()
}

/// The cells of the [`with_latency`] columns.
fn latency_cells(l: &Option<Latency>) -> [String; 5] {
    [
        opt_ms(l, |l| l.p50),
        opt_ms(l, |l| l.p90),
        opt_ms(l, |l| l.p99),
        opt_ms(l, |l| l.p99_9),
        opt_ms(l, |l| l.max),
    ]
}

fn variant_text(r: &ScenarioResult) -> String {
    let mut parts: Vec<String> = r.variant.iter().cloned().collect();
    if let Some(n) = r.instances.filter(|n| *n > 1) {
        parts.push(format!("×{n}"));
    }
    parts.join(" ")
}

/// Every point of a file: throughput, percentiles, errors, ratio to echo.
pub fn results_table(file: &ResultsFile, results: &[&ScenarioResult]) -> Table {
    let mut t = Table::new(&with_latency(
        &[
            ("scenario", Align::Left),
            ("variant", Align::Left),
            ("load", Align::Left),
            ("ok/s", Align::Right),
        ],
        &[("errors", Align::Right), ("vs echo", Align::Right)],
    ));
    for r in results {
        let vs_echo = match echo_baseline(file, r) {
            Some(e) if e.key != r.key && e.throughput_per_s > 0.0 => {
                format!("{:.0}%", r.throughput_per_s / e.throughput_per_s * 100.0)
            }
            _ => String::new(),
        };
        let errors = if r.errors == 0 {
            "0".to_string()
        } else {
            format!("{} ({:.1}%)", r.errors, r.error_rate() * 100.0)
        };
        let mut row = vec![
            r.scenario.clone(),
            variant_text(r),
            r.model.describe(),
            fmt_rate(r.throughput_per_s),
        ];
        row.extend(latency_cells(&r.latency_ms));
        row.extend([errors, vs_echo]);
        t.row(row);
    }
    t
}

/// Per-operation breakdown of a mixed point.
pub fn ops_table(r: &ScenarioResult) -> Table {
    let mut t = Table::new(&with_latency(
        &[
            ("operation", Align::Left),
            ("share", Align::Right),
            ("ok/s", Align::Right),
        ],
        &[("errors", Align::Right)],
    ));
    for op in &r.ops {
        let mut row = vec![
            op.name.clone(),
            format!("{:.0}%", op.share * 100.0),
            fmt_rate(op.throughput_per_s),
        ];
        row.extend(latency_cells(&op.latency_ms));
        row.push(op.errors.to_string());
        t.row(row);
    }
    t
}

/// 1, 2, 4 instances: throughput, speedup, efficiency, latency and CPU.
pub fn scaling_table(run: &ScalingRun) -> Table {
    let mut t = Table::new(&[
        ("instances", Align::Right),
        ("ok/s", Align::Right),
        ("speedup", Align::Right),
        ("efficiency", Align::Right),
        ("p50 ms", Align::Right),
        ("p99 ms", Align::Right),
        ("errors", Align::Right),
        ("CPU (cores)", Align::Left),
    ]);
    for p in &run.points {
        t.row(vec![
            p.instances.to_string(),
            fmt_rate(p.throughput_per_s),
            format!("{:.2}×", p.speedup),
            format!("{:.0}%", p.efficiency * 100.0),
            opt_ms(&p.latency_ms, |l| l.p50),
            opt_ms(&p.latency_ms, |l| l.p99),
            p.errors.to_string(),
            cpu_summary(&p.cpu),
        ]);
    }
    t
}

/// The whole file for the terminal: settings line, results, breakdowns,
/// checks, scaling, targets, notes.
pub fn report_text(file: &ResultsFile) -> String {
    let mut out = String::new();
    let v = &file.versions;
    out.push_str(&format!(
        "shop-bench {} | {} | git {}{} | nats-server {} | {} ({} cores, {:.1} GiB) | {} {}\n\n",
        v.shop_bench,
        v.rustc,
        v.git_rev.as_deref().map_or("?", |r| &r[..r.len().min(10)]),
        if v.git_dirty == Some(true) {
            "+dirty"
        } else {
            ""
        },
        v.nats_server.as_deref().unwrap_or("?"),
        file.machine.cpu_model,
        file.machine.cores,
        file.machine.memory_bytes as f64 / (1u64 << 30) as f64,
        file.machine.os,
        file.machine.kernel,
    ));
    let all: Vec<&ScenarioResult> = file.results.iter().collect();
    if !all.is_empty() {
        out.push_str(&results_table(file, &all).text());
    }
    for r in &file.results {
        if !r.ops.is_empty() {
            out.push_str(&format!(
                "\n{} ({}): per operation\n",
                r.key,
                r.model.describe()
            ));
            out.push_str(&ops_table(r).text());
        }
        for p in &r.phases {
            if let Some(l) = &p.latency_ms {
                out.push_str(&format!(
                    "{}: {} p50 {} ms, p99 {} ms, max {} ms\n",
                    r.key,
                    p.name,
                    fmt_ms(l.p50),
                    fmt_ms(l.p99),
                    fmt_ms(l.max)
                ));
            }
        }
    }
    let details: Vec<String> = file
        .results
        .iter()
        .flat_map(|r| {
            let mut lines = Vec::new();
            if !r.cpu.is_empty() {
                lines.push(format!("{}: CPU {}", r.key, cpu_summary(&r.cpu)));
            }
            if let Some(lag) = &r.send_lag_ms {
                lines.push(format!(
                    "{}: generator send lag p99 {} ms, max {} ms",
                    r.key,
                    fmt_ms(lag.p99),
                    fmt_ms(lag.max)
                ));
            }
            for c in &r.checks {
                lines.push(format!(
                    "{}: check {} {}: {}",
                    r.key,
                    c.name,
                    if c.passed { "ok" } else { "FAILED" },
                    c.detail
                ));
            }
            for (k, v) in &r.extra {
                lines.push(format!("{}: {k} = {}", r.key, fmt_rate(*v)));
            }
            if r.errors > 0 {
                lines.push(format!(
                    "{}: errors {:?}, first: {}",
                    r.key,
                    r.error_kinds,
                    r.first_error.as_deref().unwrap_or("-")
                ));
            }
            lines
        })
        .collect();
    if !details.is_empty() {
        out.push('\n');
        for l in details {
            out.push_str(&l);
            out.push('\n');
        }
    }
    for run in &file.scaling {
        out.push_str(&format!(
            "\nscaling {}, instances of {}:\n",
            run.title(),
            run.service
        ));
        out.push_str(&scaling_table(run).text());
    }
    if file.targets.iter().any(|t| t.met.is_some()) {
        out.push_str("\ntargets:\n");
        out.push_str(&targets_table(file).text());
    }
    for n in &file.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}

pub fn targets_table(file: &ResultsFile) -> Table {
    let mut t = Table::new(&[
        ("target", Align::Left),
        ("wanted", Align::Left),
        ("measured", Align::Left),
        ("met", Align::Left),
    ]);
    for c in &file.targets {
        t.row(vec![
            c.name.clone(),
            c.target.clone(),
            c.measured.clone(),
            match c.met {
                Some(true) => "yes".to_string(),
                Some(false) => "**no**".to_string(),
                None => "not measured".to_string(),
            },
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(fmt_ms(0.9624), "0.962");
        assert_eq!(fmt_ms(3.6051), "3.61");
        assert_eq!(fmt_ms(46.23), "46.2");
        assert_eq!(fmt_ms(1304.6), "1,305");
        assert_eq!(fmt_rate(58987.4), "58,987");
        assert_eq!(fmt_rate(99.64), "99.6");
        assert_eq!(group_thousands(1_234_567), "1,234,567");
        assert_eq!(group_thousands(12), "12");
        assert_eq!(fmt_secs(2.0), "2");
        assert_eq!(fmt_secs(0.5), "0.5");
    }

    #[test]
    fn tables_align_and_escape() {
        let mut t = Table::new(&[("name", Align::Left), ("n", Align::Right)]);
        t.row(vec!["a|b".into(), "1".into()]);
        t.row(vec!["long name".into(), "1,000".into()]);
        assert_eq!(
            t.text(),
            "name           n\n---------  -----\na|b            1\nlong name  1,000\n"
        );
        assert_eq!(
            t.markdown(),
            "| name | n |\n|---|---:|\n| a\\|b | 1 |\n| long name | 1,000 |\n"
        );
    }
}
