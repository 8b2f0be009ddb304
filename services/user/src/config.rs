//! The user service's own settings, as flags with environment fallbacks.

use std::time::Duration;

use shop_nats::auth::MAX_TOKEN_LIFETIME_SECS;

use crate::{
    domain::{self, NewAccount, Role, Secret},
    password::HashCost,
    throttle::LoginPolicy,
};

/// Settings of the user service on top of the runtime's.
#[derive(Debug, Clone, clap::Args)]
pub struct UserConfig {
    /// argon2id memory cost in KiB (OWASP: 19456).
    #[arg(long, env = "ARGON2_MEMORY_KIB", default_value_t = 19456)]
    pub argon2_memory_kib: u32,
    /// argon2id passes over memory (OWASP: 2).
    #[arg(long, env = "ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,
    /// argon2id lanes (OWASP: 1).
    #[arg(long, env = "ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,
    /// Password hashes computed at the same time; 0 = number of CPUs.
    #[arg(long, env = "HASH_CONCURRENCY", default_value_t = 0)]
    pub hash_concurrency: usize,
    /// Lifetime of an access token in seconds; also how long a retired signing
    /// key stays published.
    #[arg(long, env = "TOKEN_TTL_SECS", default_value_t = 3600)]
    pub token_ttl_secs: u64,
    /// Failed logins of one account before further attempts are refused (429).
    #[arg(long, env = "LOGIN_MAX_FAILURES", default_value_t = 5)]
    pub login_max_failures: u32,
    /// First lockout in seconds; doubles with each further failure.
    #[arg(long, env = "LOGIN_LOCKOUT_SECS", default_value_t = 1)]
    pub login_lockout_secs: u64,
    /// Longest lockout in seconds.
    #[arg(long, env = "LOGIN_LOCKOUT_MAX_SECS", default_value_t = 300)]
    pub login_lockout_max_secs: u64,
    /// Failures are forgotten this many seconds after the last one.
    #[arg(long, env = "LOGIN_FAILURE_WINDOW_SECS", default_value_t = 900)]
    pub login_failure_window_secs: u64,
    /// Email of an admin account to create at start-up if absent (with ADMIN_PASSWORD).
    #[arg(long, env = "ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// Password of the ADMIN_EMAIL account (prefer the environment to the flag).
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<Secret>,
    /// Display name of the ADMIN_EMAIL account.
    #[arg(long, env = "ADMIN_NAME", default_value = "Administrator")]
    pub admin_name: String,
}

/// What the handler needs from the settings, checked.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub token_ttl: Duration,
    pub login: LoginPolicy,
    pub hash_cost: HashCost,
    pub hash_concurrency: usize,
}

impl UserConfig {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        anyhow::ensure!(self.token_ttl_secs > 0, "TOKEN_TTL_SECS must be at least 1");
        anyhow::ensure!(
            self.token_ttl_secs <= MAX_TOKEN_LIFETIME_SECS,
            "TOKEN_TTL_SECS must be at most {MAX_TOKEN_LIFETIME_SECS} (24 h): tokens live no longer"
        );
        anyhow::ensure!(
            self.login_max_failures > 0,
            "LOGIN_MAX_FAILURES must be at least 1"
        );
        anyhow::ensure!(
            self.login_failure_window_secs > 0,
            "LOGIN_FAILURE_WINDOW_SECS must be at least 1"
        );
        let hash_concurrency = if self.hash_concurrency > 0 {
            self.hash_concurrency
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        };
        Ok(Settings {
            token_ttl: Duration::from_secs(self.token_ttl_secs),
            login: LoginPolicy {
                max_failures: self.login_max_failures,
                lockout: Duration::from_secs(self.login_lockout_secs),
                max_lockout: Duration::from_secs(
                    self.login_lockout_max_secs.max(self.login_lockout_secs),
                ),
                window: Duration::from_secs(self.login_failure_window_secs),
            },
            hash_cost: HashCost {
                memory_kib: self.argon2_memory_kib,
                iterations: self.argon2_iterations,
                parallelism: self.argon2_parallelism,
            },
            hash_concurrency,
        })
    }

    /// The admin account to bootstrap, when both ADMIN_EMAIL and ADMIN_PASSWORD are set.
    pub fn admin_account(&self) -> anyhow::Result<Option<NewAccount>> {
        match (&self.admin_email, &self.admin_password) {
            (None, None) => Ok(None),
            (Some(email), Some(password)) => domain::validate_new_account(
                email,
                &self.admin_name,
                password,
                vec![Role::Admin, Role::Customer],
            )
            .map(Some)
            .map_err(|e| anyhow::anyhow!("admin account settings: {}", e.message)),
            _ => anyhow::bail!("set both ADMIN_EMAIL and ADMIN_PASSWORD, or neither"),
        }
    }
}
