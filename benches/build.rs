//! Records the compiler version, so a results file says which rustc built the harness.

use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let output = Command::new(rustc).arg("-V").output().ok();
    let output = output.filter(|o| o.status.success());
    let version = output.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let version = version.unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SHOP_BENCH_RUSTC={version}");
    println!("cargo:rerun-if-env-changed=RUSTC");
}
