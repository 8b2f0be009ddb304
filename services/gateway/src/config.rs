//! The gateway's settings: flags with environment fallbacks (`gateway --help`).

use std::{net::SocketAddr, time::Duration};

use shop_nats::NatsConfig;

use crate::service::Service;

/// Every setting of the gateway.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "gateway", version, about = "HTTP API gateway of the shop")]
pub struct GatewayConfig {
    /// Address the HTTP API listens on; port 0 picks a free one.
    #[arg(long, env = "GATEWAY_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,
    /// Admin HTTP address (detailed /health, /ready, /metrics), as the
    /// services' admin HTTP; port 0 picks a free one. Keep it off the public network.
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:0")]
    pub admin_addr: SocketAddr,
    /// Where and how to connect to NATS (`NATS_URL`, `NATS_CREDS` ...).
    #[command(flatten)]
    pub nats: NatsConfig,
    /// Unique id of this instance (letters, digits, `-`, `_`); random when absent.
    #[arg(long, env = "INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// `json` (one object per line) or `pretty`.
    #[arg(long, env = "LOG_FORMAT", default_value = "pretty")]
    pub log_format: String,
    /// Requests per second each client may make on average (0 turns limiting off).
    #[arg(long, env = "GATEWAY_RATE_LIMIT_PER_SEC", default_value_t = 50.0)]
    pub rate_limit_per_sec: f64,
    /// Requests a client may make at once after being idle.
    #[arg(long, env = "GATEWAY_RATE_LIMIT_BURST", default_value_t = 100)]
    pub rate_limit_burst: u32,
    /// Proxies in front of the gateway (IP addresses or CIDR ranges, comma-separated)
    /// whose `X-Forwarded-For` is believed: the client is the rightmost address
    /// that is not one of them. Empty: `X-Forwarded-For` is ignored.
    #[arg(long, env = "GATEWAY_TRUSTED_PROXIES", default_value = "", value_parser = parse_proxies)]
    pub trusted_proxies: TrustedProxies,
    /// Time allowed for each call to a service, in milliseconds.
    #[arg(long, env = "GATEWAY_TIMEOUT_MS", default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Per-service overrides of the timeout, e.g. `order=5000,user=3000`.
    #[arg(long, env = "GATEWAY_SERVICE_TIMEOUTS", default_value = "", value_parser = parse_service_timeouts)]
    pub service_timeouts: ServiceTimeouts,
    /// Consecutive failures of a service that open its circuit breaker.
    #[arg(long, env = "GATEWAY_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before letting a probe through, in milliseconds.
    #[arg(long, env = "GATEWAY_BREAKER_OPEN_MS", default_value_t = 5000)]
    pub breaker_open_ms: u64,
    /// Largest accepted request body, in bytes (larger: 400).
    #[arg(long, env = "GATEWAY_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Cache product reads (`on`/`off`); entries are dropped by the product stream's events.
    #[arg(long, env = "GATEWAY_CACHE", default_value = "on", value_parser = parse_switch, action = clap::ArgAction::Set)]
    pub cache: bool,
    /// Most cached product replies (single products, list pages and invalidation marks).
    #[arg(long, env = "GATEWAY_CACHE_MAX_ENTRIES", default_value_t = 10_000)]
    pub cache_max_entries: usize,
    /// Longest a cached reply is served without an event, in seconds (a safety net
    /// for events lost without a reconnect; freshness comes from the events).
    #[arg(long, env = "GATEWAY_CACHE_TTL_SECS", default_value_t = 300)]
    pub cache_ttl_secs: u64,
    /// How often the user service's public keys are fetched again, in seconds
    /// (also at once when a token names an unknown key).
    #[arg(long, env = "GATEWAY_JWKS_REFRESH_SECS", default_value_t = 300)]
    pub jwks_refresh_secs: u64,
    /// Time allowed for in-flight requests after SIGTERM, in seconds.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,
    /// Replicas of the `registry` bucket should the gateway be the first to
    /// create it (as the services': 3 in a NATS cluster).
    #[arg(long, env = "JS_REPLICAS", default_value_t = 1)]
    pub js_replicas: usize,
}

/// Per-service timeout overrides in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceTimeouts(pub Vec<(Service, u64)>);

