use std::{process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;
use order_service::{
    admission::Admission,
    declaration,
    endpoints::Orders,
    saga,
    tokens::{PaymentTokens, TokenStorage},
};
use shop_actors::{telemetry, RuntimeConfig, Wiring};
use shop_nats::sealed::DataKeys;

/// Orders and the order-placement saga.
#[derive(Parser)]
#[command(name = "order-service", version)]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeConfig,
    /// Orders whose saga has not finished after this many seconds are compensated and cancelled.
    #[arg(long, env = "ORDER_DEADLINE_SECS", default_value_t = 60)]
    deadline_secs: u64,
    /// Seconds before another instance takes over a saga step of an instance that stopped answering.
    #[arg(long, env = "ORDER_SAGA_ACK_WAIT_SECS", default_value_t = 10)]
    saga_ack_wait_secs: u64,
    /// Saga steps handled at once per instance.
    #[arg(long, env = "ORDER_SAGA_CONCURRENCY", default_value_t = 64)]
    saga_concurrency: usize,
    /// Longest wait, in seconds, between two attempts of a saga step that keeps
    /// failing (the wait doubles from 0.2 s up to this).
    #[arg(long, env = "ORDER_SAGA_RETRY_MAX_SECS", default_value_t = 30)]
    saga_retry_max_secs: u64,
    /// A warning is logged once an order's compensation has been failing this many seconds.
    #[arg(long, env = "ORDER_COMPENSATION_WARN_SECS", default_value_t = 30)]
    compensation_warn_secs: u64,
    /// Attempts before a saga step that keeps failing transiently is
    /// dead-lettered; 0 (the default): never, it is retried until it succeeds.
    /// For tests that need dead letters.
    #[arg(long, env = "ORDER_SAGA_MAX_DELIVER", default_value_t = 0)]
    saga_max_deliver: i64,
    /// Orders this instance accepts and has not finished, at most; past it
    /// `order.create` answers 503 at once ("retry after 1 s"). 0: no limit.
    #[arg(long, env = "ORDER_MAX_IN_FLIGHT", default_value_t = 128)]
    max_in_flight: usize,
    /// Where payment tokens wait for the charge: `auto` (memory when the
    /// bucket has more than one replica, `JS_REPLICAS`; else file), `memory`
    /// (never on a disk, no fsync per order; a token is lost, and its order
    /// cancelled with `payment_token_lost`, only if every server holding the
    /// bucket restarts before the charge) or `file` (survives that too). A
    /// bucket keeps the storage it was created with.
    #[arg(long, env = "ORDER_TOKEN_STORAGE", value_enum, default_value_t = TokenStorage::Auto)]
    token_storage: TokenStorage,
    /// TEST ONLY: abort the process at these saga points (after_reserve,
    /// after_charge, before_confirm, after_compensate), or hold the step there
    /// until the order's saga has ended (hold_before_charge, hold_after_charge);
    /// comma-separated. Never set in production.
    #[arg(long, env = "ORDER_FAULT_AT", value_delimiter = ',')]
    fault_at: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(&cli.runtime.log_format);
    for point in &cli.fault_at {
        if !saga::FAULT_POINTS.contains(&point.as_str()) {
            tracing::error!(point, known = ?saga::FAULT_POINTS, "unknown ORDER_FAULT_AT point");
            return ExitCode::FAILURE;
        }
        tracing::warn!(
            point,
            "ORDER_FAULT_AT is set: this instance will abort or hold its saga step there (test-only)"
        );
    }
    let data_keys = match DataKeys::from_env("ORDER_DATA_KEY") {
        Ok(keys) => keys,
        Err(e) => {
            let missing = Err(anyhow::anyhow!("order data key: {e}"));
            return shop_actors::process::exit_code("order-service", missing);
        }
    };
    let deadline = Duration::from_secs(cli.deadline_secs);
    let warn_after = Duration::from_secs(cli.compensation_warn_secs);
    let settings = saga::SagaSettings {
        ack_wait: Duration::from_secs(cli.saga_ack_wait_secs.max(1)),
        concurrency: cli.saga_concurrency.max(1),
        retry_max: Duration::from_secs(cli.saga_retry_max_secs.max(1)),
        max_deliver: (cli.saga_max_deliver > 0).then_some(cli.saga_max_deliver),
    };
    let fault_at = cli.fault_at.clone();
    let admission = Admission::new(cli.max_in_flight);
    let token_storage = cli.token_storage;
    let result = shop_actors::run(declaration(), cli.runtime, move |ctx| async move {
        let tokens =
            PaymentTokens::open(&ctx.js, ctx.config.js_replicas, token_storage, data_keys).await?;
        let saga = Arc::new(saga::Saga {
            events: ctx.events.clone(),
            client: ctx.client.clone(),
            tokens: tokens.clone(),
            retries: saga::CompensationRetries::new(&ctx.metrics, warn_after)?,
            fault_at,
        });
        tokio::spawn(saga::sweep_overdue(saga.clone(), deadline));
        Ok(
            Wiring::new(Orders::new(ctx.events, ctx.client, tokens, admission))
                .with_consumer(saga::consumer(saga, &settings)),
        )
    })
    .await;
    shop_actors::process::exit_code("order-service", result)
}
