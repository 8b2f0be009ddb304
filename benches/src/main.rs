//! `shop-bench`: what the shop services can take on this machine (see `--help`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;
use shop_bench::load::Model;
use shop_bench::results::{check_targets, ResultsFile};
use shop_bench::scenarios::{self, reads, Options, Scenario, Target, ECHO_SUBJECT};
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
    /// The chaos run: `shop-chaos run ARGS` (see `shop-chaos run --help`).
    #[command(disable_help_flag = true)]
    Chaos {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Fuzz every endpoint of a running shop: `shop-chaos fuzz ARGS`.
    #[command(disable_help_flag = true)]
    Fuzz {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModelKind {
    Closed,
    Open,
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
    /// The options of `scenario`, under the model the flags ask for.
    fn options(&self, scenario: Scenario) -> Result<Options> {
        let model = match (self.model, self.in_flight, self.rate) {
            (None, None, None) => scenario.default_model(),
            (None, Some(_), Some(_)) => bail!("--in-flight and --rate: choose one with --model"),
            (Some(ModelKind::Open), _, rate) | (None, None, rate) => Model::Open {
                rate: rate.context("--model open needs --rate (arrivals per second)")?,
            },
            (Some(ModelKind::Closed), in_flight, _) | (None, in_flight, None) => Model::Closed {
                in_flight: in_flight.unwrap_or(64),
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
        let bin_dir = self.bin_dir.clone();
        let bin_dir = bin_dir.map_or_else(shop_process::bin_dir, Ok)?;
        let logs_dir = self.logs_dir.clone().unwrap_or_else(|| {
            let stamp = shop_nats::clock::now_rfc3339().replace(':', "");
            shop_process::workspace_root().join(format!("results/logs/{stamp}"))
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
    #[command(flatten)]
    config: SuiteConfig,
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
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    instances: Vec<usize>,
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

/// A results file for points run with `opts`, on a stack it `spawned` or not.
async fn empty_file(opts: &Options, stack: &Stack, spawned: bool) -> Result<ResultsFile> {
    let mut settings = opts.settings([
        ("model", json!(opts.model)),
        ("rounds", json!(opts.rounds)),
        ("products", json!(opts.products)),
    ]);
    let url = stack.nats_url()?;
    settings.nats_url = (!spawned).then(|| url.to_string());
    settings.services_rust_log = spawned.then(|| stack.config.services_rust_log.clone());
    let mut file = ResultsFile::new(settings);
    let client = nats::connect(url, "shop-bench-info", Duration::from_secs(5)).await;
    file.versions.nats_server = client.ok().map(|c| c.server_info().version);
    Ok(file)
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

/// Starts nats-server and what `scenario` needs on `stack`; returns its target.
async fn spawn_for(
    stack: &mut Stack,
    scenario: Scenario,
    sync: JetStreamSync,
    instances: usize,
    opts: &Options,
) -> Result<Target> {
    stack.start_nats(sync).await?;
    let main = (scenario.scaled_service()).or(scenario.services().first().copied());
    for service in scenario.services() {
        let n = if Some(*service) == main { instances } else { 1 };
        for _ in 0..n {
            stack.start_service(service, &[]).await?;
        }
    }
    let mut target = stack.target(main.map(|m| stack.count(m)))?;
    match scenario {
        Scenario::Echo => start_echo(stack, opts).await?,
        Scenario::GatewayGet => {
            let uncached = opts.variant.as_deref() == Some("uncached");
            let cache = [(GATEWAY_CACHE_ENV, if uncached { "off" } else { "on" })];
            let base = stack.start_gateway("gateway", &cache).await?;
            target.http_url = Some(format!("{base}{}", scenarios::gateway_get::PRODUCT_PATH));
        }
        _ => {}
    }
    target.watched = stack.watched();
    Ok(target)
}

/// Starts the echo responder, replying as many bytes as a product's reply (or 216).
async fn start_echo(stack: &mut Stack, opts: &Options) -> Result<()> {
    let client = nats::connect(stack.nats_url()?, "shop-bench-probe", opts.timeout).await?;
    let json = shop_nats::Encoding::Json;
    let probe = reads::probe(&client, &seed::read_id(0), json, opts.timeout).await;
    stack.start_echo(ECHO_SUBJECT, probe.unwrap_or(216)).await
}

async fn answers(url: &str, subject: &str) -> Result<bool> {
    let client = nats::connect(url, "shop-bench-probe", Duration::from_secs(2)).await?;
    match client.request(subject.to_string(), "{}".into()).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(false),
        Err(e) => Err(e).with_context(|| format!("probing {subject}")),
    }
}

async fn run_command(args: RunArgs) -> Result<()> {
    let opts = args.load.options(args.scenario)?;
    let mut stack = Stack::new(args.stack.config()?)?;
    let target = if args.spawn {
        let instances = args.instances.max(1);
        spawn_for(&mut stack, args.scenario, args.sync, instances, &opts).await?
    } else {
        stack.use_nats(&args.nats_url);
        if args.scenario == Scenario::Echo && !answers(&args.nats_url, ECHO_SUBJECT).await? {
            start_echo(&mut stack, &opts).await?;
        }
        let mut target = stack.target(None)?;
        target.http_url = Some(args.url.clone());
        target
    };
    let mut file = empty_file(&opts, &stack, args.spawn).await?;
    let result = scenarios::run(args.scenario, &target, &opts).await;
    stack.stop().await;
    file.results.push(result?);
    finish(&mut file, &args.output, None)
}

async fn suite_command(args: SuiteArgs) -> Result<bool> {
    let stack = args.stack.config()?;
    let opts = args.config.closed();
    let (secs, warmup) = (opts.duration.as_secs_f64(), opts.warmup.as_secs_f64());
    let logs = stack.logs_dir.display();
    eprintln!("suite: {secs} s per point after {warmup} s warm-up; logs in {logs}");
    let (mut file, failures) = suite::run(&args.config, &stack).await?;
    finish(&mut file, &args.output, args.markdown.as_deref())?;
    if !failures.is_empty() {
        eprintln!("suite: {} point(s) failed:", failures.len());
        failures.iter().for_each(|f| eprintln!("  {f}"));
    }
    Ok(failures.is_empty())
}

async fn scaling_command(args: ScalingArgs) -> Result<()> {
    if args.scenario.scaled_service().is_none() {
        bail!(
            "{} has no single service to scale (use product-get, product-list, stock-contention or order-place)",
            args.scenario.name()
        );
    }
    let opts = args.load.options(args.scenario)?;
    let mut stack = Stack::new(args.stack.config()?)?;
    spawn_for(&mut stack, args.scenario, args.sync, 0, &opts).await?;
    let mut file = empty_file(&opts, &stack, true).await?;
    let plans = [(args.scenario, opts)];
    let counts = &args.instances;
    let runs = scaling::run_on(&mut stack, &plans, counts, |what| eprintln!("{what}")).await;
    stack.stop().await;
    file.scaling = runs?;
    finish(&mut file, &args.output, None)
}

/// Runs `command`; `Ok(false)` when it ran but something in it failed.
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
        Command::Chaos { args } => shop_chaos("run", args).await,
        Command::Fuzz { args } => shop_chaos("fuzz", args).await,
    }
}

/// Runs `shop-chaos <command> <args>` (next to this binary); true when it exits 0.
async fn shop_chaos(command: &str, args: Vec<std::ffi::OsString>) -> Result<bool> {
    let bin = shop_process::bin_dir()?.join("shop-chaos");
    let mut chaos = tokio::process::Command::new(&bin);
    chaos.arg(command).args(args).kill_on_drop(true);
    let (status, shown) = (chaos.status().await, bin.display());
    let status = status.with_context(|| format!("running {shown} (cargo build -p shop-chaos)"))?;
    Ok(status.success())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_echo = matches!(cli.command, Command::EchoServer(_));
    // Other than the echo server, a signal drops the work future and its stack with it.
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
