use std::process::ExitCode;

use clap::Parser;
use gateway::config::GatewayConfig;
use shop_actors::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let config = GatewayConfig::parse();
    telemetry::init(&config.log_format);
    match gateway::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "gateway failed");
            ExitCode::FAILURE
        }
    }
}
