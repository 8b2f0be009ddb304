use std::{process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use shop_actors::{telemetry, RuntimeConfig, Wiring};
use shop_nats::{clock, sealed::DataKeys};
use user_service::{
    bootstrap, config::UserConfig, declaration, endpoints::Users, keys::KeyRing, password::Hasher,
    reseal,
};

/// The environment variables naming the user data key (`_FILE`, `_PREVIOUS`...).
const DATA_KEY: &str = "USER_DATA_KEY";

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
    /// Seal every secret (signing keys, password hashes) again with the
    /// current USER_DATA_KEY, after a data key rotation: then the previous
    /// key (USER_DATA_KEY_PREVIOUS_FILE) can be dropped.
    Reseal,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(&cli.runtime.log_format);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.runtime, cli.user).await,
        Command::RotateKeys => rotate_keys(cli.runtime, cli.user).await,
        Command::Reseal => reseal_secrets(cli.runtime).await,
    };
    shop_actors::process::exit_code("user-service", result)
}

/// The user data keys, or why the service cannot start.
fn data_keys() -> anyhow::Result<DataKeys> {
    DataKeys::from_env(DATA_KEY).map_err(|e| anyhow::anyhow!("user data key: {e}"))
}

async fn serve(runtime: RuntimeConfig, user: UserConfig) -> anyhow::Result<()> {
    let data_keys = data_keys()?;
    let settings = user.settings()?;
    let admin = user.admin_account()?;
    let hasher = Hasher::new(settings.hash_cost, settings.hash_concurrency).await?;
    shop_actors::run(declaration(), runtime, move |ctx| async move {
        let users = Arc::new(Users::open(&ctx, hasher, settings, data_keys).await?);
        if let Some(admin) = admin {
            tokio::spawn(bootstrap::bootstrap_admin(users.clone(), admin));
        }
        Ok(Wiring::new(users))
    })
    .await
}

async fn rotate_keys(runtime: RuntimeConfig, user: UserConfig) -> anyhow::Result<()> {
    let data_keys = data_keys()?;
    let settings = user.settings()?;
    let connection = shop_nats::connect(&runtime.nats, "user", "user-rotate-keys").await?;
    let js = async_nats::jetstream::new(connection.client.clone());
    let ring = KeyRing::open(&js, runtime.js_replicas, data_keys).await?;
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

async fn reseal_secrets(runtime: RuntimeConfig) -> anyhow::Result<()> {
    let data_keys = data_keys()?;
    let connection = shop_nats::connect(&runtime.nats, "user", "user-reseal").await?;
    let js = async_nats::jetstream::new(connection.client.clone());
    let ring = KeyRing::open(&js, runtime.js_replicas, data_keys).await?;
    let done = reseal::reseal(&js, &ring).await?;
    println!("{}", serde_json::to_string(&done)?);
    connection.client.flush().await?;
    Ok(())
}
