use std::{process::ExitCode, sync::Arc};

use clap::Parser;
use payment_service::{
    config::{PaymentConfig, ProviderKind},
    declaration,
    endpoints::Payments,
    local_provider::LocalProvider,
    provider::PaymentProvider,
};
use shop_actors::{telemetry, RuntimeConfig, Wiring};

/// Payment service of the shop: charges and refunds.
#[derive(Parser)]
#[command(name = "payment-service", version)]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeConfig,
    #[command(flatten)]
    payment: PaymentConfig,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(&cli.runtime.log_format);
    let payment = cli.payment;
    let result = shop_actors::run(declaration(), cli.runtime, move |ctx| async move {
        let provider: Arc<dyn PaymentProvider> = match payment.provider {
            ProviderKind::Local => Arc::new(
                LocalProvider::open(
                    &ctx.js,
                    ctx.config.js_replicas,
                    payment.local_provider_latency(),
                )
                .await?,
            ),
        };
        let settings = payment.settings();
        tracing::info!(
            provider = provider.name(),
            request_timeout_ms = settings.default_timeout.as_millis() as u64,
            "payment provider selected"
        );
        Ok(Wiring::new(Payments::new(
            ctx.events,
            provider,
            ctx.instance_id,
            settings,
        )))
    })
    .await;
    shop_actors::process::exit_code("payment-service", result)
}
