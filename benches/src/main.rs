//! `shop-bench`: what the shop services can take on this machine.
//!
//! - `run <scenario>`: one scenario against a running system (`NATS_URL`), or
//!   against a stack it starts itself (`--spawn`).
//! - `suite`: the standard set, each phase on a fresh stack (`scripts/bench.sh`).
//! - `scaling <scenario> --instances 1,2,4`: the same load on 1, 2, 4 instances.
//! - `report FILE`: a results file as tables; `--markdown` rewrites BENCHMARKS.md.
//! - `compare NEW OLD`: ratios of every figure.
//! - `echo-server`: the raw NATS responder the echo scenario measures.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use shop_bench::load::Model;
use shop_bench::results::{check_targets, ResultsFile, Settings};
use shop_bench::scenarios::{self, parse_duration, reads, Options, Scenario, Target, ECHO_SUBJECT};
use shop_bench::stack::{JetStreamSync, Stack, StackConfig};
use shop_bench::suite::{self, SuiteConfig, GATEWAY_CACHE_ENV};
use shop_bench::{echo, nats, report, scaling, seed};

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
    /// Run one scenario.
    Run(RunArgs),
    /// Run the standard suite, each phase on a stack it starts (see scripts/bench.sh).
    Suite(SuiteArgs),
    /// Run a scenario on 1, 2, 4 ... instances of its service (starts its own stack).
    Scaling(ScalingArgs),
    /// Print a results file as tables; optionally rewrite BENCHMARKS.md from it.
    Report(ReportArgs),
    /// Compare two results files: each figure's new/old ratio.
    Compare {
        /// The newer results file.
        new: PathBuf,
        /// The older results file.
        old: PathBuf,
    },
    /// Raw async-nats responder that replies with the request payload.
    EchoServer(EchoArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModelKind {
    Closed,
    Open,
    #[value(skip)]
    Default,
}

/// How a scenario is loaded.
#[derive(Debug, Args)]
struct LoadArgs {
    /// closed: --in-flight requests outstanding; open: --rate arrivals per second
    /// (latency from the intended send time). Default: open for order-place
    /// (100/s) and mixed (200/s), closed 64 otherwise.
    #[arg(long, value_enum)]
    model: Option<ModelKind>,
    /// Requests in flight (closed loop).
    #[arg(long)]
    in_flight: Option<usize>,
    /// Arrivals per second (open loop).
    #[arg(long)]
    rate: Option<f64>,
    #[command(flatten)]
    options: Options,
}

impl LoadArgs {
    fn options(&self, scenario: Scenario) -> Result<Options> {
        let kind = match (self.model, self.in_flight, self.rate) {
            (Some(k), _, _) => k,
            (None, Some(_), None) => ModelKind::Closed,
            (None, None, Some(_)) => ModelKind::Open,
            (None, Some(_), Some(_)) => bail!("--in-flight and --rate: choose one with --model"),
            (None, None, None) => ModelKind::Default,
        };
        let model = match kind {
            ModelKind::Default => scenario.default_model(),
            ModelKind::Closed => Model::Closed {
                in_flight: self.in_flight.unwrap_or(64),
            },
            ModelKind::Open => Model::Open {
                rate: (self.rate).context("--model open needs --rate (arrivals per second)")?,
            },
        };
        Ok(self.options.clone().with_model(model))
    }
}

/// Where the binaries a stack starts are.
#[derive(Debug, Args)]
struct StackArgs {
    /// Directory of the service binaries, `gateway` and `shop-bench` (default:
    /// this program's directory, e.g. target/release).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Directory for the started processes' logs (default: results/logs/<time>).
    #[arg(long)]
    logs_dir: Option<PathBuf>,
    /// Start nats-server without auth (to measure what auth costs); by
    /// default every process has its own identity, as `shop up` runs them.
    #[arg(long)]
    no_auth: bool,
    /// Start a NATS cluster of this many nodes instead of one server (3: every
    /// stream and bucket with 3 replicas, the services given every node).
    #[arg(long, env = "BENCH_NATS_CLUSTER", default_value_t = 1)]
    nats_cluster: usize,
}

impl StackArgs {
    fn config(&self) -> Result<StackConfig> {
        let bin_dir = match &self.bin_dir {
            Some(d) => d.clone(),
            None => shop_process::bin_dir()?,
        };
        let logs_dir = self.logs_dir.clone().unwrap_or_else(|| {
            let stamp = shop_bench::results::now_rfc3339().replace(':', "");
            shop_process::workspace_root()
                .join("results/logs")
                .join(stamp)
        });
        let mut config = StackConfig::new(bin_dir, logs_dir);
        config.auth = !self.no_auth;
        config.nats_cluster = self.nats_cluster;
        Ok(config)
    }
}

/// Where results go.
#[derive(Debug, Args)]
struct OutputArgs {
    /// Write the results file (JSON) here.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Print each figure's ratio to the same point in this older results file.
    #[arg(long)]
    compare: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[arg(value_enum)]
    scenario: Scenario,
    #[command(flatten)]
    load: LoadArgs,
    /// NATS server of the system under test (without --spawn).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// gateway-get: URL with an {id} placeholder (without --spawn).
    #[arg(long, default_value = "http://127.0.0.1:3000/api/products/{id}")]
    url: String,
    /// Start a fresh stack (nats-server and the services the scenario needs)
    /// instead of using a running system.
    #[arg(long)]
    spawn: bool,
    /// With --spawn: JetStream sync of the nats-server.
    #[arg(long, value_enum, default_value = "always")]
    sync: JetStreamSync,
    /// With --spawn: instances of the scenario's main service.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    #[command(flatten)]
    stack: StackArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
struct SuiteArgs {
    /// 2 s points after 0.5 s of warm-up: checks that everything works; the
    /// figures mean little.
    #[arg(long)]
    quick: bool,
    /// Only these scenarios (comma-separated; `scaling` for the scaling runs).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Measured time per point (default 10s, quick 2s).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Warm-up per point (default 2s, quick 500ms).
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    /// Rounds of echo and product-get, alternated (default 2, quick 1).
    #[arg(long)]
    rounds: Option<usize>,
    /// order-place arrival rates.
    #[arg(long, value_delimiter = ',', default_value = "250,500")]
    order_rates: Vec<f64>,
    /// mixed arrival rate.
    #[arg(long, default_value_t = 200.0)]
    mixed_rate: f64,
    /// Arrival rate of the open-loop product-get point.
    #[arg(long, default_value_t = 10_000.0)]
    read_rate: f64,
    /// Instance counts of the scaling runs.
    #[arg(long, default_value = "1,2,4")]
    instances: String,
    /// No wrk cross-check of gateway-get.
    #[arg(long)]
    no_wrk: bool,
    /// Rewrite the generated tables of this markdown file (e.g. BENCHMARKS.md).
    #[arg(long)]
    markdown: Option<PathBuf>,
    #[command(flatten)]
    stack: StackArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
struct ScalingArgs {
    #[arg(value_enum)]
    scenario: Scenario,
    /// Instance counts, e.g. 1,2,4.
    #[arg(long, default_value = "1,2,4")]
    instances: String,
    #[command(flatten)]
    load: LoadArgs,
    /// JetStream sync of the nats-server.
    #[arg(long, value_enum, default_value = "always")]
    sync: JetStreamSync,
    #[command(flatten)]
    stack: StackArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// A results file.
    file: PathBuf,
    /// Rewrite the generated tables of this markdown file (e.g. BENCHMARKS.md).
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Also compare with this older results file.
    #[arg(long)]
    compare: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct EchoArgs {
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Subject to serve.
    #[arg(long, default_value = ECHO_SUBJECT)]
    subject: String,
    /// Queue group name.
    #[arg(long, default_value = "bench")]
    queue: String,
    /// Reply with this many bytes instead of echoing the request, to match the
    /// reply size of the service it is compared with.
    #[arg(long)]
    reply_bytes: Option<usize>,
}

/// A results file for this command line, with the settings of `opts`.
fn empty_file(opts: &Options, nats_url: Option<String>, rust_log: Option<String>) -> ResultsFile {
    let in_flight = match opts.model {
        Model::Closed { in_flight } => in_flight,
        Model::Open { .. } => 0,
    };
    let extra = [
        ("model", serde_json::json!(opts.model)),
        ("rounds", serde_json::json!(opts.rounds)),
        ("connections", serde_json::json!(opts.connections)),
        ("products", serde_json::json!(opts.products)),
    ];
    let settings = Settings {
        quick: false,
        duration_s: opts.duration.as_secs_f64(),
        warmup_s: opts.warmup.as_secs_f64(),
        timeout_s: opts.timeout.as_secs_f64(),
        in_flight,
        nats_url,
        services_rust_log: rust_log,
        extra: extra.map(|(k, v)| (k.to_string(), v)).into_iter().collect(),
    };
    ResultsFile::new(suite::command_line(), settings)
}

/// The version of the nats-server at `url`, when it answers.
async fn nats_version(url: &str) -> Option<String> {
    let client = nats::connect(url, "shop-bench-info", Duration::from_secs(5)).await;
    client.ok().map(|c| c.server_info().version)
}

/// Prints the file, writes it, and compares it, as the output arguments ask.
fn finish(file: &mut ResultsFile, output: &OutputArgs, markdown: Option<&Path>) -> Result<()> {
    file.targets = check_targets(file);
    print!("{}", report::report_text(file));
    if let Some(path) = &output.json_out {
        file.write(path)?;
        eprintln!("results: {}", path.display());
    }
    if let Some(path) = markdown {
        let replaced = report::update(path, file)?;
        let replaced = match replaced.is_empty() {
            true => "nothing (no <!-- bench:NAME --> markers)".to_string(),
            false => replaced.join(", "),
        };
        eprintln!("{}: rewrote {replaced}", path.display());
    }
    if let Some(old) = &output.compare {
        let old = ResultsFile::read(old)?;
        print!("\n{}", report::compare_text(file, &old));
    }
    Ok(())
}

/// Starts a stack for one scenario: nats-server, its services (`instances` of
/// the main one), the echo responder or the gateway when it needs them.
async fn spawn_for(scenario: Scenario, args: &RunArgs, opts: &Options) -> Result<(Stack, Target)> {
    let mut stack = Stack::new(args.stack.config()?)?;
    let url = stack.start_nats(args.sync).await?;
    let main = (scenario.scaled_service()).or(scenario.services().first().copied());
    for service in scenario.services() {
        let n = if Some(*service) == main {
            args.instances.max(1)
        } else {
            1
        };
        for _ in 0..n {
            stack.start_service(service, &[]).await?;
        }
    }
    let mut http_url = None;
    match scenario {
        Scenario::Echo => {
            let reply_bytes = echo_reply_size(&url, opts.timeout).await;
            stack.start_echo(ECHO_SUBJECT, reply_bytes).await?;
        }
        Scenario::GatewayGet => {
            let uncached = opts.variant.as_deref() == Some("uncached");
            let cache = [(GATEWAY_CACHE_ENV, if uncached { "off" } else { "on" })];
            let base = stack.start_gateway("gateway", &cache).await?;
            http_url = Some(format!("{base}{}", scenarios::gateway_get::PRODUCT_PATH));
        }
        _ => {}
    }
    let target = Target {
        http_url,
        ..stack.target(main.map(|m| stack.count(m)))?
    };
    Ok((stack, target))
}

/// The size of a seeded product's reply (so echo moves as many bytes), or 216.
async fn echo_reply_size(url: &str, timeout: Duration) -> usize {
    let Ok(client) = nats::connect(url, "shop-bench-probe", timeout).await else {
        return 216;
    };
    let json = shop_nats::Encoding::Json;
    let probe = reads::probe(&client, &seed::read_id(0), json, timeout).await;
    probe.unwrap_or(216)
}

async fn run_command(args: RunArgs) -> Result<()> {
    let opts = args.load.options(args.scenario)?;
    let (mut stack, target) = if args.spawn {
        let (stack, target) = spawn_for(args.scenario, &args, &opts).await?;
        (Some(stack), target)
    } else {
        let mut target = Target {
            nats_url: args.nats_url.clone(),
            http_url: Some(args.url.clone()),
            ..Target::default()
        };
        let mut stack = None;
        if args.scenario == Scenario::Echo && !answers(&args.nats_url, ECHO_SUBJECT).await? {
            let mut s = Stack::new(args.stack.config()?)?;
            s.use_nats(&args.nats_url);
            let reply_bytes = echo_reply_size(&args.nats_url, opts.timeout).await;
            s.start_echo(ECHO_SUBJECT, reply_bytes).await?;
            target.watched = s.watched();
            stack = Some(s);
        }
        (stack, target)
    };
    let nats_url = (!args.spawn).then(|| args.nats_url.clone());
    let rust_log = stack.as_ref().map(|s| s.config.services_rust_log.clone());
    let mut file = empty_file(&opts, nats_url, rust_log);
    file.versions.nats_server = nats_version(&target.nats_url).await;
    let result = scenarios::run(args.scenario, &target, &opts).await;
    if let Some(s) = stack.as_mut() {
        s.stop().await;
    }
    file.results.push(result?);
    finish(&mut file, &args.output, None)
}

/// Whether anything answers requests on `subject`.
async fn answers(url: &str, subject: &str) -> Result<bool> {
    let client = nats::connect(url, "shop-bench-probe", Duration::from_secs(2)).await?;
    match client.request(subject.to_string(), "{}".into()).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(false),
        Err(e) => Err(e).with_context(|| format!("probing {subject}")),
    }
}

async fn suite_command(args: SuiteArgs) -> Result<bool> {
    let mut cfg = SuiteConfig::standard(args.stack.config()?, args.quick);
    cfg.duration = args.duration.unwrap_or(cfg.duration);
    cfg.warmup = args.warmup.unwrap_or(cfg.warmup);
    cfg.rounds = args.rounds.map_or(cfg.rounds, |r| r.max(1));
    cfg.order_rates = args.order_rates.clone();
    cfg.mixed_rate = args.mixed_rate;
    cfg.read_rate = args.read_rate;
    cfg.instances = scaling::parse_counts(&args.instances)?;
    cfg.wrk = !args.no_wrk;
    cfg.only = args.only.clone();
    for name in &cfg.only {
        if name != "scaling" && !Scenario::ALL.iter().any(|s| s.name() == name) {
            bail!("--only {name}: not a scenario (or `scaling`)");
        }
    }
    eprintln!(
        "suite: {} s per point after {} s warm-up; logs in {}",
        cfg.duration.as_secs_f64(),
        cfg.warmup.as_secs_f64(),
        cfg.stack.logs_dir.display()
    );
    let (mut file, failures) = suite::run(&cfg).await?;
    finish(&mut file, &args.output, args.markdown.as_deref())?;
    if !failures.is_empty() {
        eprintln!("suite: {} point(s) failed:", failures.len());
        for f in &failures {
            eprintln!("  {f}");
        }
    }
    Ok(failures.is_empty())
}

async fn scaling_command(args: ScalingArgs) -> Result<()> {
    let Some(service) = args.scenario.scaled_service() else {
        bail!(
            "{} has no single service to scale (use product-get, product-list, stock-contention or order-place)",
            args.scenario.name()
        );
    };
    let counts = scaling::parse_counts(&args.instances)?;
    let opts = args.load.options(args.scenario)?;
    let mut stack = Stack::new(args.stack.config()?)?;
    let url = stack.start_nats(args.sync).await?;
    for other in args.scenario.services().iter().filter(|s| **s != service) {
        stack.start_service(other, &[]).await?;
    }
    let rust_log = Some(stack.config.services_rust_log.clone());
    let mut file = empty_file(&opts, None, rust_log);
    file.versions.nats_server = nats_version(&url).await;
    let plans = [(args.scenario, opts)];
    let runs = scaling::run_on(&mut stack, &plans, &counts, |what| eprintln!("{what}")).await;
    stack.stop().await;
    file.scaling = runs?;
    finish(&mut file, &args.output, None)
}

async fn main_command(command: Command) -> Result<bool> {
    match command {
        Command::Run(a) => run_command(a).await.map(|()| true),
        Command::Suite(a) => suite_command(a).await,
        Command::Scaling(a) => scaling_command(a).await.map(|()| true),
        Command::Report(a) => {
            let mut file = ResultsFile::read(&a.file)?;
            let output = OutputArgs {
                json_out: None,
                compare: a.compare,
            };
            finish(&mut file, &output, a.markdown.as_deref()).map(|()| true)
        }
        Command::Compare { new, old } => {
            let (new, old) = (ResultsFile::read(&new)?, ResultsFile::read(&old)?);
            print!("{}", report::compare_text(&new, &old));
            Ok(true)
        }
        Command::EchoServer(a) => echo::run(&a.nats_url, &a.subject, &a.queue, a.reply_bytes)
            .await
            .map(|()| true),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_echo = matches!(cli.command, Command::EchoServer(_));
    // The echo server handles its own signals; everything else stops the
    // processes it started (the work future is dropped, its stack with it).
    let outcome = if is_echo {
        main_command(cli.command).await
    } else {
        tokio::select! {
            outcome = main_command(cli.command) => outcome,
            signal = shop_bench::echo::shutdown_signal() => match signal {
                Ok(()) => {
                    eprintln!("shop-bench: interrupted; stopped what it started");
                    return ExitCode::from(130);
                }
                Err(e) => Err(e),
            },
        }
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("shop-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
