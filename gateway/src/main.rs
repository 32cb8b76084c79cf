//! The `gateway` binary: `gateway run` serves Gateway API manifests, `gateway status` prints
//! the status a controller would write for them.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

// glibc's allocator showed as 14% of the data path's CPU in profiles (bench/README.md);
// mimalloc's thread-local caches suit the many short-lived buffers of a proxy.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use gateway::app::{self, AppOptions};
use gateway::standalone;
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
    #[command(flatten)]
    translate: TranslateArgs,
}

#[derive(clap::Args, Clone)]
struct TranslateArgs {
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
        self.translate.options()
    }
}

impl TranslateArgs {
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
enum EgressCommand {
    /// Explain the decision for a connection without sending traffic. Exits 0 when allowed,
    /// 3 when denied.
    Check {
        /// A manifest file or a folder of them.
        #[arg(long, short = 'm')]
        manifests: PathBuf,
        /// The client address.
        #[arg(long)]
        from: IpAddr,
        /// The destination, HOST:PORT.
        #[arg(long)]
        to: String,
        /// HTTP (forward proxy), HTTPS (TLS, CONNECT or SNI) or TCP (CONNECT).
        #[arg(long, default_value = "HTTPS")]
        protocol: String,
    },
}

// Parsed once at start: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve the Gateways of a folder of manifests, reloading on every change; or, with
    /// --controller, the Gateway the controller configures.
    Run {
        /// A manifest file or a folder of them (.yaml, .yml, .json; multi-document YAML).
        #[arg(
            long,
            short = 'm',
            required_unless_present = "controller",
            conflicts_with = "controller"
        )]
        manifests: Option<PathBuf>,
        #[command(flatten)]
        translate: TranslateArgs,
        /// Take the configuration from the controller's discovery service at this URL
        /// (http://host:port) instead of manifests.
        #[arg(long, requires = "gateway")]
        controller: Option<String>,
        /// With --controller: the Gateway this process serves, NAMESPACE/NAME.
        #[arg(long, value_parser = parse_ns_name)]
        gateway: Option<gateway::resources::NsName>,
        /// With --controller: keep the last applied snapshot in this file and serve it at the
        /// next start, before the controller answers.
        #[arg(long)]
        snapshot_cache: Option<PathBuf>,
        /// With --controller: listen on every address of this host (0.0.0.0) on each
        /// listener's port, as a gateway Pod behind its Service does.
        #[arg(long, requires = "controller")]
        bind_any: bool,
        /// With an https --controller URL: the controller's CA certificate (PEM).
        #[arg(long, requires_all = ["client_cert", "client_key"])]
        controller_ca: Option<PathBuf>,
        /// This Gateway's discovery client certificate (PEM), issued by the controller.
        #[arg(long, requires = "controller_ca")]
        client_cert: Option<PathBuf>,
        /// Its private key (PEM).
        #[arg(long, requires = "controller_ca")]
        client_key: Option<PathBuf>,
        /// Shut down when the process with this PID is gone (the controller's local
        /// gateways, so none outlives a controller that was killed).
        #[arg(long)]
        exit_with: Option<u32>,
        /// Admin listener: /ready, /status, /config, /infrastructure, /warnings, /metrics.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin_addr: SocketAddr,
        /// One JSON line per request on stdout, or nothing.
        #[arg(long, value_enum, default_value = "json")]
        access_log: AccessLog,
        /// Least severe log level written to stderr (RUST_LOG, when set, is used instead).
        #[arg(long, value_enum, default_value = "info")]
        log_level: LogLevel,
        /// Logs as text (coloured only on a terminal) or one JSON object per line.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Worker threads of the data path (default: number of cores). Each runs its own
        /// event loop and upstream connection pool.
        #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
        threads: Option<usize>,
        /// How long shutdown waits for open connections, in seconds.
        #[arg(long, default_value = "10")]
        drain_timeout: u64,
        /// Run the egress forward proxy (HTTP absolute-form and CONNECT) on this address,
        /// enforcing the EgressPolicies of the manifests.
        #[arg(long)]
        egress_listen: Option<SocketAddr>,
        /// Run the egress TLS passthrough listener on this address: it decides on each
        /// connection's SNI (the destination port is this listener's port) without terminating
        /// TLS.
        #[arg(long)]
        egress_tls_listen: Option<SocketAddr>,
    },
    /// Egress policy tools.
    Egress {
        #[command(subcommand)]
        command: EgressCommand,
    },
    /// Print the Kubernetes resources that run each accepted Gateway in a cluster
    /// (ServiceAccount, Service, Deployment), with its spec.infrastructure labels and
    /// annotations.
    Render {
        #[command(flatten)]
        common: Common,
        /// The gateway container image of the Deployments.
        #[arg(long)]
        image: Option<String>,
        /// YAML documents, or one JSON List.
        #[arg(long, short = 'o', value_enum, default_value = "yaml")]
        output: Output,
    },
    /// Print the status a Gateway API controller would write for the manifests, then the
    /// warnings (objects not served, unresolved references, Services without endpoints).
    Status {
        #[command(flatten)]
        common: Common,
        /// text: conditions per object, then warnings; yaml or json: the status objects.
        #[arg(long, short = 'o', value_enum, default_value = "text")]
        output: Output,
        /// Exit with status 2 when there is any warning (for CI checks of manifests).
        #[arg(long)]
        strict: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(level: LogLevel, format: LogFormat) {
    use std::io::IsTerminal;
    // pingora logs through `log`: the subscriber's `init` bridges it into tracing. Logs go to
    // stderr, the access log to stdout. RUST_LOG, when set, is a full filter and wins.
    let level = match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    };
    // pingora is chatty at info (one line per connection error): it gets `warn` at most, and
    // never more than the chosen level.
    let pingora = match level {
        "error" => "error",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{level},pingora_core={pingora},pingora_proxy={pingora}"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colours only for a person at a terminal, never into files or log collectors.
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Egress {
            command:
                EgressCommand::Check {
                    manifests,
                    from,
                    to,
                    protocol,
                },
        } => egress_check(&manifests, from, &to, &protocol),
        Command::Render {
            common,
            image,
            output,
        } => {
            let mut opts = common.options();
            if let Some(image) = image {
                opts.infra.image = image;
            }
            match standalone::load_and_translate(&common.manifests, &opts, &mut Default::default())
            {
                Err(e) => {
                    eprint!("error: {e}");
                    std::process::ExitCode::FAILURE
                }
                Ok(t) => {
                    let out = match output {
                        Output::Json => {
                            let list = gateway::infra::list(&t.infrastructure);
                            serde_json::to_string_pretty(&list).unwrap_or_default() + "\n"
                        }
                        Output::Text | Output::Yaml => t
                            .infrastructure
                            .iter()
                            .flat_map(|i| i.objects())
                            .map(|o| {
                                format!("---\n{}", serde_yaml::to_string(&o).unwrap_or_default())
                            })
                            .collect(),
                    };
                    let _ =
                        std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
                    std::process::ExitCode::SUCCESS
                }
            }
        }
        Command::Status {
            common,
            output,
            strict,
        } => {
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
                        // The objects go to stdout as they are; the warnings to stderr.
                        Output::Yaml | Output::Json => {
                            for w in &t.warnings {
                                eprintln!("warning: {w}");
                            }
                        }
                    }
                    match output {
                        Output::Text => {}
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
                    if strict && !t.warnings.is_empty() {
                        eprintln!(
                            "--strict: {} warning(s); fix them or run without --strict",
                            t.warnings.len()
                        );
                        std::process::ExitCode::from(2)
                    } else {
                        std::process::ExitCode::SUCCESS
                    }
                }
            }
        }
        Command::Run {
            manifests,
            translate,
            controller,
            gateway,
            snapshot_cache,
            bind_any,
            controller_ca,
            client_cert,
            client_key,
            exit_with,
            admin_addr,
            access_log,
            log_level,
            log_format,
            threads,
            drain_timeout,
            egress_listen,
            egress_tls_listen,
        } => {
            init_logging(log_level, log_format);
            // The runtime of this thread runs the control plane (manifest watching, admin).
            // Data-path workers (gateway and egress listeners) are threads of their own with a
            // runtime each; with one worker, this runtime is the worker.
            let threads = threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            });
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let source = match (controller, gateway, manifests) {
                (Some(url), Some(gateway), _) => {
                    app::ConfigSource::Controller(gateway::controlled::ControllerOptions {
                        url,
                        gateway,
                        instance: instance_name(),
                        snapshot_cache,
                        bind_any,
                        tls: match (controller_ca, client_cert, client_key) {
                            (Some(ca), Some(cert), Some(key)) => {
                                Some(gateway::controlled::ClientTls { ca, cert, key })
                            }
                            _ => None,
                        },
                    })
                }
                (_, _, Some(manifests)) => app::ConfigSource::Files {
                    manifests,
                    translate: translate.options(),
                },
                _ => {
                    eprintln!("error: give --manifests, or --controller with --gateway");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let opts = AppOptions {
                source,
                admin_addr,
                access_log: matches!(access_log, AccessLog::Json),
                threads,
                drain_timeout: Duration::from_secs(drain_timeout),
                egress_addr: egress_listen,
                egress_sni_addr: egress_tls_listen,
            };
            let run = async {
                let signals = app::signals().await?;
                let shutdown = async move {
                    match exit_with {
                        Some(pid) => tokio::select! {
                            () = signals => {}
                            () = app::process_gone(pid) => {
                                tracing::warn!(pid, "the controller is gone; shutting down");
                            }
                        },
                        None => signals.await,
                    }
                };
                app::build(opts).await?.run(shutdown).await
            };
            match rt.block_on(run) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

fn parse_ns_name(s: &str) -> Result<gateway::resources::NsName, String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(gateway::resources::NsName::new(ns, name))
        }
        _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
    }
}

