//! Failures with the exit code scripts can rely on.

use std::{path::Path, time::Duration};

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

/// Connects once, without retrying: a tool should say at once that NATS is not
/// there. With `creds` (a `.creds` file), as that identity.
pub async fn connect(url: &str, creds: Option<&Path>) -> Result<async_nats::Client, Failure> {
    let options = match creds {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| Failure::new(USAGE, format!("reading --creds {}: {e}", path.display())))?,
        None => async_nats::ConnectOptions::new(),
    };
    let servers = shop_nats::server_addrs(url).map_err(|e| Failure::new(USAGE, e.to_string()))?;
    options
        .name("shop-cli")
        .connection_timeout(Duration::from_secs(2))
        .connect(servers.as_slice())
        .await
        .map_err(|e| Failure::new(UNREACHABLE, format!("cannot reach NATS at {url}: {e} (is the system running? scripts/run.sh starts it; with auth on, pass --creds or NATS_CREDS)")))
}
