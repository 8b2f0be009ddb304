//! What a result was measured on: the machine and the versions of everything
//! involved, so two results files can be told apart.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The host (Linux: from /proc and /etc/os-release; other systems: what is known).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    pub cpu_model: String,
    /// Logical CPUs this process may use.
    pub cores: usize,
    pub memory_bytes: u64,
    pub os: String,
    pub kernel: String,
    pub arch: String,
}

/// Versions of the harness, the compiler, the NATS server and the code measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Versions {
    pub shop_bench: String,
    /// The compiler that built the harness (the suite builds the services with the same one).
    pub rustc: String,
    /// As reported by the server the run connected to.
    pub nats_server: Option<String>,
    pub git_rev: Option<String>,
    /// Uncommitted changes in the working tree.
    pub git_dirty: Option<bool>,
    /// Node.js, when the Express baseline ran.
    pub node: Option<String>,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    Machine {
        cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".to_string()),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        memory_bytes: mem_total_bytes(&meminfo).unwrap_or(0),
        os: pretty_name(&os_release).unwrap_or_else(|| std::env::consts::OS.to_string()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string()),
        arch: std::env::consts::ARCH.to_string(),
    }
}

/// Versions known without a server; fill `nats_server` and `node` as they are met.
pub fn versions(root: &Path) -> Versions {
    let (git_rev, git_dirty) = git_state(root);
    Versions {
        shop_bench: env!("CARGO_PKG_VERSION").to_string(),
        rustc: env!("SHOP_BENCH_RUSTC").to_string(),
        nats_server: None,
        git_rev,
        git_dirty,
        node: None,
    }
}

/// `git rev-parse HEAD` and whether `git status --porcelain` lists anything.
pub fn git_state(root: &Path) -> (Option<String>, Option<bool>) {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rev = run(&["rev-parse", "HEAD"]);
    let dirty = run(&["status", "--porcelain"]).map(|s| !s.is_empty());
    (rev, dirty)
}

/// First line of `<program> --version`, if it runs.
pub fn program_version(program: &Path) -> Option<String> {
    let out = Command::new(program).arg("--version").output().ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| {
            l.starts_with("model name") || l.starts_with("Model") || l.starts_with("Hardware")
        })
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn pretty_name(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        assert_eq!(
            cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n").as_deref(),
            Some("AMD EPYC 7B13")
        );
        assert_eq!(
            mem_total_bytes("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000 * 1024)
        );
        assert_eq!(
            pretty_name("NAME=\"Ubuntu\"\nPRETTY_NAME=\"Ubuntu 24.04 LTS\"\n").as_deref(),
            Some("Ubuntu 24.04 LTS")
        );
    }

    #[test]
    fn knows_this_machine_and_build() {
        let m = machine();
        assert!(m.cores >= 1);
        let v = versions(&shop_process::workspace_root());
        assert!(v.rustc.starts_with("rustc "), "{}", v.rustc);
    }
}
