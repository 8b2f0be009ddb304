//! `shop`: run and talk to a shop from the command line.
//!
//! Exit codes: 0 success, 1 the service answered with an error, 2 bad usage,
//! 3 NATS unreachable, 4 nobody answered (no responders, no such instance, or a
//! timeout), 5 `shop up` could not start a part of the system.

mod auth;
mod dlq;
mod exit;
mod http;
mod logs;
mod manifest;
mod req;
mod status;
mod targets;
mod up;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "shop",
    version,
    about = "Run and talk to a shop: the whole system, requests, status, logs, dead letters, Prometheus discovery"
)]
struct Cli {
    /// NATS server URL.
    #[arg(long, short = 's', global = true, env = "NATS_URL", default_value = shop_nats::connect::DEFAULT_NATS_URL)]
    server: String,
    /// NATS credentials file (`shop up` prints the operator's; `shop auth init` writes them).
    #[arg(long, global = true, env = "NATS_CREDS")]
    creds: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Write DIR: a nats-server configuration with decentralized JWT auth, a
    /// .creds file per identity with permissions from the declarations, and
    /// the data keys. Run again to re-issue the JWTs for the same identities.
    Init {
        dir: PathBuf,
        /// New user identities; the old ones are revoked (the server must then
        /// reload its configuration: `nats-server --signal reload`, or restart).
        #[arg(long)]
        rotate: bool,
    },
    /// What each identity may publish and subscribe to, from the declarations.
    Permissions {
        /// The Markdown table `docs/security.md` carries.
        #[arg(long)]
        markdown: bool,
        /// JSON instead of text.
        #[arg(long, conflicts_with = "markdown")]
        json: bool,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Start the whole system here: NATS (when none is reachable), every service,
    /// the gateway, demo data; Ctrl-C stops it all.
    Up {
        /// Instances of each service.
        #[arg(long, env = "REPLICAS", default_value_t = 2)]
        replicas: usize,
        /// The project checkout (NATS configuration, demo catalog, `.tools/`);
        /// found from this binary's location when absent.
        #[arg(long)]
        root: Option<PathBuf>,
        /// Where the service binaries are; this binary's directory when absent.
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Logs, data and the NATS store; `<root>/.run` when absent.
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Admin HTTP port of instance 1 of the first service (instance i of the
        /// k-th service: base + 10k + i - 1); 0 gives every instance a free port.
        #[arg(long, default_value_t = 9101)]
        admin_port_base: u16,
        /// The gateway's HTTP address.
        #[arg(long, env = "GATEWAY_ADDR", default_value = "127.0.0.1:3000")]
        gateway_addr: String,
        /// Monitoring port of a NATS server this starts; 0 for none.
        #[arg(long, env = "NATS_HTTP_PORT", default_value_t = 8222)]
        nats_http_port: u16,
        /// Do not seed the demo catalog.
        #[arg(long)]
        no_seed: bool,
        /// Run without NATS auth: every client may do everything. For
        /// measurements and debugging only.
        #[arg(long, conflicts_with = "auth_dir")]
        no_auth: bool,
        /// The auth directory (`shop auth init`) of the NATS server: required
        /// when using a server this does not start; `<run-dir>/auth` otherwise.
        #[arg(long, env = "SHOP_AUTH_DIR")]
        auth_dir: Option<PathBuf>,
        /// Start a local NATS cluster of this many nodes (3: survives losing
        /// one) instead of one server: client ports from --server's up, every
        /// stream and bucket with 3 replicas, every service given every node.
        #[arg(long, env = "NATS_CLUSTER", default_value_t = 1)]
        nats_cluster: usize,
    },
    /// NATS credentials and permissions: `init`, `permissions`.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Send a request and print the reply (pretty JSON) or the error.
    Req {
        subject: String,
        /// JSON payload.
        #[arg(default_value = "{}")]
        json: String,
        /// Seconds to wait for the reply.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
        /// Log in as the admin (user.login with ADMIN_EMAIL / ADMIN_PASSWORD or
        /// the flags below) and send the request with its token: to read or
        /// change any user's data.
        #[arg(long, conflicts_with = "token")]
        admin: bool,
        /// The admin's email, for --admin.
        #[arg(long, env = "ADMIN_EMAIL")]
        admin_email: Option<String>,
        /// The admin's password, for --admin (prefer the environment).
        #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true)]
        admin_password: Option<String>,
        /// Send this token (a user's, from user.login) in `Authorization: Bearer`.
        #[arg(long)]
        token: Option<String>,
    },
    /// Every live instance with version, uptime, health, counts, latency, state
    /// lag and consumer lag.
    Status {
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only the streams: each one's leader (the NATS node that leads it) and replicas.
        #[arg(long)]
        streams: bool,
    },
    /// Log records of every service from the LOGS stream, oldest first.
    Logs {
        /// Keep printing new records as they arrive.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// Only this level and more severe (error, warn, info, debug, trace).
        #[arg(long)]
        level: Option<String>,
        /// Only records of this trace (32 hex digits).
        #[arg(long)]
        trace: Option<String>,
        /// Only records from this long ago on, e.g. 90s, 15m, 2h, 3d.
        #[arg(long)]
        since: Option<String>,
        /// Each record as its JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Every service's declaration (the gateway's included): endpoints and who
    /// may call them, events published, subjects called, consumers, streams
    /// and buckets owned.
    Manifest {
        /// JSON (`{"services":[...]}`, request schemas included) instead of text.
        #[arg(long)]
        json: bool,
        /// The Markdown tables `docs/subjects.md` carries.
        #[arg(long, conflicts_with = "json")]
        markdown: bool,
    },
    /// What the system set aside (DEADLETTER, PARKED): list it, replay the
    /// order saga's dead letters.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Write Prometheus file-based discovery targets for every instance, and keep
    /// the file up to date as instances come and go.
    PrometheusTargets {
        file: std::path::PathBuf,
        /// Write once and exit.
        #[arg(long)]
        once: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    let result = async {
        if let Command::Up {
            replicas,
            root,
            bin_dir,
            run_dir,
            admin_port_base,
            gateway_addr,
            nats_http_port,
            no_seed,
            no_auth,
            auth_dir,
            nats_cluster,
        } = cli.command
        {
            return up::run(up::UpOptions {
                server: cli.server,
                replicas,
                root,
                bin_dir,
                run_dir,
                admin_port_base,
                gateway_addr,
                nats_http_port,
                seed: !no_seed,
                auth: match no_auth {
                    true => up::Auth::Off,
                    false => up::Auth::On(auth_dir),
                },
                nats_cluster,
            })
            .await;
        }
        if let Command::Manifest { json, markdown } = cli.command {
            return manifest::run(json, markdown);
        }
        if let Command::Auth(command) = cli.command {
            return match command {
                AuthCommand::Init { dir, rotate } => auth::run_init(&dir, rotate),
                AuthCommand::Permissions { markdown, json } => {
                    auth::run_permissions(markdown, json)
                }
            };
        }
        let client = exit::connect(&cli.server, cli.creds.as_deref()).await?;
        match cli.command {
            Command::Up { .. } | Command::Manifest { .. } | Command::Auth(_) => Ok(()),
            Command::Req {
                subject,
                json,
                timeout,
                admin,
                admin_email,
                admin_password,
                token,
            } => {
                let acting_as = match (admin, token) {
                    (true, _) => match (admin_email, admin_password) {
                        (Some(email), Some(password)) => req::As::Admin { email, password },
                        _ => {
                            return Err(exit::Failure::new(
                                exit::USAGE,
                                "--admin needs ADMIN_EMAIL and ADMIN_PASSWORD (or --admin-email and --admin-password)",
                            ))
                        }
                    },
                    (false, Some(token)) => req::As::Token(token),
                    (false, None) => req::As::Nobody,
                };
                req::run(
                    &client,
                    &subject,
                    &json,
                    Duration::from_secs_f64(timeout.max(0.001)),
                    acting_as,
                )
                .await
            }
            Command::Status {
                service,
                json,
                streams,
            } => {
                status::run(&client, service.as_deref(), json, streams).await
            }
            Command::Logs {
                follow,
                service,
                level,
                trace,
                since,
                json,
            } => {
                logs::run(
                    &client,
                    logs::LogQuery {
                        follow,
                        service,
                        level,
                        trace,
                        since,
                        json,
                    },
                )
                .await
            }
            Command::PrometheusTargets { file, once } => targets::run(&client, &file, once).await,
            Command::Dlq { command } => dlq::run(&client, command).await,
        }
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("shop: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Ends quietly when stdout's reader goes away (`shop logs -f | head`), as
/// other command-line tools do, instead of panicking in `println!`.
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: `signal` only sets the process-wide disposition of SIGPIPE to
    // its default; no handler code is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
