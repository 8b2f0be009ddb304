use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use product_service::{declaration, endpoints::Products, seed};
use shop_actors::{telemetry, RuntimeConfig, Wiring};

/// Catalog and inventory service of the shop.
#[derive(Parser)]
#[command(name = "product-service", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    runtime: RuntimeConfig,
    /// Most stock changes to one product stored as one event (group commit);
    /// 1 stores each reservation on its own.
    #[arg(long, env = "PRODUCT_STOCK_GROUP_MAX", default_value_t = 128, value_parser = clap::value_parser!(u16).range(1..=1024))]
    stock_group_max: u16,
}

#[derive(Subcommand)]
enum Command {
    /// Serve requests (the default).
    Serve,
    /// Create the products in FILE (a JSON array) unless they exist, as the
    /// admin (product.create is for admins: logs in with ADMIN_EMAIL and
    /// ADMIN_PASSWORD).
    Seed {
        file: PathBuf,
        /// The admin account to create the products as.
        #[arg(long, env = "ADMIN_EMAIL")]
        admin_email: String,
        /// Its password (prefer the environment).
        #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true)]
        admin_password: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(&cli.runtime.log_format);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let group_max = usize::from(cli.stock_group_max);
            shop_actors::run(declaration(), cli.runtime, move |ctx| async move {
                Ok(Wiring::new(Products::new(ctx.events, group_max)))
            })
            .await
        }
        Command::Seed {
            file,
            admin_email,
            admin_password,
        } => seed::seed(&cli.runtime.nats, &file, &admin_email, &admin_password).await,
    };
    shop_actors::process::exit_code("product-service", result)
}