fn parse_service_timeouts(value: &str) -> Result<ServiceTimeouts, String> {
    let mut out = Vec::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, ms) = pair
            .split_once('=')
            .ok_or_else(|| format!("expected service=milliseconds, got {pair:?}"))?;
        let service = Service::from_name(name.trim()).ok_or_else(|| {
            format!(
                "unknown service {name:?} (one of {})",
                Service::ALL.map(Service::name).join(", ")
            )
        })?;
        let ms: u64 =
            ms.trim().parse().ok().filter(|ms| *ms > 0).ok_or_else(|| {
                format!("timeout of {name} must be a positive integer, got {ms:?}")
            })?;
        out.push((service, ms));
    }
    Ok(ServiceTimeouts(out))
}

/// The proxies whose `X-Forwarded-For` the gateway believes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<ipnet::IpNet>);

impl TrustedProxies {
    pub fn contains(&self, addr: &std::net::IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(addr))
    }
}

fn parse_proxies(value: &str) -> Result<TrustedProxies, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<ipnet::IpNet>()
                .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{v:?} is not an IP address or CIDR range"))
        })
        .collect::<Result<_, _>>()
        .map(TrustedProxies)
}

fn parse_switch(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        other => Err(format!("expected on or off, got {other:?}")),
    }
}

impl GatewayConfig {
    /// The timeout of calls to `service`.
    pub fn timeout(&self, service: Service) -> Duration {
        let ms = self
            .service_timeouts
            .0
            .iter()
            .rev()
            .find(|(s, _)| *s == service)
            .map(|(_, ms)| *ms)
            .unwrap_or(self.timeout_ms);
        Duration::from_millis(ms.max(1))
    }

    pub fn breaker_open_for(&self) -> Duration {
        Duration::from_millis(self.breaker_open_ms.max(1))
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// Checks what clap cannot; an error names the setting.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.rate_limit_per_sec.is_finite() && self.rate_limit_per_sec >= 0.0,
            "GATEWAY_RATE_LIMIT_PER_SEC must be a number >= 0, got {}",
            self.rate_limit_per_sec
        );
        anyhow::ensure!(
            self.rate_limit_burst >= 1,
            "GATEWAY_RATE_LIMIT_BURST must be at least 1"
        );
        anyhow::ensure!(
            self.max_body_bytes >= 1,
            "GATEWAY_MAX_BODY_BYTES must be at least 1"
        );
        anyhow::ensure!(
            self.breaker_failures >= 1,
            "GATEWAY_BREAKER_FAILURES must be at least 1"
        );
        anyhow::ensure!(
            self.cache_max_entries >= 1,
            "GATEWAY_CACHE_MAX_ENTRIES must be at least 1"
        );
        Ok(())
    }

    /// The configured instance id, validated, or a fresh random one.
    pub fn instance_id(&self) -> anyhow::Result<String> {
        match &self.instance_id {
            Some(id) => {
                shop_nats::subject::validate_token("INSTANCE_ID", id)
                    .map_err(|e| anyhow::anyhow!(e.message))?;
                Ok(id.clone())
            }
            None => Ok(uuid::Uuid::new_v4().simple().to_string()[..12].to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn per_service_timeouts_override_the_default() {
        let config = GatewayConfig::try_parse_from([
            "gateway",
            "--timeout-ms",
            "1500",
            "--service-timeouts",
            "order=5000, user=300",
        ])
        .unwrap();
        assert_eq!(config.timeout(Service::Order), Duration::from_secs(5));
        assert_eq!(config.timeout(Service::User), Duration::from_millis(300));
        assert_eq!(
            config.timeout(Service::Product),
            Duration::from_millis(1500)
        );
        config.validate().unwrap();
    }

    #[test]
    fn bad_settings_are_refused_with_their_name() {
        for args in [
            ["gateway", "--service-timeouts", "nope=5"],
            ["gateway", "--service-timeouts", "order=0"],
            ["gateway", "--service-timeouts", "order"],
            ["gateway", "--cache", "maybe"],
        ] {
            assert!(GatewayConfig::try_parse_from(args).is_err(), "{args:?}");
        }
        let config = GatewayConfig::try_parse_from(["gateway", "--rate-limit-per-sec=-1"]).unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("GATEWAY_RATE_LIMIT_PER_SEC"), "{err}");
    }

    #[test]
    fn cache_switch_reads_on_and_off() {
        let off = GatewayConfig::try_parse_from(["gateway", "--cache", "off"]).unwrap();
        assert!(!off.cache);
        let on = GatewayConfig::try_parse_from(["gateway"]).unwrap();
        assert!(on.cache);
    }
}
