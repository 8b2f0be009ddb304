//! Reports of a results file: aligned text tables for the terminal, the
//! comparison with an older file (`--compare`: new/old ratios of each figure,
//! points matched by key), and the generated tables of BENCHMARKS.md.
//!
//! Generated markdown lives between `<!-- bench:NAME -->` and `<!-- /bench -->`;
//! everything outside the markers (prose, earlier measurements) is left as it
//! is. Sections: `run`, `targets`, `results`, `reads`, `stock-contention`,
//! `gateway-get`, `order-place`, `mixed`, `scaling`, `cpu`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

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

// --- comparison with an older file ---------------------------------------------

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

// --- BENCHMARKS.md ------------------------------------------------------------------

const END: &str = "<!-- /bench -->";
const START_PREFIX: &str = "<!-- bench:";

fn not_measured(file: &ResultsFile, about: &str) -> String {
    let notes: Vec<&String> = file.notes.iter().filter(|n| n.contains(about)).collect();
    let mut out = "_Not measured in this run._\n".to_string();
    for n in notes {
        out.push_str(&format!("\n_{n}_\n"));
    }
    out
}

fn results_of<'a>(file: &'a ResultsFile, scenarios: &[&str]) -> Vec<&'a ScenarioResult> {
    file.results
        .iter()
        .filter(|r| scenarios.contains(&r.scenario.as_str()))
        .collect()
}

/// A command line with the workspace's absolute paths made relative.
fn relative(command: &str) -> String {
    let root = shop_process::workspace_root().display().to_string();
    command.replace(&format!("{root}/"), "")
}

fn run_section(file: &ResultsFile) -> String {
    let v = &file.versions;
    let m = &file.machine;
    let s = &file.settings;
    format!(
        "Run of {} (`shop-bench {}`): git {}{}; {}; nats-server {}{}.\n\
         Machine: {}, {} cores, {:.0} GiB, {}, kernel {}. Load generator, nats-server and\n\
         services share these cores. {} s measured per point after {} s of warm-up{}.\n",
        file.created_at,
        relative(&file.command),
        v.git_rev.as_deref().map_or("?", |r| &r[..r.len().min(10)]),
        if v.git_dirty == Some(true) {
            " (with uncommitted changes)"
        } else {
            ""
        },
        v.rustc,
        v.nats_server.as_deref().unwrap_or("?"),
        v.node
            .as_deref()
            .map(|n| format!("; node {n}"))
            .unwrap_or_default(),
        m.cpu_model,
        m.cores,
        m.memory_bytes as f64 / (1u64 << 30) as f64,
        m.os,
        m.kernel,
        fmt_secs(s.duration_s),
        fmt_secs(s.warmup_s),
        if s.quick {
            " (**quick mode: figures only show that everything runs**)"
        } else {
            ""
        },
    )
}

fn extra_lines(results: &[&ScenarioResult]) -> String {
    let mut out = String::new();
    for r in results {
        for c in &r.checks {
            out.push_str(&format!(
                "- {}: {} {}: {}\n",
                r.key,
                c.name,
                if c.passed { "ok" } else { "**FAILED**" },
                c.detail
            ));
        }
        for (k, v) in &r.extra {
            out.push_str(&format!("- {}: {k} = {}\n", r.key, fmt_rate(*v)));
        }
        for p in &r.phases {
            if let Some(l) = &p.latency_ms {
                out.push_str(&format!(
                    "- {}: {} p50 {} ms, p90 {} ms, p99 {} ms, max {} ms\n",
                    r.key,
                    p.name,
                    fmt_ms(l.p50),
                    fmt_ms(l.p90),
                    fmt_ms(l.p99),
                    fmt_ms(l.max)
                ));
            }
        }
        if r.errors > 0 {
            out.push_str(&format!(
                "- {}: errors {}; first: {}\n",
                r.key,
                r.error_kinds
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                r.first_error.as_deref().unwrap_or("-").replace('|', "/")
            ));
        }
    }
    out
}

fn table_section(file: &ResultsFile, scenarios: &[&str], about: &str) -> String {
    let results = results_of(file, scenarios);
    if results.is_empty() {
        return not_measured(file, about);
    }
    let mut out = results_table(file, &results).markdown();
    let extra = extra_lines(&results);
    if !extra.is_empty() {
        out.push('\n');
        out.push_str(&extra);
    }
    out
}

fn mixed_section(file: &ResultsFile) -> String {
    let results = results_of(file, &["mixed"]);
    if results.is_empty() {
        return not_measured(file, "mixed");
    }
    let mut out = results_table(file, &results).markdown();
    for r in &results {
        out.push_str(&format!(
            "\nPer operation ({}, {}):\n\n",
            r.key,
            r.model.describe()
        ));
        out.push_str(&ops_table(r).markdown());
    }
    let extra = extra_lines(&results);
    if !extra.is_empty() {
        out.push('\n');
        out.push_str(&extra);
    }
    out
}

fn scaling_section(file: &ResultsFile) -> String {
    if file.scaling.is_empty() {
        return not_measured(file, "scaling");
    }
    let mut out = String::new();
    for run in &file.scaling {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!(
            "{}, instances of `{}` in one queue group:\n\n",
            run.title(),
            run.service
        ));
        out.push_str(&scaling_table(run).markdown());
    }
    out
}

