//! Settings every service shares, as command-line flags with environment fallbacks.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use shop_nats::NatsConfig;

/// Flags and environment variables common to every service binary.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeConfig {
    /// Where and how to connect to NATS (`NATS_URL`, `NATS_CREDS` ...).
    #[command(flatten)]
    pub nats: NatsConfig,
    /// Where this instance keeps its sled store; each instance needs its own.
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Admin HTTP address (/health, /ready, /metrics); port 0 picks a free one.
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:0")]
    pub admin_addr: SocketAddr,
    /// Unique id of this instance (letters, digits, `-`, `_`); random when absent.
    #[arg(long, env = "INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Worker-pool size for slow work (writes, calls to other services).
    #[arg(long, env = "WORKERS", default_value_t = 32)]
    pub workers: usize,
    /// Requests that may wait for a worker before new ones get 503.
    #[arg(long, env = "QUEUE_DEPTH", default_value_t = 256)]
    pub queue_depth: usize,
    /// Endpoint actors, each owning one queue subscription; 0 = number of CPUs.
    #[arg(long, env = "ENDPOINT_ACTORS", default_value_t = 0)]
    pub endpoint_actors: usize,
    /// Largest accepted request payload in bytes.
    #[arg(long, env = "MAX_PAYLOAD", default_value_t = shop_nats::DEFAULT_MAX_PAYLOAD)]
    pub max_payload: usize,
    /// Time allowed for in-flight work after SIGTERM, in seconds.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,
    /// JetStream replicas for the service's stream (3 in a cluster).
    #[arg(long, env = "JS_REPLICAS", default_value_t = 1)]
    pub js_replicas: usize,
    /// Replies go only to subjects under this prefix (client inboxes); a request
    /// naming another reply subject gets no answer (counted and logged).
    #[arg(long, env = "REPLY_PREFIX", default_value = crate::reply::DEFAULT_REPLY_PREFIX)]
    pub reply_prefix: String,
    /// Seconds between fetches of the token keys (`user.keys`), for services
    /// with user or admin endpoints; an unknown key id fetches them at once.
    #[arg(long, env = "JWKS_REFRESH_SECS", default_value_t = 300)]
    pub jwks_refresh_secs: u64,
    /// `json` (one object per line) or `pretty`.
    #[arg(long, env = "LOG_FORMAT", default_value = "pretty")]
    pub log_format: String,
}

impl RuntimeConfig {
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    pub fn endpoint_actor_count(&self) -> usize {
        if self.endpoint_actors > 0 {
            self.endpoint_actors
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .min(8)
        }
    }

    /// The reply prefix, checked: non-empty, ending with `.`, no wildcards or spaces.
    pub fn reply_prefix(&self) -> anyhow::Result<&str> {
        let prefix = self.reply_prefix.as_str();
        anyhow::ensure!(
            prefix.len() > 1
                && prefix.ends_with('.')
                && !prefix.starts_with('.')
                && !prefix.contains(['*', '>', ' ', '\t'])
                && !prefix.contains(".."),
            "REPLY_PREFIX {prefix:?} must be subject tokens ending with '.', e.g. _INBOX."
        );
        Ok(prefix)
    }

    /// The configured instance id, validated, or a fresh random one.
    pub fn instance_id(&self) -> anyhow::Result<String> {
        match &self.instance_id {
            Some(id) => {
                anyhow::ensure!(
                    !id.is_empty()
                        && id.len() <= 64
                        && id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                    "INSTANCE_ID {id:?} must be 1-64 letters, digits, '-' or '_'"
                );
                Ok(id.clone())
            }
            None => Ok(uuid::Uuid::new_v4().simple().to_string()[..12].to_string()),
        }
    }
}
