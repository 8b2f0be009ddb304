//! Reports of a results file: text tables, comparisons and BENCHMARKS.md's generated sections.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::cpu::{CpuUse, MACHINE_BUSY, MACHINE_STOLEN};
use crate::load::Model;
use crate::results::{ResultsFile, ScalingPoint, ScalingRun, ScenarioResult};
use crate::stats::{fmt_ms, fmt_rate, fmt_secs, Latency};

/// A table rendered as aligned text or as markdown.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    /// Per column: aligned right (numbers) rather than left.
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns separated by `|`; a `>` before a name aligns it right.
    pub fn new(columns: &str) -> Self {
        let columns = columns.split('|').map(|c| match c.strip_prefix('>') {
            Some(name) => (name.to_string(), true),
            None => (c.to_string(), false),
        });
        let mut table = Self::default();
        (table.headers, table.right) = columns.unzip();
        table
    }

    /// Adds a row; missing cells are blank, extra ones are dropped.
    pub fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        let mut cells: Vec<String> = cells.into_iter().collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    pub fn text(&self) -> String {
        let width = |i: usize| {
            let cells = self.rows.iter().map(|r| &r[i]).chain([&self.headers[i]]);
            cells.map(|c| c.chars().count()).max().unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let line = |cells: &[String]| {
            let cells = cells.iter().zip(&widths).zip(&self.right);
            let cells = cells.map(|((c, &w), &right)| match right {
                true => format!("{c:>w$}"),
                false => format!("{c:<w$}"),
            });
            cells.collect::<Vec<_>>().join("  ").trim_end().to_string() + "\n"
        };
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        let rows = [&self.headers, &rule].into_iter().chain(&self.rows);
        rows.map(|r| line(r)).collect()
    }

    pub fn markdown(&self) -> String {
        let rule = self.right.iter().map(|&r| if r { "---:" } else { "---" });
        let rule = rule.collect::<Vec<_>>().join("|");
        let mut out = format!("| {} |\n|{rule}|\n", self.headers.join(" | "));
        for r in &self.rows {
            let cells: Vec<String> = r.iter().map(|c| c.replace('|', "\\|")).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out
    }
}

/// The first ten characters of a git revision, or `?`.
fn short_rev(rev: &Option<String>) -> &str {
    rev.as_deref().map_or("?", |r| &r[..r.len().min(10)])
}

/// `nats-server 0.92, product 0.61; machine busy 1.85, stolen 0.04` (cores).
pub fn cpu_summary(cpu: &[CpuUse]) -> String {
    let process = |c: &&CpuUse| !crate::cpu::is_machine_role(&c.role);
    let mut sorted: Vec<&CpuUse> = cpu.iter().filter(process).collect();
    sorted.sort_by(|a, b| b.cores.total_cmp(&a.cores));
    let each = sorted.iter().map(|c| match c.processes {
        n if n > 1 => format!("{}×{n} {:.2}", c.role, c.cores),
        _ => format!("{} {:.2}", c.role, c.cores),
    });
    let mut text = each.collect::<Vec<_>>().join(", ");
    let machine = |role: &str| cpu.iter().find(|c| c.role == role).map(|c| c.cores);
    if let (Some(busy), Some(stolen)) = (machine(MACHINE_BUSY), machine(MACHINE_STOLEN)) {
        let _ = write!(text, "; machine busy {busy:.2}, stolen {stolen:.2}");
    }
    text
}

const LATENCY_COLUMNS: &str = ">p50 ms|>p90 ms|>p99 ms|>p99.9 ms|>max ms";

fn latency_cells(l: &Option<Latency>) -> [String; 5] {
    l.map_or_else(
        || ["-"; 5].map(String::from),
        |l| l.percentiles().map(fmt_ms),
    )
}

/// Every point of a file: throughput, percentiles, errors, and the ratio to echo.
pub fn results_table(file: &ResultsFile, results: &[&ScenarioResult]) -> Table {
    let columns = format!("scenario|variant|load|>ok/s|{LATENCY_COLUMNS}|>errors|>vs echo");
    let mut t = Table::new(&columns);
    for r in results {
        let closed = matches!(r.model, Model::Closed { .. });
        let echo =
            (file.results.iter()).find(|e| closed && e.scenario == "echo" && e.model == r.model);
        let vs_echo = match echo {
            Some(e) if e.key != r.key && e.throughput_per_s > 0.0 => {
                format!("{:.0}%", r.throughput_per_s / e.throughput_per_s * 100.0)
            }
            _ => String::new(),
        };
        let errors = match r.errors {
            0 => "0".to_string(),
            n => format!("{n} ({:.1}%)", r.error_rate() * 100.0),
        };
        let instances = r.instances.filter(|n| *n > 1).map(|n| format!("×{n}"));
        let variant: Vec<String> = r.variant.iter().cloned().chain(instances).collect();
        let what = [r.scenario.clone(), variant.join(" "), r.model.describe()];
        let rate = [fmt_rate(r.throughput_per_s)];
        let latency = latency_cells(&r.latency_ms);
        t.row([&what[..], &rate, &latency, &[errors, vs_echo]].concat());
    }
    t
}

/// Per-operation breakdown of a mixed point.
pub fn ops_table(r: &ScenarioResult) -> Table {
    let mut t = Table::new(&format!("operation|>share|>ok/s|{LATENCY_COLUMNS}|>errors"));
    for op in &r.ops {
        let share = format!("{:.0}%", op.share * 100.0);
        let what = [op.name.clone(), share, fmt_rate(op.throughput_per_s)];
        let latency = latency_cells(&op.latency_ms);
        t.row([&what[..], &latency, &[op.errors.to_string()]].concat());
    }
    t
}

/// 1, 2, 4 instances: throughput, speedup, efficiency, latency and CPU.
pub fn scaling_table(run: &ScalingRun) -> Table {
    let mut t =
        Table::new(">instances|>ok/s|>speedup|>efficiency|>p50 ms|>p99 ms|>errors|CPU (cores)");
    for p in &run.points {
        let [p50, _, p99, _, _] = latency_cells(&p.latency_ms);
        t.row([
            p.instances.to_string(),
            fmt_rate(p.throughput_per_s),
            format!("{:.2}×", p.speedup),
            format!("{:.0}%", p.efficiency * 100.0),
            p50,
            p99,
            p.errors.to_string(),
            cpu_summary(&p.cpu),
        ]);
    }
    t
}

/// The targets: wanted, measured, met.
pub fn targets_table(file: &ResultsFile) -> Table {
    let mut t = Table::new("target|wanted|measured|met");
    for c in &file.targets {
        let met = match c.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        t.row([&c.name, &c.target, &c.measured, met].map(String::from));
    }
    t
}

/// The whole file for the terminal.
pub fn report_text(file: &ResultsFile) -> String {
    let mut out = run_section(file) + "\n";
    let all: Vec<&ScenarioResult> = file.results.iter().collect();
    if !all.is_empty() {
        out += &results_table(file, &all).text();
    }
    for r in all.iter().filter(|r| !r.ops.is_empty()) {
        let (key, model) = (&r.key, r.model.describe());
        out += &format!("\n{key} ({model}): per operation\n{}", ops_table(r).text());
    }
    let cpu = Some(cpu_table(file)).filter(|t| !t.rows.is_empty());
    for text in [extra_lines(&all), cpu.map_or(String::new(), |t| t.text())] {
        if !text.is_empty() {
            out += &format!("\n{text}");
        }
    }
    for run in &file.scaling {
        let (title, service) = (run.title(), &run.service);
        out += &format!("\nscaling {title}, instances of {service}:\n");
        out += &scaling_table(run).text();
    }
    if file.targets.iter().any(|t| t.met.is_some()) {
        out += &format!("\ntargets:\n{}", targets_table(file).text());
    }
    out.extend(file.notes.iter().map(|n| format!("note: {n}\n")));
    out
}

/// new / old, or `-` when either is missing or the old one is zero.
fn ratio(new: Option<f64>, old: Option<f64>) -> String {
    match (new, old) {
        (Some(n), Some(o)) if o > 0.0 => format!("{:.2}×", n / o),
        _ => "-".to_string(),
    }
}

/// The figures of one point that are compared: throughput, latency, errors.
type Figures = (f64, Option<Latency>, u64);

fn compare_row(key: String, new: Figures, old: Figures) -> Vec<String> {
    let at = |f: &Figures, i: usize| f.1.map(|l| l.percentiles()[i]);
    let ms = |v: Option<f64>| v.map_or("-".to_string(), fmt_ms);
    let change = |i: usize| format!("{} → {}", ms(at(&old, i)), ms(at(&new, i)));
    let times = |i: usize| ratio(at(&new, i), at(&old, i));
    let rate_ratio = ratio(Some(new.0), Some(old.0));
    let rates = [fmt_rate(old.0), fmt_rate(new.0), rate_ratio];
    let (p50, p99) = (change(0), change(2));
    let latency = [p50, times(0), times(1), p99, times(2), times(3), times(4)];
    let errors = format!("{} → {}", old.2, new.2);
    [&[key][..], &rates, &latency, &[errors]].concat()
}

/// The comparison table and what could not be matched.
pub fn compare(new: &ResultsFile, old: &ResultsFile) -> (Table, Vec<String>) {
    let mut t = Table::new(
        "point|>ok/s old|>ok/s new|>ok/s ×|>p50 ms|>p50 ×|>p90 ×|>p99 ms|>p99 ×|>p99.9 ×|>max ×|>errors",
    );
    let mut notes = Vec::new();
    let figures = |r: &ScenarioResult| (r.throughput_per_s, r.latency_ms, r.errors);
    for r in &new.results {
        match old.result(&r.key) {
            Some(o) => t.row(compare_row(r.key.clone(), figures(r), figures(o))),
            None => notes.push(format!("{}: not in the old file", r.key)),
        }
    }
    for o in old.results.iter().filter(|o| new.result(&o.key).is_none()) {
        notes.push(format!("{}: only in the old file", o.key));
    }
    let figures = |p: &ScalingPoint| (p.throughput_per_s, p.latency_ms, p.errors);
    for run in &new.scaling {
        let same = |o: &&ScalingRun| {
            (&o.scenario, &o.variant, o.model) == (&run.scenario, &run.variant, run.model)
        };
        let Some(old_run) = old.scaling.iter().find(same) else {
            notes.push(format!("scaling {}: not in the old file", run.scenario));
            continue;
        };
        for p in &run.points {
            if let Some(o) = old_run.points.iter().find(|o| o.instances == p.instances) {
                let (scenario, model, n) = (&run.scenario, run.model.key(), p.instances);
                let key = format!("scaling {scenario} {model} ×{n}");
                t.row(compare_row(key, figures(p), figures(o)));
            }
        }
    }
    let machine = |m: &crate::machine::Machine| format!("{} ({} cores)", m.cpu_model, m.cores);
    let (now, then) = (machine(&new.machine), machine(&old.machine));
    if now != then {
        notes.push(format!("different machines: {now} now, {then} then"));
    }
    let (n, o) = (&new.settings, &old.settings);
    if (n.duration_s, n.quick) != (o.duration_s, o.quick) {
        let (now, then) = (n.duration_s, o.duration_s);
        let note = format!("different durations: {now:.0} s per point now, {then:.0} s then");
        notes.push(note);
    }
    (t, notes)
}

/// The comparison as terminal text, with how to read it.
pub fn compare_text(new: &ResultsFile, old: &ResultsFile) -> String {
    let (t, notes) = compare(new, old);
    let mut out = format!(
        "compared with {} (git {}): ratios are new/old; ok/s above 1 and latency below 1 are better\n{}",
        old.created_at,
        short_rev(&old.versions.git_rev),
        t.text()
    );
    notes.iter().for_each(|n| _ = writeln!(out, "note: {n}"));
    out
}

const END: &str = "<!-- /bench -->";
const START_PREFIX: &str = "<!-- bench:";

/// `table` as markdown, or that nothing was measured (and the notes on `about`).
fn or_not_measured(file: &ResultsFile, table: Option<Table>, about: &str) -> String {
    if let Some(t) = table.filter(|t| !t.rows.is_empty()) {
        return t.markdown();
    }
    let mut out = "_Not measured in this run._\n".to_string();
    let notes = file.notes.iter().filter(|n| n.contains(about));
    out.extend(notes.map(|n| format!("\n_{n}_\n")));
    out
}

fn run_section(file: &ResultsFile) -> String {
    let (v, m, s) = (&file.versions, &file.machine, &file.settings);
    // The command line with the workspace's absolute paths made relative.
    let root = shop_process::workspace_root().display().to_string();
    let command = file.command.replace(&format!("{root}/"), "");
    let node = v.node.as_deref().map(|n| format!("; node {n}"));
    format!(
        "Run of {} (`shop-bench {}`): git {}{}; {}; nats-server {}{}.\n\
         Machine: {}, {} cores, {:.0} GiB, {}, kernel {}. Load generator, nats-server and\n\
         services share these cores. {} s measured per point after {} s of warm-up{}.\n",
        file.created_at,
        command,
        short_rev(&v.git_rev),
        match v.git_dirty {
            Some(true) => " (with uncommitted changes)",
            _ => "",
        },
        v.rustc,
        v.nats_server.as_deref().unwrap_or("?"),
        node.unwrap_or_default(),
        m.cpu_model,
        m.cores,
        m.memory_bytes as f64 / (1u64 << 30) as f64,
        m.os,
        m.kernel,
        fmt_secs(s.duration_s),
        fmt_secs(s.warmup_s),
        match s.quick {
            true => " (**quick mode: figures only show that everything runs**)",
            false => "",
        },
    )
}

/// JetStream messages stored per successful operation, in all and by stream
/// (most first), and per second: with `sync_interval: always`, the fsyncs
/// each operation costs the server, except on streams kept in memory, which
/// are marked and counted apart.
pub fn appends_line(r: &ScenarioResult) -> Option<String> {
    if r.appends_per_s.is_empty() || r.throughput_per_s <= 0.0 {
        return None;
    }
    let per_op = |per_s: f64| per_s / r.throughput_per_s;
    let total: f64 = r.appends_per_s.values().sum();
    // A stream with under 0.005 per operation (the registry's heartbeats
    // beside reads) would print as 0.00: left out, and so is a line of none.
    let mut streams: Vec<(&String, &f64)> = (r.appends_per_s.iter())
        .filter(|(_, per_s)| per_op(**per_s) >= 0.005)
        .collect();
    if streams.is_empty() {
        return None;
    }
    streams.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
    let in_memory = |name: &str| r.memory_streams.contains(name);
    let by_stream = streams
        .iter()
        .map(|(name, per_s)| {
            let memory = if in_memory(name) { " in memory" } else { "" };
            format!("{name} {:.2}{memory}", per_op(**per_s))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let on_file: f64 = (r.appends_per_s.iter())
        .filter(|(name, _)| !in_memory(name))
        .map(|(_, per_s)| per_s)
        .sum();
    let file_part = if on_file < total {
        format!(", {:.2} on file", per_op(on_file))
    } else {
        String::new()
    };
    Some(format!(
        "JetStream appends per ok {:.2}{file_part} ({by_stream}); {}/s in all",
        per_op(total),
        fmt_rate(total)
    ))
}

/// Checks, extra figures, phases and errors of `results`, as a markdown list.
fn extra_lines(results: &[&ScenarioResult]) -> String {
    let mut out = String::new();
    for r in results {
        let mut lines = Vec::new();
        for c in &r.checks {
            let outcome = if c.passed { "ok" } else { "**FAILED**" };
            lines.push(format!("{} {outcome}: {}", c.name, c.detail));
        }
        for (k, v) in &r.extra {
            lines.push(format!("{k} = {}", fmt_rate(*v)));
        }
        if let Some(line) = appends_line(r) {
            lines.push(line);
        }
        for p in &r.phases {
            let Some(l) = p.latency_ms else { continue };
            let [p50, p90, p99, _, max] = l.percentiles().map(fmt_ms);
            let name = &p.name;
            lines.push(format!(
                "{name} p50 {p50} ms, p90 {p90} ms, p99 {p99} ms, max {max} ms"
            ));
        }
        if let Some(lag) = &r.send_lag_ms {
            let (p99, max) = (fmt_ms(lag.p99), fmt_ms(lag.max));
            lines.push(format!("generator send lag p99 {p99} ms, max {max} ms"));
        }
        if r.errors > 0 {
            let kinds = r.error_kinds.iter().map(|(k, n)| format!("{k} {n}"));
            let kinds = kinds.collect::<Vec<_>>().join(", ");
            let first = r.first_error.as_deref().unwrap_or("-").replace('|', "/");
            lines.push(format!("errors {kinds}; first: {first}"));
        }
        out.extend(lines.iter().map(|l| format!("- {}: {l}\n", r.key)));
    }
    out
}

/// The results table of `scenarios`, mixed points' operations and extra lines.
fn table_section(file: &ResultsFile, scenarios: &[&str], about: &str) -> String {
    let wanted = |r: &&ScenarioResult| scenarios.contains(&r.scenario.as_str());
    let results: Vec<&ScenarioResult> = file.results.iter().filter(wanted).collect();
    if results.is_empty() {
        return or_not_measured(file, None, about);
    }
    let mut out = results_table(file, &results).markdown();
    for r in results.iter().filter(|r| r.scenario == "mixed") {
        let (key, model) = (&r.key, r.model.describe());
        let _ = write!(out, "\nPer operation ({key}, {model}):\n\n");
        out.push_str(&ops_table(r).markdown());
    }
    let extra = extra_lines(&results);
    if !extra.is_empty() {
        let _ = write!(out, "\n{extra}");
    }
    out
}

fn scaling_section(file: &ResultsFile) -> String {
    if file.scaling.is_empty() {
        return or_not_measured(file, None, "scaling");
    }
    let runs = file.scaling.iter().map(|run| {
        let (title, service) = (run.title(), &run.service);
        let title = format!("{title}, instances of `{service}` in one queue group:\n\n");
        title + &scaling_table(run).markdown()
    });
    runs.collect::<Vec<_>>().join("\n")
}

fn cpu_table(file: &ResultsFile) -> Table {
    let mut t = Table::new("point|CPU used, cores");
    for r in file.results.iter().filter(|r| !r.cpu.is_empty()) {
        t.row(vec![r.key.clone(), cpu_summary(&r.cpu)]);
    }
    t
}

/// The sections of results tables: name, scenarios, what notes on a skip mention.
const STOCK: &str = "stock-contention";
const TABLE_SECTIONS: [(&str, &[&str], &str); 5] = [
    ("reads", &["echo", "product-get", "product-list"], "product"),
    (STOCK, &[STOCK], STOCK),
    ("gateway-get", &["gateway-get"], "gateway"),
    ("order-place", &["order-place"], "order-place"),
    ("mixed", &["mixed"], "mixed"),
];

/// Every section's generated text.
pub fn sections(file: &ResultsFile) -> BTreeMap<&'static str, String> {
    let all: Vec<&ScenarioResult> = file.results.iter().collect();
    let (targets, results) = (targets_table(file), results_table(file, &all));
    let mut sections = BTreeMap::from([
        ("run", run_section(file)),
        ("targets", or_not_measured(file, Some(targets), "target")),
        ("results", or_not_measured(file, Some(results), "results")),
        ("scaling", scaling_section(file)),
        ("cpu", or_not_measured(file, Some(cpu_table(file)), "cpu")),
    ]);
    for (name, scenarios, about) in TABLE_SECTIONS {
        sections.insert(name, table_section(file, scenarios, about));
    }
    sections
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
                let _ = writeln!(out, "\n{}", text.trim_end());
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

    // Tables, sections and comparisons as a whole: tests/golden.rs.

    #[test]
    fn appends_are_per_ok_operation_most_first() {
        let open = Model::Open { rate: 100.0 };
        let mut r = crate::results::tests::point("order-place", None, open, 100.0, 1000);
        assert_eq!(appends_line(&r), None, "not measured: no line");
        r.appends_per_s = [("PAYMENT", 100.0), ("ORDER", 200.0), ("KV_t", 200.0)]
            .map(|(n, v)| (n.to_string(), v))
            .into();
        assert_eq!(
            appends_line(&r).unwrap(),
            "JetStream appends per ok 5.00 (KV_t 2.00, ORDER 2.00, PAYMENT 1.00); 500/s in all"
        );
        r.appends_per_s.insert("KV_registry".into(), 0.4);
        let line = appends_line(&r).unwrap();
        assert!(line.ends_with("PAYMENT 1.00); 500/s in all"), "{line}");
        r.appends_per_s = [("KV_registry".to_string(), 0.4)].into();
        assert_eq!(appends_line(&r), None, "reads: nothing worth a line");
        r.appends_per_s.insert("ORDER".into(), 200.0);
        r.appends_per_s.insert("KV_t".into(), 200.0);
        r.memory_streams.insert("KV_t".into());
        assert_eq!(
            appends_line(&r).unwrap(),
            "JetStream appends per ok 4.00, 2.00 on file (KV_t 2.00 in memory, ORDER 2.00); 400/s in all"
        );
        r.throughput_per_s = 0.0;
        assert_eq!(appends_line(&r), None, "nothing succeeded: no ratio");
    }

    #[test]
    fn broken_markers_are_refused() {
        let s = BTreeMap::new();
        assert!(rewrite("<!-- bench:a -->\nno end\n", &s).is_err());
        assert!(rewrite("<!-- bench:a -->\n<!-- bench:b -->\n<!-- /bench -->", &s).is_err());
        assert!(rewrite("<!-- bench:a \n", &s).is_err());
    }
}
