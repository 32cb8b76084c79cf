//! `echo`: the echo backend as a program. Identity comes from flags or from the environment
//! variables the Gateway API conformance echo server reads.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use conformance::echo::{serve, Identity, TlsFiles};

#[derive(Parser)]
#[command(
    name = "echo",
    about = "Echo backend: answers every request with JSON describing it"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    #[arg(long, env = "NAMESPACE", default_value = "")]
    namespace: String,
    #[arg(long, env = "INGRESS_NAME", default_value = "")]
    ingress: String,
    #[arg(long, env = "SERVICE_NAME", default_value = "")]
    service: String,
    #[arg(long, env = "POD_NAME", default_value = "")]
    pod: String,
    /// Serve TLS with this certificate (PEM) ...
    #[arg(long, env = "TLS_SERVER_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// ... and this key (PEM).
    #[arg(long, env = "TLS_SERVER_PRIVKEY")]
    tls_key: Option<PathBuf>,
    /// Request client certificates and verify them against these CAs (PEM).
    #[arg(long, env = "TLS_CLIENT_CACERTS")]
    tls_client_cacerts: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(TlsFiles {
            cert_pem: std::fs::read(c)?,
            key_pem: std::fs::read(k)?,
            client_ca_pem: args
                .tls_client_cacerts
                .as_ref()
                .map(std::fs::read)
                .transpose()?,
        }),
        _ => None,
    };
    let id = Identity {
        namespace: args.namespace,
        ingress: args.ingress,
        service: args.service,
        pod: args.pod,
    };
    let server = serve(args.listen, id, tls).await?;
    eprintln!("echo listening on {}", server.addr);
    // SIGTERM too: as a container's first process it would otherwise ignore the kubelet's stop.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = sigterm.recv() => {}
    }
    Ok(())
}
