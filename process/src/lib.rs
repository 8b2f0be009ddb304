//! `shop-process`: the one process layer of the workspace. Tests (`testkit`),
//! `shop up` and the bench harness start nats-server, the services and the
//! gateway through it, so each of them starts, awaits, watches and stops
//! processes the same way.
//!
//! - [`Spec`] says what to run (program, arguments, environment, log file, the
//!   line that announces readiness) and [`Spec::start`] runs it as a
//!   [`Process`]: its output (stdout and stderr, merged) is kept as a tail in
//!   memory, broadcast line by line and written to the log file; readiness is
//!   awaited with a timeout, and an exit before it fails with the log tail.
//! - [`Process`] stops with SIGTERM and a grace period, then SIGKILL; dies at
//!   once with [`Process::kill9`] (chaos tests); restarts with the same settings.
//! - [`NatsServer`] builds a nats-server from a configuration file or text
//!   (JetStream store, ports) and starts it as a [`NatsProcess`]; a server
//!   with auth, or each node of a cluster (`server_name`, `cluster { routes }`),
//!   is its own configuration text.
//! - [`locate`]: the nats-server binary, free loopback ports, the workspace
//!   and its binaries.
//!
//! ```no_run
//! # async fn demo(dir: &std::path::Path) -> anyhow::Result<()> {
//! use shop_process::{NatsServer, Spec};
//! let nats = NatsServer::new(dir)
//!     .config_text("max_payload: 8MB\njetstream { store_dir: $NATS_STORE_DIR }\n")
//!     .start()
//!     .await?;
//! let mut product = Spec::new("product-1", "target/debug/product-service")
//!     .env("NATS_URL", nats.url())
//!     .env("LOG_FORMAT", "json")
//!     .ready_line("\"service ready\"")
//!     .start()
//!     .await?;
//! product.stop(std::time::Duration::from_secs(10)).await?;
//! # Ok(()) }
//! ```

pub mod locate;
mod nats;
mod output;
mod process;

pub use locate::{bin_dir, free_port, nats_server_bin, workspace_root};
pub use nats::{NatsConfig, NatsProcess, NatsServer};
pub use output::{last_lines, wait_for_line};
pub use process::{Process, Spec, Stopped};
