use std::{process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;
use order_service::{declaration, endpoints::Orders, saga, tokens::PaymentTokens};
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
    /// TEST ONLY: abort the process at this saga point (after_reserve, after_charge,
    /// before_confirm, after_compensate). Never set in production.
    #[arg(long, env = "ORDER_FAULT_AT")]
    fault_at: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(&cli.runtime.log_format);
    if let Some(point) = &cli.fault_at {
        if !saga::FAULT_POINTS.contains(&point.as_str()) {
            tracing::error!(point, known = ?saga::FAULT_POINTS, "unknown ORDER_FAULT_AT point");
            return ExitCode::FAILURE;
        }
        tracing::warn!(
            point,
            "ORDER_FAULT_AT is set: this instance will abort there (test-only)"
        );
    }
    let data_keys = match DataKeys::from_env("ORDER_DATA_KEY") {
        Ok(keys) => keys,
        Err(e) => {
            let missing = Err(anyhow::anyhow!("order data key: {e}"));
            return shop_actors::process::exit_code("order-service", missing);
        }
    };
    let (deadline, ack_wait, concurrency, fault_at) = (
        Duration::from_secs(cli.deadline_secs),
        Duration::from_secs(cli.saga_ack_wait_secs.max(1)),
        cli.saga_concurrency.max(1),
        cli.fault_at.clone(),
    );
    let result =
        shop_actors::run(declaration(), cli.runtime, move |ctx| async move {
            let tokens = PaymentTokens::open(&ctx.js, ctx.config.js_replicas, data_keys).await?;
            let saga = Arc::new(saga::Saga {
                events: ctx.events.clone(),
                client: ctx.client.clone(),
                tokens: tokens.clone(),
                fault_at,
            });
            tokio::spawn(saga::sweep_overdue(saga.clone(), deadline));
            Ok(Wiring::new(Orders::new(ctx.events, ctx.client, tokens))
                .with_consumer(saga::consumer(saga, ack_wait, concurrency)))
        })
        .await;
    shop_actors::process::exit_code("order-service", result)
}
