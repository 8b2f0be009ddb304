//! The machine and versions a result was measured on, to tell results files apart.

use std::path::Path;
use std::process::Command;

use procfs::{CpuInfo, Current, Meminfo};
use serde::{Deserialize, Serialize};

/// The host (Linux: from /proc and /etc/os-release; other systems: what is known).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
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
    pub git_dirty: Option<bool>,
    pub node: Option<String>,
}

/// This machine, as far as it can be known.
pub fn machine() -> Machine {
    let cpu_info = CpuInfo::current().ok();
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let mut lines = os_release.lines();
    let pretty_name = lines.find_map(|l| l.strip_prefix("PRETTY_NAME="));
    let os = pretty_name.map_or(std::env::consts::OS, |n| n.trim_matches('"'));
    let cpu_model = cpu_info.as_ref().and_then(|c| c.model_name(0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease");
    Machine {
        cpu_model: cpu_model.unwrap_or("unknown").to_string(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_bytes: Meminfo::current().map_or(0, |m| m.mem_total),
        os: os.to_string(),
        kernel: kernel.map_or("unknown".to_string(), |k| k.trim().to_string()),
        arch: std::env::consts::ARCH.to_string(),
    }
}

/// Versions known without a server (`nats_server` and `node` are filled in later).
pub fn versions(root: &Path) -> Versions {
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).current_dir(root).output();
        let out = out.ok().filter(|o| o.status.success())?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    Versions {
        shop_bench: env!("CARGO_PKG_VERSION").to_string(),
        rustc: env!("SHOP_BENCH_RUSTC").to_string(),
        git_rev: git(&["rev-parse", "HEAD"]),
        git_dirty: git(&["status", "--porcelain"]).map(|s| !s.is_empty()),
        ..Versions::default()
    }
}

/// First line of `<program> --version` (or of what it wrote to stderr), if it runs.
pub fn program_version(program: &Path) -> Option<String> {
    let out = Command::new(program).arg("--version").output().ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    let text = String::from_utf8_lossy(&text);
    Some(text.lines().next()?.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_this_machine_and_build() {
        let m = machine();
        let known = m.cores >= 1 && m.memory_bytes > 0 && m.cpu_model != "unknown";
        assert!(known, "{m:?}");
        let v = versions(&shop_process::workspace_root());
        assert!(v.rustc.starts_with("rustc "), "{}", v.rustc);
    }
}
