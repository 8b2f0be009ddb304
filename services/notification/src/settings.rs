//! The notification service's own settings (flags with environment fallbacks),
//! next to the runtime's shared ones.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;

use crate::{
    mailer::{self, Mailer},
    mbox::MboxMailer,
    smtp::SmtpMailer,
    spool::SpoolMailer,
};

/// How the spool (the mailer when `SMTP_URL` is unset) keeps messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SpoolFormat {
    /// Appended to mbox segments, synced in groups ([`MboxMailer`]).
    #[default]
    #[value(name = "mbox")]
    Mbox,
    /// One `.eml` file per message, as a relay's pickup directory takes them
    /// ([`SpoolMailer`]); a file creation and a sync per message.
    #[value(name = "eml")]
    Eml,
}

/// Test-only fault injection (`NOTIFICATION_FAULT`): stops processing at a
/// chosen point of an event's first delivery, so tests can kill the process
/// exactly there. Off by default; never set it in production.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    #[default]
    #[value(name = "none")]
    None,
    /// Hang after the message was delivered, before `notification.sent` is recorded.
    #[value(name = "pause_after_delivery")]
    PauseAfterDelivery,
    /// Hang after `notification.sent` is recorded, before the event is acknowledged.
    #[value(name = "pause_after_record")]
    PauseAfterRecord,
    /// Abort the process after `notification.sent` is recorded, before the ack.
    #[value(name = "abort_after_record")]
    AbortAfterRecord,
}

#[derive(Debug, Clone, clap::Args)]
pub struct NotifySettings {
    /// The spool directory, where messages go when SMTP_URL is not set
    /// (default `<DATA_DIR>/spool`).
    #[arg(long, env = "SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// How the spool keeps messages: `mbox` (appended to mbox segments, one
    /// sync per group) or `eml` (a file per message, for a relay's pickup
    /// directory).
    #[arg(long, env = "SPOOL_FORMAT", value_enum, default_value_t = SpoolFormat::Mbox)]
    pub spool_format: SpoolFormat,
    /// SMTP server URL: `smtp://host:port`, `smtp://host:port?tls=required`,
    /// `smtps://host:port`, optionally with `user:password@`. Unset: the spool.
    #[arg(long, env = "SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// Timeout of one SMTP delivery, in seconds.
    #[arg(long, env = "SMTP_TIMEOUT_SECS", default_value_t = 10)]
    pub smtp_timeout_secs: u64,
    /// Sender of every message, e.g. `Shop <shop@example.com>`.
    #[arg(long, env = "MAIL_FROM", default_value = "shop@localhost")]
    pub mail_from: String,
    /// Attempts per event before it is dead-lettered.
    #[arg(long, env = "NOTIFY_MAX_DELIVER", default_value_t = 5)]
    pub max_deliver: i64,
    /// Waits before redelivery after attempt 1, 2, ... in milliseconds, comma-separated; the last repeats.
    #[arg(
        long,
        env = "NOTIFY_BACKOFF_MS",
        default_value = "1000,2000,5000,10000"
    )]
    pub backoff_ms: String,
    /// Seconds an event may stay unacknowledged before the server hands it to
    /// another instance (the time a crashed instance's events wait).
    #[arg(long, env = "NOTIFY_ACK_WAIT_SECS", default_value_t = 30)]
    pub ack_wait_secs: u64,
    /// Events handled at once per consumer and instance.
    #[arg(long, env = "NOTIFY_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// Test-only fault injection; see `docs/notification.md`.
    #[arg(long, env = "NOTIFICATION_FAULT", value_enum, default_value_t = Fault::None)]
    pub fault: Fault,
}

impl NotifySettings {
    /// The retry waits from `NOTIFY_BACKOFF_MS`.
    pub fn backoff(&self) -> anyhow::Result<Vec<Duration>> {
        parse_backoff(&self.backoff_ms)
    }

