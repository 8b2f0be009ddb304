//! Structured logging through `tracing` to stderr (stdout stays free for a
//! command's own output): `LOG_FORMAT=json|pretty`, filter from `RUST_LOG`.

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

/// Installs the global subscriber; call once at the start of `main`.
pub fn init(log_format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if log_format.eq_ignore_ascii_case("json") {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}
