//! The `gateway` binary: `gateway run` serves Gateway API manifests, `gateway status` prints
//! the status a controller would write for them.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use gateway::standalone::{self, RunOptions};
use gateway::translate::{Options, DEFAULT_CONTROLLER_NAME};

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "Sluice gateway: serves Kubernetes Gateway API manifests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// A manifest file or a folder of them (.yaml, .yml, .json; multi-document YAML).
    #[arg(long, short = 'm')]
    manifests: PathBuf,
    /// Serve Gateways whose GatewayClass names this controller.
    #[arg(long, default_value = DEFAULT_CONTROLLER_NAME)]
    controller_name: String,
    /// Hand out addresses of this range to Gateways without spec.addresses.
    #[arg(long)]
    address_pool: Option<ipnet::IpNet>,
    /// Address of Gateways without spec.addresses when there is no pool.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
}

impl Common {
    fn options(&self) -> Options {
        Options {
            controller_name: self.controller_name.clone(),
            bind: self.bind,
            address_pool: self.address_pool,
            ..Options::default()
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum AccessLog {
    Off,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Yaml,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Gateways of a folder of manifests, reloading on every change.
    Run {
        #[command(flatten)]
        common: Common,
        /// Admin listener: /ready, /status, /config, /metrics.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin_addr: SocketAddr,
        /// One JSON line per request on stdout, or nothing.
        #[arg(long, value_enum, default_value = "json")]
        access_log: AccessLog,
        /// Worker threads of the data path (default: number of cores).
        #[arg(long)]
        threads: Option<usize>,
        /// How long shutdown waits for open connections, in seconds.
        #[arg(long, default_value = "10")]
        drain_timeout: u64,
    },
    /// Print the status a Gateway API controller would write for the manifests.
    Status {
        #[command(flatten)]
        common: Common,
        #[arg(long, short = 'o', value_enum, default_value = "text")]
        output: Output,
    },
}

fn init_logging() {
    // pingora logs through `log`: the subscriber's `init` bridges it into tracing. Logs go to
    // stderr, the access log to stdout.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,pingora_core=warn,pingora_proxy=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Status { common, output } => {
            let mut opts = common.options();
            opts.now = k8s_openapi::jiff::Timestamp::now();
            match standalone::load_and_translate(&common.manifests, &opts, &mut Default::default())
            {
                Err(e) => {
                    eprint!("error: {e}");
                    std::process::ExitCode::FAILURE
                }
                Ok(t) => {
                    let mut out = String::new();
                    match output {
                        Output::Text => {
                            out.push_str(&gateway::status::render_text(&t.statuses));
                            if !t.warnings.is_empty() {
                                out.push_str("Warnings:\n");
                                for w in &t.warnings {
                                    out.push_str(&format!("  {w}\n"));
                                }
                            }
                        }
                        Output::Yaml => {
                            for s in &t.statuses {
                                out.push_str("---\n");
                                out.push_str(&serde_yaml::to_string(s).unwrap_or_default());
                            }
                        }
                        Output::Json => {
                            out.push_str(
                                &serde_json::to_string_pretty(&t.statuses).unwrap_or_default(),
                            );
                            out.push('\n');
                        }
                    }
                    // A closed pipe (`| head`) is not an error worth a panic.
                    let _ =
                        std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
                    std::process::ExitCode::SUCCESS
                }
            }
        }
        Command::Run {
            common,
            admin_addr,
            access_log,
            threads,
            drain_timeout,
        } => {
            init_logging();
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = threads {
                rt.worker_threads(n.max(1));
            }
            let rt = match rt.enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let opts = RunOptions {
                translate: common.options(),
                manifests: common.manifests,
                admin_addr,
                access_log: matches!(access_log, AccessLog::Json),
                drain_timeout: Duration::from_secs(drain_timeout),
            };
            match rt.block_on(standalone::run(opts)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}
