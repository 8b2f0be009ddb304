//! Regenerates the tables in BENCHMARKS.md from a results file. Generated text
//! lives between `<!-- bench:NAME -->` and `<!-- /bench -->`; everything
//! outside the markers (prose, earlier measurements) is left as it is.
//!
//! Sections: `run`, `targets`, `results`, `reads`, `stock-contention`,
//! `gateway-get`, `order-place`, `mixed`, `scaling`, `cpu`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::results::{ResultsFile, ScenarioResult};
use crate::table::{
    cpu_summary, fmt_ms, fmt_rate, fmt_secs, ops_table, results_table, scaling_table,
    targets_table, Align, Table,
};

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
    let root = crate::machine::workspace_root().display().to_string();
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
            schema: crate::results::SCHEMA.into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            command: "suite --quick".into(),
            machine: crate::machine::machine(),
            versions: Default::default(),
            settings: Default::default(),
            results: Vec::new(),
            scaling: Vec::new(),
            targets: Vec::new(),
            notes: vec!["gateway-get skipped: no gateway binary".into()],
        };
        let s = sections(&file);
        assert!(s["gateway-get"].contains("Not measured"));
        assert!(s["gateway-get"].contains("no gateway binary"));
        assert!(s["run"].contains("suite --quick"));
    }
}
