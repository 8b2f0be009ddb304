//! `shop`: talk to a running shop from the command line.
//!
//! Exit codes: 0 success, 1 the service answered with an error, 2 bad usage,
//! 3 NATS unreachable, 4 nobody answered (no responders or timeout).

mod exit;
mod http;
mod req;
mod status;
mod targets;

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "shop",
    version,
    about = "Talk to a running shop: requests, status, Prometheus discovery"
)]
struct Cli {
    /// NATS server URL.
    #[arg(long, short = 's', global = true, env = "NATS_URL", default_value = shop_nats::connect::DEFAULT_NATS_URL)]
    server: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send a request and print the reply (pretty JSON) or the error.
    Req {
        subject: String,
        /// JSON payload.
        #[arg(default_value = "{}")]
        json: String,
        /// Seconds to wait for the reply.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// Every live instance with version, uptime, health, counts, latency and lag.
    Status {
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write Prometheus file-based discovery targets for every instance, and keep
    /// the file up to date as instances come and go.
    PrometheusTargets {
        file: std::path::PathBuf,
        /// Write once and exit.
        #[arg(long)]
        once: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = async {
        let client = exit::connect(&cli.server).await?;
        match cli.command {
            Command::Req {
                subject,
                json,
                timeout,
            } => {
                req::run(
                    &client,
                    &subject,
                    &json,
                    Duration::from_secs_f64(timeout.max(0.001)),
                )
                .await
            }
            Command::Status { service, json } => {
                status::run(&client, service.as_deref(), json).await
            }
            Command::PrometheusTargets { file, once } => targets::run(&client, &file, once).await,
        }
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("shop: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
