//! `shop-chaos`: robustness runs against a running system.
//!
//! `shop-chaos fuzz` sends random and mutated payloads, built from each
//! endpoint's declared request schema (`shop manifest --json`), to every
//! subject and reports any reply that breaks the contract. Exit code 1 when
//! there are findings.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use shop_chaos::fuzz::{self, Plan, Target};
use shop_nats::manifest::Manifest;

#[derive(Parser)]
#[command(
    name = "shop-chaos",
    version,
    about = "Robustness runs against a running shop"
)]
struct Cli {
    #[command(flatten)]
    nats: shop_nats::NatsConfig,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fuzz every declared endpoint over raw NATS.
    Fuzz {
        /// `shop manifest --json` output; by default `shop` next to this binary is asked.
        #[arg(long)]
        manifest: Option<PathBuf>,
        #[arg(long, default_value_t = 1_000_000)]
        requests: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Per request, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// `Authorization` header to send (e.g. `Bearer <token>`).
        #[arg(long, env = "SHOP_FUZZ_AUTHORIZATION", hide_env_values = true)]
        authorization: Option<String>,
    },
}

fn manifest(path: Option<PathBuf>) -> anyhow::Result<Manifest> {
    let json = match path {
        Some(path) => {
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?
        }
        None => {
            let shop = std::env::current_exe()?
                .parent()
                .map(|d| d.join("shop"))
                .context("locating the shop binary")?;
            let out = std::process::Command::new(&shop)
                .args(["manifest", "--json"])
                .output()
                .with_context(|| format!("running {} manifest --json", shop.display()))?;
            anyhow::ensure!(out.status.success(), "shop manifest --json failed");
            out.stdout
        }
    };
    serde_json::from_slice(&json).context("decoding the manifest")
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = async {
        let Command::Fuzz {
            manifest: path,
            requests,
            seed,
            concurrency,
            timeout_ms,
            authorization,
        } = cli.command;
        let manifest = manifest(path)?;
        let connection = shop_nats::connect(
            &cli.nats,
            shop_nats::connect::OPERATOR_IDENTITY,
            "shop-chaos",
        )
        .await?;
        let mut headers = async_nats::HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert("Authorization", value.as_str());
        }
        let plan = Plan {
            requests,
            seed,
            concurrency,
            timeout: Duration::from_millis(timeout_ms),
            headers,
        };
        let report = fuzz::run(&connection.client, &Target::all(&manifest), &plan).await;
        print!("{}", report.summary());
        for finding in report.findings.iter().take(50) {
            println!(
                "FINDING {}: {} <- {}",
                finding.subject, finding.problem, finding.payload
            );
        }
        anyhow::Ok(report.findings.is_empty())
    }
    .await;
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("shop-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}
