//! Connecting to NATS from configuration.

use std::{path::PathBuf, time::Duration};

use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use rand::Rng;
use tokio::sync::broadcast;

/// Where and how to connect: the flags (and environment variables) every
/// binary that talks to NATS shares, flattened into its own settings.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsConfig {
    /// NATS server URL(s), comma-separated.
    #[arg(long = "nats-url", env = "NATS_URL", default_value = DEFAULT_NATS_URL)]
    pub url: String,
    /// NATS credentials file (JWT + NKey seed).
    #[arg(long = "nats-creds", env = "NATS_CREDS")]
    pub creds: Option<PathBuf>,
    #[arg(long = "nats-user", env = "NATS_USER")]
    pub user: Option<String>,
    #[arg(long = "nats-password", env = "NATS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    #[arg(long = "nats-token", env = "NATS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_NATS_URL.to_string(),
            creds: None,
            user: None,
            password: None,
            token: None,
        }
    }
}

impl NatsConfig {
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            url: var("NATS_URL").unwrap_or_else(|| DEFAULT_NATS_URL.to_string()),
            creds: var("NATS_CREDS").map(PathBuf::from),
            user: var("NATS_USER"),
            password: var("NATS_PASSWORD"),
            token: var("NATS_TOKEN"),
        }
    }

    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    async fn options(
        &self,
        identity: &str,
        connection_name: &str,
        events: broadcast::Sender<ConnectionEvent>,
    ) -> std::io::Result<ConnectOptions> {
        let mut opts = match &self.creds {
            Some(path) => ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("reading NATS_CREDS {}: {e}", path.display()),
                    )
                })?,
            None => ConnectOptions::new(),
        };
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            opts = opts.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            opts = opts.token(token.clone());
        }
        let name = connection_name.to_string();
        Ok(opts
            .name(connection_name)
            .custom_inbox_prefix(inbox_prefix(identity))
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(reconnect_delay)
            .event_callback(move |event| {
                let (name, events) = (name.clone(), events.clone());
                async move {
                    match event {
                        Event::Connected => drop(events.send(ConnectionEvent::Connected)),
                        Event::Disconnected => drop(events.send(ConnectionEvent::Disconnected)),
                        _ => {}
                    }
                    log_event(&name, event)
                }
            }))
    }
}

/// The servers of a `NATS_URL`: one URL, or several separated by commas (a
/// cluster's nodes; spaces around them are ignored). async-nats reads a single
/// string as one address, so the list is split here. An empty list, or an
/// entry that is not a NATS URL, is an error naming it.
pub fn server_addrs(urls: &str) -> std::io::Result<Vec<ServerAddr>> {
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    let addrs = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<ServerAddr>()
                .map_err(|e| invalid(format!("NATS_URL entry {url:?}: {e}")))
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    if addrs.is_empty() {
        return Err(invalid(format!("NATS_URL {urls:?} names no server")));
    }
    Ok(addrs)
}

/// The identity of people and tools (the nats CLI, `shop`): it may do everything.
pub const OPERATOR_IDENTITY: &str = "operator";

/// The inbox prefix of `identity` (`_INBOX.<identity>`): replies to its
/// requests arrive under it, and the bus lets only that identity subscribe
/// there (`shop auth init` gives it `_INBOX.<identity>.>`), so no other
/// process can read them. `operator` keeps the default `_INBOX`.
pub fn inbox_prefix(identity: &str) -> String {
    match identity {
        OPERATOR_IDENTITY | "" => "_INBOX".to_string(),
        name => format!("_INBOX.{name}"),
    }
}

/// Longest wait between two reconnection attempts, before jitter (up to a quarter more).
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// Exponential backoff from 100 ms up to [`MAX_RECONNECT_DELAY`], with jitter so
/// that a fleet of instances does not reconnect in lock step.
pub fn reconnect_delay(attempts: usize) -> Duration {
    let base = 100u64.saturating_mul(1 << attempts.min(6));
    let capped = base.min(MAX_RECONNECT_DELAY.as_millis() as u64);
    let jitter = rand::rng().random_range(0..=capped / 4);
    Duration::from_millis(capped + jitter)
}

