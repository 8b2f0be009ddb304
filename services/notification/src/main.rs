use std::{process::ExitCode, sync::Arc};

use clap::Parser;
use notification_service::{
    declaration,
    endpoints::Notifications,
    notifier::{self, Notifier},
    settings::NotifySettings,
};
use shop_actors::{telemetry, RuntimeConfig, Wiring};

/// Notification service of the shop: welcome and order messages to users.
#[derive(Parser)]
#[command(name = "notification-service", version)]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeConfig,
    #[command(flatten)]
    notify: NotifySettings,
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let Cli { runtime, notify } = cli;
    notify.validate()?;
    let backoff = notify.backoff()?;
    let mailer = notify.mailer(&runtime.data_dir)?;
    tracing::info!(mailer = mailer.describe(), fault = ?notify.fault, "delivering messages");
    shop_actors::run(declaration(), runtime, move |ctx| async move {
        let notifier = Arc::new(Notifier::new(
            ctx.events.clone(),
            mailer,
            notify.mail_from.clone(),
            notify.fault,
        ));
        let notifications = Notifications::new(ctx.state.clone());
        Ok(notifier::consumers(&notify, &backoff, notifier)
            .into_iter()
            .fold(Wiring::new(notifications), Wiring::with_consumer))
    })
    .await
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(&cli.runtime.log_format);
    shop_actors::process::exit_code("notification-service", serve(cli).await)
}
