//! `shop-bench`: load generator and reference responders for the shop services.
//!
//! Subcommands:
//! - `echo-server`: raw async-nats responder used as the ceiling to compare against.
//! - `load`: closed-loop request/reply load generator with HDR latency summary.
//! - `seed-products`: creates benchmark products through `product.create`.
//! - `wait-for`: polls a subject until something answers (used by scripts).
//! - `compare`: aggregates `load --json-out` files into a markdown table.

mod echo;
mod load;
mod nats;
mod order;
mod report;
mod seed;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "shop-bench",
    version,
    about = "Benchmark harness for the shop services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Raw async-nats responder that replies with the request payload.
    EchoServer(EchoArgs),
    /// Closed-loop request/reply load generator.
    Load(LoadArgs),
    /// Create benchmark products via `product.create` (idempotent: 409 is fine).
    SeedProducts(SeedArgs),
    /// Send requests until one gets a reply (any reply) or the deadline passes.
    WaitFor(WaitArgs),
    /// Aggregate `load --json-out` result files into a markdown table.
    Compare(CompareArgs),
    /// Orders at a fixed rate (open loop), timed from intended send to `order.confirmed`.
    OrderPlace(OrderPlaceArgs),
}

#[derive(Debug, Args)]
struct OrderPlaceArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Orders per second to send.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Product ids to order (one line each, round robin).
    #[arg(long, value_delimiter = ',', required = true)]
    products: Vec<String>,
    #[arg(long, default_value = "bench-user")]
    user_id: String,
    /// How long to wait for the last orders to settle.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    settle_timeout: Duration,
    #[arg(long, default_value = "order-place")]
    label: String,
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
struct NatsArgs {
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
}

#[derive(Debug, Args)]
struct EchoArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Subject to serve.
    #[arg(long, default_value = "bench.echo")]
    subject: String,
    /// Queue group name.
    #[arg(long, default_value = "bench")]
    queue: String,
    /// Reply with this many bytes instead of echoing the request, to match the
    /// reply size of the service it is compared with.
    #[arg(long)]
    reply_bytes: Option<usize>,
}

#[derive(Debug, Args)]
struct LoadArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Subject to send requests to.
    #[arg(long)]
    subject: String,
    /// Number of requests kept in flight (one task per request slot).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Measured duration (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up before measuring; requests completing during warm-up are discarded.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Per-request timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// A single JSON payload sent with every request.
    #[arg(
        long,
        conflicts_with = "payloads_file",
        required_unless_present = "payloads_file"
    )]
    payload: Option<String>,
    /// File with one JSON payload per line; tasks cycle through them.
    #[arg(long)]
    payloads_file: Option<PathBuf>,
    /// Request header `Key:Value` (repeatable).
    #[arg(long = "header", value_name = "K:V")]
    headers: Vec<String>,
    /// Number of NATS connections to spread the tasks over.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Write the result as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Name of this run in the output (defaults to the subject).
    #[arg(long)]
    label: Option<String>,
}

#[derive(Debug, Args)]
struct SeedArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Number of products to create.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Product id prefix; ids are `<prefix><4-digit index>`.
    #[arg(long, default_value = "bench-")]
    prefix: String,
    /// Subject of the create endpoint.
    #[arg(long, default_value = "product.create")]
    subject: String,
    /// Requests in flight while seeding.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Write `{"id":"..."}` lines here (usable as `load --payloads-file`).
    #[arg(long)]
    ids_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct WaitArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Subject to probe.
    #[arg(long)]
    subject: String,
    /// Probe payload.
    #[arg(long, default_value = "{}")]
    payload: String,
    /// Give up after this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    deadline: Duration,
    /// Print the reply's payload.
    #[arg(long)]
    print: bool,
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// Label of the baseline scenario (percentages are relative to it).
    #[arg(long, default_value = "echo")]
    baseline: String,
    /// Required percentage of the baseline's req/s; prints a verdict per scenario.
    #[arg(long)]
    target_pct: Option<f64>,
    /// Write the aggregated table as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Result files written by `load --json-out`.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Parses `10s`, `500ms`, `2m`, `1.5s`, `250us`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .with_context(|| format!("invalid duration {s:?}: expected e.g. 10s, 500ms, 2m"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        other => bail!("invalid duration unit {other:?} in {s:?} (use us, ms, s or m)"),
    };
    Duration::try_from_secs_f64(secs).with_context(|| format!("invalid duration {s:?}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::OrderPlace(a) => {
            let summary = order::run(&order::OrderPlaceConfig {
                url: a.nats.nats_url.clone(),
                rate: a.rate,
                duration: a.duration,
                products: a.products.clone(),
                user_id: a.user_id.clone(),
                settle_timeout: a.settle_timeout,
                label: a.label.clone(),
            })
            .await?;
            println!("{}", summary.one_line());
            if let Some(path) = &a.json_out {
                summary.save(path)?;
            }
            Ok(())
        }
        Command::EchoServer(a) => {
            echo::run(&a.nats.nats_url, &a.subject, &a.queue, a.reply_bytes).await
        }
        Command::Load(a) => {
            let payloads = match (&a.payload, &a.payloads_file) {
                (Some(p), None) => vec![load::parse_payload(p).context("--payload")?],
                (None, Some(path)) => load::read_payloads_file(path)?,
                _ => bail!("exactly one of --payload or --payloads-file is required"),
            };
            let headers = load::parse_headers(&a.headers)?;
            let config = load::LoadConfig {
                nats_url: a.nats.nats_url,
                label: a.label.unwrap_or_else(|| a.subject.clone()),
                subject: a.subject,
                concurrency: a.concurrency,
                connections: a.connections,
                duration: a.duration,
                warmup: a.warmup,
                timeout: a.timeout,
                payloads,
                headers,
            };
            let summary = load::run(&config).await?;
            println!("{}", summary.one_line());
            if let Some(path) = &a.json_out {
                summary.write_json(path)?;
            }
            Ok(())
        }
        Command::SeedProducts(a) => {
            seed::run(&seed::SeedConfig {
                nats_url: a.nats.nats_url,
                subject: a.subject,
                count: a.count,
                prefix: a.prefix,
                concurrency: a.concurrency,
                timeout: a.timeout,
                ids_out: a.ids_out,
            })
            .await
        }
        Command::WaitFor(a) => {
            nats::wait_for(
                &a.nats.nats_url,
                &a.subject,
                &a.payload,
                a.deadline,
                a.print,
            )
            .await
        }
        Command::Compare(a) => {
            let results = a
                .files
                .iter()
                .map(|p| report::Summary::read_json(p))
                .collect::<Result<Vec<_>>>()?;
            let table = report::Comparison::build(&results, &a.baseline, a.target_pct)?;
            print!("{}", table.markdown());
            if let Some(path) = &a.json_out {
                report::write_json(path, &table)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").ok(), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("10").ok(), Some(Duration::from_secs(10)));
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("2m").ok(), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_duration("1.5s").ok(),
            Some(Duration::from_millis(1500))
        );
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("").is_err());
    }
}
