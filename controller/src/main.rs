//! The `controller` binary: the Sluice controller on a Kubernetes cluster.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use tracing::info;

use controller::{local::LocalOptions, Controller, ControllerOptions};

#[derive(Parser)]
#[command(
    name = "controller",
    version,
    about = "Sluice controller: serves the Gateway API objects of a Kubernetes cluster"
)]
struct Cli {
    /// The kubeconfig file (default: KUBECONFIG, ~/.kube/config, or the in-cluster
    /// configuration, as kubectl finds it).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long)]
    context: Option<String>,
    /// Serve GatewayClasses whose spec.controllerName is this.
    #[arg(long, default_value = sluice_translate::DEFAULT_CONTROLLER_NAME)]
    controller_name: String,
    /// Where the configuration discovery service (gRPC) listens for gateways.
    #[arg(long, default_value = "0.0.0.0:18000")]
    discovery_addr: SocketAddr,
    /// Run a gateway process on this host for every accepted Gateway (development, tests
    /// without a node), listening on addresses of --address-pool.
    #[arg(long)]
    local_gateways: bool,
    /// The gateway binary for --local-gateways (default: `gateway` beside this binary).
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
    /// Where local gateways write their logs, snapshot caches and discovery certificates
    /// (default: a folder of the temporary directory).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Hand out addresses of this range to Gateways without spec.addresses.
    #[arg(long)]
    address_pool: Option<ipnet::IpNet>,
    /// Address of Gateways without spec.addresses when there is no pool.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Elect a leader on a Lease among the controller's replicas: only the leader writes
    /// status; every replica serves configuration.
    #[arg(long)]
    leader_elect: bool,
    /// The controller's own namespace, where its Lease and its discovery CA's Secret
    /// (sluice-ca) live (default: POD_NAMESPACE, else sluice-system).
    #[arg(long, env = "POD_NAMESPACE", default_value = "sluice-system")]
    namespace: String,
    #[arg(long, default_value = "sluice-controller")]
    lease_name: String,
    /// Cluster mode: a Gateway's `spec.addresses` (IPAddress) become its Service's
    /// `externalIPs`. Off by default, since whoever may create a Gateway could then have
    /// every node take traffic for any IP (CVE-2020-8554); while off, such a Gateway is not
    /// accepted (UnsupportedAddress).
    #[arg(long)]
    service_external_ips: bool,
    /// With --service-external-ips: the ranges requested addresses must be in, comma-separated
    /// (default: any). A Gateway asking for an address outside them is accepted but not
    /// programmed (AddressNotUsable), and the address is not put on its Service.
    #[arg(long, value_delimiter = ',')]
    service_external_ip_cidrs: Vec<ipnet::IpNet>,
    /// Serve the workload certificate service (Istio's CreateCertificate) here, e.g.
    /// 0.0.0.0:15012. Off by default until the mesh sidecar uses it.
    #[arg(long)]
    workload_ca_addr: Option<SocketAddr>,
    /// The SPIFFE trust domain of workload identities.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// The audience workload ServiceAccount tokens must be bound to.
    #[arg(long, default_value = controller::workload_ca::DEFAULT_AUDIENCE)]
    workload_token_audience: String,
    /// The gateway image of the Deployments the controller creates for Gateways.
    #[arg(long)]
    gateway_image: Option<String>,
    /// The discovery service's URL as gateway Pods reach it.
    #[arg(long, default_value = sluice_translate::infra::DEFAULT_CONTROLLER_URL)]
    controller_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let client = client(&cli).await?;
    let local_gateways = if cli.local_gateways {
        let gateway_bin = match cli.gateway_bin.clone() {
            Some(b) => b,
            None => std::env::current_exe()?
                .parent()
                .map(|d| d.join("gateway"))
                .ok_or_else(|| anyhow::anyhow!("--gateway-bin is required"))?,
        };
        Some(LocalOptions {
            gateway_bin,
            state_dir: cli.state_dir.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!("sluice-gateways-{}", std::process::id()))
            }),
        })
    } else {
        None
    };
    let controller = Controller::start(
        client,
        ControllerOptions {
            controller_name: cli.controller_name.clone(),
            discovery_addr: cli.discovery_addr,
            bind: cli.bind,
            address_pool: cli.address_pool,
            local_gateways,
            infra: sluice_translate::infra::InfraOptions {
                image: cli
                    .gateway_image
                    .clone()
                    .unwrap_or_else(|| sluice_translate::infra::InfraOptions::default().image),
                controller_url: cli.controller_url.clone(),
                addresses_from_service: false,
                external_ips: cli.service_external_ips,
                external_ip_cidrs: cli.service_external_ip_cidrs.clone(),
            },
            namespace: cli.namespace.clone(),
            discovery_names: vec![
                "sluice-controller".into(),
                format!("sluice-controller.{}", cli.namespace),
                format!("sluice-controller.{}.svc", cli.namespace),
            ],
            leader_election: cli.leader_elect.then(|| controller::LeaderElection {
                lease: cli.lease_name.clone(),
                identity: identity(),
            }),
            workload_ca: cli
                .workload_ca_addr
                .map(|addr| controller::WorkloadCaOptions {
                    addr,
                    trust_domain: cli.trust_domain.clone(),
                    audience: cli.workload_token_audience.clone(),
                }),
        },
    )
    .await?;
    let shutdown = signals()?;
    controller.run(shutdown).await?;
    info!("controller stopped");
    Ok(())
}

/// The cluster, found as kubectl finds it.
async fn client(cli: &Cli) -> anyhow::Result<kube::Client> {
    let options = kube::config::KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await?
        }
        None if cli.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer().await.map_err(|e| {
            anyhow::anyhow!("no cluster found (KUBECONFIG, ~/.kube/config, in-cluster): {e}")
        })?,
    };
    info!(cluster = %config.cluster_url, "using cluster");
    Ok(kube::Client::try_from(config)?)
}

/// This replica: its Pod name in a cluster, else host name and PID.
fn identity() -> String {
    match std::env::var("POD_NAME") {
        Ok(pod) => pod,
        Err(_) => format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "controller".into()),
            std::process::id()
        ),
    }
}

fn signals() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = sigterm.recv() => {}
        }
    })
}