fn cpu_section(file: &ResultsFile) -> String {
    let mut t = Table::new(&[("point", Align::Left), ("CPU used, cores", Align::Left)]);
    for r in file.results.iter().filter(|r| !r.cpu.is_empty()) {
        t.row(vec![r.key.clone(), cpu_summary(&r.cpu)]);
    }
    if t.is_empty() {
        return not_measured(file, "cpu");
    }
    t.markdown()
}

/// Every section's generated text.
pub fn sections(file: &ResultsFile) -> BTreeMap<&'static str, String> {
    let mut s = BTreeMap::new();
    s.insert("run", run_section(file));
    s.insert(
        "targets",
        if file.targets.is_empty() {
            not_measured(file, "target")
        } else {
            targets_table(file).markdown()
        },
    );
    s.insert("results", {
        let all: Vec<&ScenarioResult> = file.results.iter().collect();
        if all.is_empty() {
            not_measured(file, "results")
        } else {
            results_table(file, &all).markdown()
        }
    });
    s.insert(
        "reads",
        table_section(file, &["echo", "product-get", "product-list"], "product"),
    );
    s.insert(
        "stock-contention",
        table_section(file, &["stock-contention"], "stock-contention"),
    );
    s.insert(
        "gateway-get",
        table_section(file, &["gateway-get"], "gateway"),
    );
    s.insert(
        "order-place",
        table_section(file, &["order-place"], "order-place"),
    );
    s.insert("mixed", mixed_section(file));
    s.insert("scaling", scaling_section(file));
    s.insert("cpu", cpu_section(file));
    s
}

/// `doc` with every known marked block replaced; also returns the names replaced.
pub fn rewrite(doc: &str, sections: &BTreeMap<&str, String>) -> Result<(String, Vec<String>)> {
    let mut out = String::with_capacity(doc.len());
    let mut replaced = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find(START_PREFIX) {
        let after_prefix = &rest[start + START_PREFIX.len()..];
        let Some(close) = after_prefix.find("-->") else {
            bail!("unterminated marker {START_PREFIX}... in the document");
        };
        let name = after_prefix[..close].trim();
        let marker_end = start + START_PREFIX.len() + close + 3;
        let Some(end_rel) = rest[marker_end..].find(END) else {
            bail!("marker {START_PREFIX}{name} --> has no {END}");
        };
        let end = marker_end + end_rel;
        if rest[marker_end..end].contains(START_PREFIX) {
            bail!("marker {START_PREFIX}{name} --> is not closed before the next marker");
        }
        out.push_str(&rest[..marker_end]);
        match sections.get(name) {
            Some(text) => {
                out.push('\n');
                out.push_str(text.trim_end());
                out.push('\n');
                replaced.push(name.to_string());
            }
            None => out.push_str(&rest[marker_end..end]),
        }
        out.push_str(END);
        rest = &rest[end + END.len()..];
    }
    out.push_str(rest);
    Ok((out, replaced))
}

/// Rewrites the marked blocks of the markdown file at `path` from `file`.
pub fn update(path: &Path, file: &ResultsFile) -> Result<Vec<String>> {
    let doc =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (text, replaced) = rewrite(&doc, &sections(file))?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::run_stats;
    use crate::results::{Meta, Settings};

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

    fn file(points: &[(&str, u64)]) -> ResultsFile {
        let point = |(scenario, us): &(&str, u64)| {
            // 2 s window: 4 requests = 2/s.
            let run = run_stats(Model::Closed { in_flight: 64 }, &[("op", *us); 4], 0);
            ScenarioResult::from_runs(Meta::new(scenario, None, "x"), &[run], Vec::new()).unwrap()
        };
        ResultsFile {
            results: points.iter().map(point).collect(),
            ..ResultsFile::new("suite".into(), Settings::default())
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

    #[test]
    fn only_marked_blocks_change() {
        let doc = "# Title\nprose\n<!-- bench:a -->\nold a\n<!-- /bench -->\nmore prose\n<!-- bench:zzz -->\nkept\n<!-- /bench -->\nend\n";
        let mut s = BTreeMap::new();
        s.insert("a", "new a\n| t |\n".to_string());
        let (out, replaced) = rewrite(doc, &s).unwrap();
        assert_eq!(
            out,
            "# Title\nprose\n<!-- bench:a -->\nnew a\n| t |\n<!-- /bench -->\nmore prose\n<!-- bench:zzz -->\nkept\n<!-- /bench -->\nend\n"
        );
        assert_eq!(replaced, vec!["a"]);
        // Rewriting again is stable.
        assert_eq!(rewrite(&out, &s).unwrap().0, out);
    }

    #[test]
    fn broken_markers_are_refused() {
        let s = BTreeMap::new();
        assert!(rewrite("<!-- bench:a -->\nno end\n", &s).is_err());
        assert!(rewrite("<!-- bench:a -->\n<!-- bench:b -->\n<!-- /bench -->", &s).is_err());
    }

    #[test]
    fn an_empty_run_says_not_measured() {
        let file = ResultsFile {
            notes: vec!["gateway-get skipped: no gateway binary".into()],
            ..ResultsFile::new("suite --quick".into(), Settings::default())
        };
        let s = sections(&file);
        assert!(s["gateway-get"].contains("Not measured"));
        assert!(s["gateway-get"].contains("no gateway binary"));
        assert!(s["run"].contains("suite --quick"));
    }
}
