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
    /// Serve the conformance suite's gRPC echo service (h2c) instead of HTTP; set by the
    /// environment variable GRPC_ECHO_SERVER (any value), as for upstream's echo server. With
    /// --tls-cert/--tls-key it serves gRPC over TLS on --tls-listen as well.
    #[arg(long)]
    grpc: bool,
    /// Serve the suite's TCP echo (lines TEST, IS_TLS, PING) instead of HTTP; also set by the
    /// environment variable TCP_ECHO_SERVER. With --tls-cert/--tls-key it terminates TLS on
    /// --tls-listen as well.
    #[arg(long)]
    tcp: bool,
    /// Serve the suite's UDP echo (each datagram answered with JSON) instead of HTTP; also
    /// set by the environment variable UDP_ECHO_SERVER.
    #[arg(long)]
    udp: bool,
    /// The TLS listener of the TCP and gRPC echo.
    #[arg(long, default_value = "127.0.0.1:8443")]
    tls_listen: SocketAddr,
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
    // A mode is chosen by its flag or, as for upstream's echo server, its environment variable.
    let set = |flag: bool, var: &str| flag || std::env::var_os(var).is_some_and(|v| !v.is_empty());
    // Kept until the process ends.
    let _server: Box<dyn std::any::Any> = if set(args.grpc, "GRPC_ECHO_SERVER") {
        let server = conformance::grpc_echo::serve(args.listen, id.clone()).await?;
        eprintln!("gRPC echo listening on {}", server.addr);
        let secure = match &tls {
            Some(files) => {
                let s = conformance::grpc_echo::serve_tls(args.tls_listen, id, files).await?;
                eprintln!("gRPC echo listening on {} (TLS)", s.addr);
                Some(s)
            }
            None => None,
        };
        Box::new((server, secure))
    } else if set(args.tcp, "TCP_ECHO_SERVER") {
        let server =
            conformance::l4_echo::serve_tcp(args.listen, id, tls.map(|t| (args.tls_listen, t)))
                .await?;
        match server.tls_addr {
            Some(t) => eprintln!("TCP echo listening on {} (TLS on {t})", server.addr),
            None => eprintln!("TCP echo listening on {}", server.addr),
        }
        Box::new(server)
    } else if set(args.udp, "UDP_ECHO_SERVER") {
        let server = conformance::l4_echo::serve_udp(args.listen, id).await?;
        eprintln!("UDP echo listening on {}", server.addr);
        Box::new(server)
    } else {
        let server = serve(args.listen, id, tls).await?;
        eprintln!("echo listening on {}", server.addr);
        Box::new(server)
    };
    // SIGTERM too: as a container's first process it would otherwise ignore the kubelet's stop.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = sigterm.recv() => {}
    }
    Ok(())
}