    /// Checks the retry settings before anything starts.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=100).contains(&self.max_deliver),
            "NOTIFY_MAX_DELIVER must be from 1 to 100, got {}",
            self.max_deliver
        );
        anyhow::ensure!(
            (1..=256).contains(&self.concurrency),
            "NOTIFY_CONCURRENCY must be from 1 to 256, got {}",
            self.concurrency
        );
        anyhow::ensure!(
            self.ack_wait_secs >= 1
                && (self.smtp_url.as_deref().is_none_or(|u| u.trim().is_empty())
                    || self.ack_wait_secs > self.smtp_timeout_secs),
            "NOTIFY_ACK_WAIT_SECS ({}) must be at least 1 and, with SMTP_URL, longer than SMTP_TIMEOUT_SECS ({}): a slower delivery would be handed to a second instance",
            self.ack_wait_secs,
            self.smtp_timeout_secs
        );
        self.backoff()?;
        mailer::parse_from(&self.mail_from)?;
        Ok(())
    }

    /// SMTP when `SMTP_URL` is set, else the spool directory.
    pub fn mailer(&self, data_dir: &std::path::Path) -> anyhow::Result<Arc<dyn Mailer>> {
        let from = mailer::parse_from(&self.mail_from)?;
        match self.smtp_url.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => Ok(Arc::new(SmtpMailer::new(
                url,
                from,
                Duration::from_secs(self.smtp_timeout_secs.max(1)),
            )?)),
            _ => {
                let dir = self
                    .spool_dir
                    .clone()
                    .unwrap_or_else(|| data_dir.join("spool"));
                Ok(match self.spool_format {
                    SpoolFormat::Mbox => Arc::new(MboxMailer::new(dir, from)?),
                    SpoolFormat::Eml => Arc::new(SpoolMailer::new(dir, from)?),
                })
            }
        }
    }
}

/// `"100,200,500"` → 100 ms, 200 ms, 500 ms.
pub fn parse_backoff(text: &str) -> anyhow::Result<Vec<Duration>> {
    let waits = text
        .split(',')
        .map(|part| {
            let part = part.trim();
            part.parse::<u64>()
                .ok()
                .filter(|ms| *ms <= 3_600_000)
                .map(Duration::from_millis)
                .with_context(|| {
                    format!("NOTIFY_BACKOFF_MS: {part:?} is not a wait of 0 to 3600000 ms")
                })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(waits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        notify: NotifySettings,
    }

    #[test]
    fn backoff_lists() {
        assert_eq!(
            parse_backoff("100, 200,5000").unwrap(),
            [100, 200, 5000].map(Duration::from_millis)
        );
        assert!(parse_backoff("").is_err());
        assert!(parse_backoff("1,x").is_err());
        assert!(parse_backoff("-5").is_err());
    }

    #[test]
    fn defaults_and_faults() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.notify.fault, Fault::None);
        assert_eq!(cli.notify.mail_from, "shop@localhost");
        cli.notify.validate().unwrap();
        let cli = Cli::try_parse_from(["x", "--fault", "pause_after_record"]).unwrap();
        assert_eq!(cli.notify.fault, Fault::PauseAfterRecord);
        assert!(Cli::try_parse_from(["x", "--fault", "explode"]).is_err());
        let cli = Cli::try_parse_from(["x", "--max-deliver", "0"]).unwrap();
        assert!(cli.notify.validate().is_err());
        let cli = Cli::try_parse_from([
            "x",
            "--smtp-url",
            "smtp://127.0.0.1:25",
            "--ack-wait-secs",
            "5",
        ])
        .unwrap();
        assert!(
            cli.notify.validate().is_err(),
            "ack wait under the SMTP timeout"
        );
        let cli = Cli::try_parse_from(["x", "--ack-wait-secs", "5"]).unwrap();
        cli.notify.validate().unwrap();
    }

    #[test]
    fn spool_is_the_default_under_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let cli = Cli::try_parse_from(["x"]).unwrap();
        let mailer = cli.notify.mailer(dir.path()).unwrap();
        assert_eq!(
            mailer.describe(),
            format!("spool:{} (mbox)", dir.path().join("spool").display())
        );
        assert!(dir.path().join("spool").is_dir());
        let cli = Cli::try_parse_from(["x", "--spool-format", "eml"]).unwrap();
        assert_eq!(
            cli.notify.mailer(dir.path()).unwrap().describe(),
            format!("spool:{}", dir.path().join("spool").display())
        );
        assert!(Cli::try_parse_from(["x", "--spool-format", "maildir"]).is_err());
        let cli = Cli::try_parse_from(["x", "--smtp-url", "smtp://u:pw@127.0.0.1:2525"]).unwrap();
        assert_eq!(
            cli.notify.mailer(dir.path()).unwrap().describe(),
            "smtp://127.0.0.1:2525"
        );
    }
}