fn log_event(connection: &str, event: Event) {
    match event {
        Event::Connected => tracing::info!(connection, "nats connected"),
        Event::Disconnected => tracing::warn!(connection, "nats disconnected; reconnecting"),
        Event::LameDuckMode => tracing::warn!(connection, "nats server entering lame duck mode"),
        Event::Draining => tracing::info!(connection, "nats connection draining"),
        Event::Closed => tracing::info!(connection, "nats connection closed"),
        Event::SlowConsumer(sid) => {
            tracing::warn!(connection, sid, "nats slow consumer: messages dropped")
        }
        Event::ServerError(err) => tracing::error!(connection, error = %err, "nats server error"),
        Event::ClientError(err) => tracing::error!(connection, error = %err, "nats client error"),
    }
}

/// A change in the connection's state, for parts that must react to it (for
/// example re-creating an ephemeral consumer the server forgot while it was away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEvent {
    Connected,
    Disconnected,
}

/// A client and the stream of its connection events.
#[derive(Clone)]
pub struct Connection {
    pub client: Client,
    events: broadcast::Sender<ConnectionEvent>,
}

impl Connection {
    /// Connection events from now on.
    pub fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.events.subscribe()
    }
}

/// Connects as `identity` (the service's name: its inbox prefix is
/// [`inbox_prefix`]`(identity)`, and `NATS_CREDS` should hold that identity's
/// credentials), retrying the first connection forever with backoff (each
/// failure is logged), and reconnecting forever afterwards. `connection_name`
/// shows in the server's connection list; use `<service>-<instance>`.
pub async fn connect(
    config: &NatsConfig,
    identity: &str,
    connection_name: &str,
) -> std::io::Result<Connection> {
    let servers = server_addrs(&config.url)?;
    let mut attempt = 0usize;
    let (events, _) = broadcast::channel(16);
    loop {
        let opts = config
            .options(identity, connection_name, events.clone())
            .await?;
        match opts.connect(servers.as_slice()).await {
            Ok(client) => return Ok(Connection { client, events }),
            Err(err) => {
                let delay = reconnect_delay(attempt);
                tracing::warn!(
                    connection = connection_name,
                    url = %config.url,
                    error = %err,
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot connect to nats; retrying"
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_identity_has_its_own_inbox_prefix() {
        assert_eq!(inbox_prefix("product"), "_INBOX.product");
        assert_eq!(inbox_prefix("gateway"), "_INBOX.gateway");
        assert_eq!(inbox_prefix("operator"), "_INBOX");
    }

    #[test]
    fn a_comma_separated_url_is_every_node_of_a_cluster() {
        let one = server_addrs("nats://127.0.0.1:4222").unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].port(), 4222);
        let three =
            server_addrs("nats://127.0.0.1:4222, nats://127.0.0.1:4223,nats://10.0.0.7:4224,")
                .unwrap();
        let ports: Vec<u16> = three.iter().map(|a| a.port()).collect();
        assert_eq!(ports, [4222, 4223, 4224]);
        assert_eq!(three[2].host(), "10.0.0.7");
        assert_eq!(server_addrs("127.0.0.1:4222").unwrap()[0].port(), 4222);
    }

    #[test]
    fn a_bad_url_list_names_the_bad_entry() {
        let err = server_addrs("nats://127.0.0.1:4222,nats://x:notaport").unwrap_err();
        assert!(err.to_string().contains("nats://x:notaport"), "{err}");
        assert!(server_addrs(" , ").is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(reconnect_delay(0) >= Duration::from_millis(100));
        assert!(reconnect_delay(0) <= Duration::from_millis(125));
        assert!(reconnect_delay(3) >= Duration::from_millis(800));
        for attempts in [10, 100, usize::MAX] {
            let d = reconnect_delay(attempts);
            assert!(d >= Duration::from_millis(5_000) && d <= Duration::from_millis(6_250));
        }
    }
}
