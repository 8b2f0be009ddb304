//! Failures with the exit code scripts can rely on.

use std::time::Duration;

pub const SERVICE_ERROR: u8 = 1;
pub const USAGE: u8 = 2;
pub const UNREACHABLE: u8 = 3;
pub const NO_ANSWER: u8 = 4;
/// `shop up`: a part of the system could not be started.
pub const START_FAILED: u8 = 5;

#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Connects once, without retrying: a tool should say at once that NATS is not there.
pub async fn connect(url: &str) -> Result<async_nats::Client, Failure> {
    async_nats::ConnectOptions::new()
        .name("shop-cli")
        .connection_timeout(Duration::from_secs(2))
        .connect(url)
        .await
        .map_err(|e| Failure::new(UNREACHABLE, format!("cannot reach NATS at {url}: {e} (is the system running? scripts/run.sh starts it)")))
}
