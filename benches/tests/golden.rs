//! The outputs of the results files in tests/golden/, byte for byte; after a deliberate
//! change: `GOLDEN_UPDATE=1 cargo test -p shop-bench --test golden`.

use std::fs;
use std::path::Path;

use shop_bench::report;
use shop_bench::results::{check_targets, ResultsFile};

/// `file` as `shop-bench report` prints it, and its BENCHMARKS.md sections.
fn outputs(file: &mut ResultsFile) -> (String, String) {
    let root = shop_process::workspace_root().display().to_string();
    file.command = file.command.replace("{root}", &root);
    file.targets = check_targets(file);
    let sections = report::sections(file);
    let marker = |n: &&str| format!("<!-- bench:{n} -->\nold\n<!-- /bench -->\n");
    let kept = "prose\n<!-- bench:zzz -->\nkept\n<!-- /bench -->\n";
    let template = sections.keys().map(marker).collect::<String>() + kept;
    let (markdown, _) = report::rewrite(&template, &sections).expect("well-formed markers");
    let again = report::rewrite(&markdown, &sections).expect("well-formed markers");
    assert_eq!(again.0, markdown, "rewriting again changes nothing");
    (report::report_text(file), markdown)
}

#[test]
fn outputs_are_as_documented() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("GOLDEN_UPDATE").is_some();
    let read = |name: &str| ResultsFile::read(&dir.join(name)).expect(name);
    let (mut new, old) = (read("new.json"), read("old.json"));
    let (mut first, mut empty) = (read("first.json"), read("empty.json"));
    let mut expected = Vec::new();
    for (name, file) in [("new.json", &new), ("old.json", &old)] {
        let written = serde_json::to_string_pretty(file).expect("serializes") + "\n";
        expected.push((name.to_string(), written));
    }
    expected.push(("compare.txt".into(), report::compare_text(&new, &old)));
    for (name, file) in [
        ("new", &mut new),
        ("first", &mut first),
        ("empty", &mut empty),
    ] {
        let (text, markdown) = outputs(file);
        expected.push((format!("{name}-report.txt"), text));
        expected.push((format!("{name}-sections.md"), markdown));
    }
    for (name, text) in expected {
        let path = dir.join(&name);
        if update {
            fs::write(&path, &text).expect("writing an expected output");
        }
        let want = fs::read_to_string(&path).expect("an expected output");
        assert!(text == want, "{name} is not as before; it is now:\n{text}");
    }
}
