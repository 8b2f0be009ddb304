use std::{process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use shop_actors::{telemetry, RuntimeConfig, Wiring};
use shop_nats::clock;
use user_service::{
    bootstrap, config::UserConfig, declaration, endpoints::Users, keys::KeyRing, password::Hasher,
};

/// Accounts, credentials, profiles and token signing for the shop.
#[derive(Parser)]
#[command(name = "user-service", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    runtime: RuntimeConfig,
    #[command(flatten)]
    user: UserConfig,
}

#[derive(Subcommand)]
enum Command {
    /// Serve requests (the default).
    Serve,
    /// Make a new token signing key current; the previous one stays published
    /// for TOKEN_TTL_SECS so the tokens it signed keep verifying.
    RotateKeys,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(&cli.runtime.log_format);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.runtime, cli.user).await,
        Command::RotateKeys => rotate_keys(cli.runtime, cli.user).await,
    };
    shop_actors::process::exit_code("user-service", result)
}

async fn serve(runtime: RuntimeConfig, user: UserConfig) -> anyhow::Result<()> {
    let settings = user.settings()?;
    let admin = user.admin_account()?;
    let hasher = Hasher::new(settings.hash_cost, settings.hash_concurrency).await?;
    shop_actors::run(declaration(), runtime, move |ctx| async move {
        let users = Arc::new(Users::open(&ctx, hasher, settings).await?);
        if let Some(admin) = admin {
            tokio::spawn(bootstrap::bootstrap_admin(users.clone(), admin));
        }
        Ok(Wiring::new(users))
    })
    .await
}

async fn rotate_keys(runtime: RuntimeConfig, user: UserConfig) -> anyhow::Result<()> {
    let settings = user.settings()?;
    let connection = shop_nats::connect(&runtime.nats, "user", "user-rotate-keys").await?;
    let js = async_nats::jetstream::new(connection.client.clone());
    let ring = KeyRing::open(&js, runtime.js_replicas).await?;
    let set = ring.rotate(clock::now_secs(), settings.token_ttl).await?;
    let current = set.current()?.kid.clone();
    let published: Vec<&str> = set.keys.iter().rev().map(|k| k.kid.as_str()).collect();
    println!(
        "{}",
        serde_json::json!({"current": current, "keys": published})
    );
    connection.client.flush().await?;
    Ok(())
}
