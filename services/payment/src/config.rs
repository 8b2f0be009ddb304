//! The payment service's own settings, as flags with environment fallbacks.

use std::time::Duration;

/// Tunables of the request handling.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Time budget of a request without a `Shop-Timeout-Ms` header.
    pub default_timeout: Duration,
}

/// Which [`crate::provider::PaymentProvider`] serves charges and refunds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderKind {
    /// The local processor over the `payment_provider_local` key-value ledger.
    Local,
}

/// The payment service's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct PaymentConfig {
    /// Payment provider: `local` (the only one built in; see docs/payment.md for adding one).
    #[arg(long, env = "PAYMENT_PROVIDER", value_enum, default_value = "local")]
    pub provider: ProviderKind,
    /// Time a charge or refund may take when the request has no `Shop-Timeout-Ms` header.
    #[arg(long, env = "PAYMENT_REQUEST_TIMEOUT_MS", default_value_t = 1_500)]
    pub request_timeout_ms: u64,
    /// Latency the local provider adds to each call, as a network round trip would.
    #[arg(long, env = "LOCAL_PROVIDER_LATENCY_MS", default_value_t = 20)]
    pub local_provider_latency_ms: u64,
}

impl PaymentConfig {
    /// The request-handling tunables these flags set.
    pub fn settings(&self) -> Settings {
        Settings {
            default_timeout: Duration::from_millis(self.request_timeout_ms),
        }
    }

    /// The latency the local provider adds to each call.
    pub fn local_provider_latency(&self) -> Duration {
        Duration::from_millis(self.local_provider_latency_ms)
    }
}
