//! `shop-chaos`: robustness runs against a running system.
//!
//! `shop-chaos fuzz` sends random and mutated payloads, built from each
//! endpoint's declared request schema (`shop manifest --json`), to every
//! subject and reports any reply that breaks the contract. Exit code 1 when
//! there are findings.
//!
//! `shop-chaos run` starts the whole system (3 instances of every service),
//! places orders while killing instances and nats-server, and checks every
//! invariant from the streams (`shop_chaos::run`). Exit code 1 when one is
//! violated.

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
    /// The chaos run: start the shop, place orders under faults, check the invariants.
    Run {
        #[command(flatten)]
        config: shop_chaos::run::Config,
        /// Also write the summary as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
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

/// The chaos run: the summary in markdown, then as JSON.
async fn chaos(config: shop_chaos::run::Config, json: Option<PathBuf>) -> anyhow::Result<bool> {
    let summary = shop_chaos::run::run(&config).await?;
    let text = serde_json::to_string_pretty(&summary).context("encoding the summary")?;
    println!("{}", summary.markdown());
    println!("{text}");
    if let Some(path) = json {
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(summary.passed())
}

/// Fuzzes every endpoint the manifest at `path` declares; true when nothing was found.
async fn fuzz_command(
    nats: &shop_nats::NatsConfig,
    path: Option<PathBuf>,
    plan: &Plan,
) -> anyhow::Result<bool> {
    let manifest = manifest(path)?;
    let connection =
        shop_nats::connect(nats, shop_nats::connect::OPERATOR_IDENTITY, "shop-chaos").await?;
    let report = fuzz::run(&connection.client, &Target::all(&manifest), plan).await;
    print!("{}", report.summary());
    for finding in report.findings.iter().take(50) {
        println!(
            "FINDING {}: {} <- {}",
            finding.subject, finding.problem, finding.payload
        );
    }
    Ok(report.findings.is_empty())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, json } => chaos(config, json).await,
        Command::Fuzz {
            manifest,
            requests,
            seed,
            concurrency,
            timeout_ms,
            authorization,
        } => {
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
            fuzz_command(&cli.nats, manifest, &plan).await
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("shop-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}