/// This process, for the controller's logs: the Pod name in a cluster (HOSTNAME), else the
/// host name, and the PID.
fn instance_name() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "gateway".into());
    format!("{host}/{}", std::process::id())
}

fn egress_check(
    manifests: &std::path::Path,
    from: IpAddr,
    to: &str,
    protocol: &str,
) -> std::process::ExitCode {
    use gateway::egress::policy::{Host, Protocol};
    let fail = |msg: String| {
        eprintln!("error: {msg}");
        std::process::ExitCode::FAILURE
    };
    let protocol = match protocol.to_ascii_uppercase().as_str() {
        "HTTP" => Protocol::HTTP,
        "HTTPS" | "TLS" => Protocol::HTTPS,
        "TCP" => Protocol::TCP,
        other => return fail(format!("--protocol {other:?}: use HTTP, HTTPS or TCP")),
    };
    let Some((host, port)) = to.rsplit_once(':') else {
        return fail(format!("--to {to:?}: use HOST:PORT"));
    };
    let Ok(port) = port.parse::<u16>() else {
        return fail(format!("--to {to:?}: {port:?} is not a port"));
    };
    // The same translation as `run`: invalid policies are reported and not used.
    let t = match gateway::standalone::load_and_translate(
        manifests,
        &gateway::translate::Options::default(),
        &mut Default::default(),
    ) {
        Ok(t) => t,
        Err(e) => return fail(e.to_string().trim_end().to_string()),
    };
    for w in t
        .warnings
        .iter()
        .filter(|w| w.object.starts_with("EgressPolicy "))
    {
        eprintln!("warning: {w}");
    }
    let policies = gateway::engine::compile::egress(&t.config.egress);
    let host = Host::parse(host);
    let d = policies.decide(from, &host, port, protocol);
    let verdict = if !d.allowed {
        "DENIED"
    } else if d.audit {
        "ALLOWED (audit)"
    } else {
        "ALLOWED"
    };
    let mut out = format!("{verdict}: {from} -> {host}:{port} ({protocol:?})\n");
    match (&d.policy, &d.rule) {
        (Some(p), Some(r)) => out.push_str(&format!("  by EgressPolicy {p}, rule {r}\n")),
        _ => out.push_str(&format!("  {}\n", d.reason)),
    }
    if !d.static_endpoints.is_empty() {
        let eps: Vec<String> = d.static_endpoints.iter().map(|e| e.to_string()).collect();
        out.push_str(&format!(
            "  connects to static endpoints {}\n",
            eps.join(", ")
        ));
    }
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
    if d.allowed {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(3)
    }
}
