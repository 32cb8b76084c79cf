//! The egress gateway: an HTTP forward proxy (absolute-form requests and `CONNECT`) that lets
//! workloads reach only what EgressPolicies allow.
//!
//! Decisions use the name the client asked for (absolute URI host or CONNECT authority), and the
//! gateway resolves that name itself: a client never chooses the IP address behind an allowed
//! name. Inside a CONNECT tunnel, a TLS ClientHello whose SNI differs from the CONNECT host is
//! refused. Every decision is logged with its policy and rule, and counted in `/metrics`.

pub mod sni;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::drain::{accept_until, ConnectionGuard};
use crate::workers::accept_on;
use crate::EngineState;
use sluice_egress_policy::{Decision, Host, Protocol};
use tokio::runtime::Handle;
use tokio::sync::watch;

pub use sluice_api::egress::POLICY_GROUP;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Body = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

fn text(code: StatusCode, reason: &str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "text/plain")
        .header("x-sluice-egress-reason", reason)
        .body(
            Full::new(Bytes::from(format!("{reason}\n")))
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap_or_default()
}

/// Starts the forward proxy on `addr`, accepting on every worker; policies are read from the
/// current snapshot per request.
/// It stops when `drain` is set: no new connections, and idle keep-alive connections close.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<EngineState>,
    workers: &[Handle],
    drain: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    info!(addr = %local, "egress proxy listening");
    let stop = drain.clone();
    accept_on_workers(workers, listener, drain, move |tcp, peer| {
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        let mut stop = stop.clone();
        async move {
            let _guard = ConnectionGuard::new(&state);
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(state, peer, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|s| *s) => {}
            }
            // Draining: finish the request in progress, then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    })?;
    Ok(local)
}

/// Accepts connections in the background on every worker, through the engine's accept loop,
/// until `drain` is set, and runs `serve` for each on the worker that took it.
fn accept_on_workers<F, Fut>(
    workers: &[Handle],
    listener: TcpListener,
    drain: watch::Receiver<bool>,
    serve: F,
) -> std::io::Result<()>
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr()?;
    accept_on(workers, listener.into_std()?, move |_, listener| {
        let serve = serve.clone();
        let drain = drain.clone();
        async move {
            accept_until(listener, addr, drain, move |tcp, peer| {
                tokio::spawn(serve(tcp, peer));
            })
            .await
        }
    })
}

fn record(state: &EngineState, peer: SocketAddr, host: &Host, port: u16, kind: &str, d: &Decision) {
    let decision = if !d.allowed {
        "denied"
    } else if d.audit {
        "audit"
    } else {
        "allowed"
    };
    let destination = format!("{host}:{port}");
    state
        .metrics
        .egress_decisions
        .with_label_values(&[
            decision,
            d.policy.as_deref().unwrap_or(""),
            d.rule.as_deref().unwrap_or(""),
        ])
        .inc();
    if state.access_log {
        crate::access_log::write_line(&serde_json::json!({
            "time": k8s_openapi::jiff::Timestamp::now().to_string(),
            "egress": kind,
            "source": peer.to_string(),
            "destination": destination,
            "decision": decision,
            "policy": d.policy,
            "rule": d.rule,
            "reason": d.reason,
        }));
    }
}

/// The addresses to connect to: the rule's static endpoints, the IP literal a CIDR rule
/// allowed, or the name resolved by the gateway.
async fn addresses(host: &Host, port: u16, d: &Decision) -> std::io::Result<Vec<SocketAddr>> {
    if !d.static_endpoints.is_empty() {
        return Ok(d.static_endpoints.clone());
    }
    match host {
        Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
        Host::Name(n) => Ok(tokio::net::lookup_host((n.as_str(), port)).await?.collect()),
    }
}

/// Resolves (or takes the static endpoints of) an allowed destination and connects to it; the
/// error is the answer to send back.
async fn open(host: &Host, port: u16, d: &Decision) -> Result<TcpStream, Response<Body>> {
    let addrs = addresses(host, port, d).await.map_err(|e| {
        text(
            StatusCode::BAD_GATEWAY,
            &format!("cannot resolve {host}: {e}"),
        )
    })?;
    connect(&addrs)
        .await
        .map_err(|e| text(StatusCode::BAD_GATEWAY, &format!("cannot connect: {e}")))
}

async fn connect(addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        }
    }
    Err(last)
}

async fn handle(
    state: Arc<EngineState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let policies = state.config.load().egress.clone();
    if req.method() == Method::CONNECT {
        let Some(authority) = req.uri().authority().cloned() else {
            return text(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
        };
        let Some(port) = authority.port_u16() else {
            return text(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
        };
        let host = Host::parse(authority.host());
        let d = policies.decide_any(peer.ip(), &host, port, &[Protocol::HTTPS, Protocol::TCP]);
        if !d.allowed {
            record(&state, peer, &host, port, "connect", &d);
            return text(StatusCode::FORBIDDEN, &d.reason);
        }
        let upstream = match open(&host, port, &d).await {
            Ok(s) => s,
            Err(resp) => {
                record(&state, peer, &host, port, "connect", &d);
                return resp;
            }
        };
        // An allowed tunnel is recorded once its first bytes are checked: a ClientHello
        // naming another server turns it into a denial.
        tokio::spawn(async move {
            // The tunnel outlives the HTTP connection it was asked on: it counts on its own.
            let _guard = ConnectionGuard::new(&state);
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    tunnel(
                        TokioIo::new(upgraded),
                        upstream,
                        &state,
                        peer,
                        host,
                        port,
                        d,
                    )
                    .await
                }
                Err(e) => {
                    record(&state, peer, &host, port, "connect", &d);
                    debug!(error = %e, "CONNECT upgrade failed");
                }
            }
        });
        return Response::new(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed(),
        );
    }

    // Absolute-form: http://host[:port]/path
    let Some(authority) = req.uri().authority().cloned() else {
        return text(
            StatusCode::BAD_REQUEST,
            "a forward proxy needs an absolute URI or CONNECT",
        );
    };
    if req.uri().scheme_str() != Some("http") {
        return text(
            StatusCode::BAD_REQUEST,
            "only http:// is proxied in absolute form; use CONNECT for TLS",
        );
    }
    let port = authority.port_u16().unwrap_or(80);
    let host = Host::parse(authority.host());
    // The Host header must name the same destination as the URI.
    if let Some(h) = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        let hh = Host::parse(h.rsplit_once(':').map(|(a, _)| a).unwrap_or(h));
        if hh != host {
            let d = Decision {
                allowed: false,
                audit: false,
                policy: None,
                rule: None,
                reason: "denied: Host header does not match the request URI".into(),
                static_endpoints: Vec::new(),
                originate_tls: None,
            };
            record(&state, peer, &host, port, "http", &d);
            return text(StatusCode::FORBIDDEN, &d.reason);
        }
    }
    let d = policies.decide(peer.ip(), &host, port, Protocol::HTTP);
    record(&state, peer, &host, port, "http", &d);
    if !d.allowed {
        return text(StatusCode::FORBIDDEN, &d.reason);
    }
    let upstream = match open(&host, port, &d).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let mut sender = match &d.originate_tls {
        None => match hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await {
            Ok((sender, conn)) => {
                tokio::spawn(conn);
                sender
            }
            Err(e) => return text(StatusCode::BAD_GATEWAY, &format!("upstream: {e}")),
        },
        Some(cfg) => {
            // TLS origination: the requested name is the SNI and what the certificate must show.
            let Ok(name) = rustls_pki_types::ServerName::try_from(host.to_string()) else {
                return text(
                    StatusCode::BAD_GATEWAY,
                    "destination name is not a TLS server name",
                );
            };
            let tls = match tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(name, upstream)
                .await
            {
                Ok(t) => t,
                Err(e) => return text(StatusCode::BAD_GATEWAY, &format!("TLS to {host}: {e}")),
            };
            match hyper::client::conn::http1::handshake(TokioIo::new(tls)).await {
                Ok((sender, conn)) => {
                    tokio::spawn(conn);
                    sender
                }
                Err(e) => return text(StatusCode::BAD_GATEWAY, &format!("upstream: {e}")),
            }
        }
    };
    let (mut parts, body) = req.into_parts();
    // Origin-form towards the destination.
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap_or_default();
    parts.headers.remove("proxy-connection");
    parts.headers.remove("proxy-authorization");
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(resp) => resp.map(|b| b.boxed()),
        Err(e) => text(StatusCode::BAD_GATEWAY, &format!("upstream: {e}")),
    }
}

/// Starts the transparent TLS listener on `addr`: it reads the SNI of each connection's
/// ClientHello without terminating TLS, decides with the destination port being the listener's
/// port, and splices the connection to the allowed destination. Denied connections are closed.
pub async fn serve_sni(
    addr: SocketAddr,
    state: Arc<EngineState>,
    workers: &[Handle],
    drain: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    info!(addr = %local, "egress TLS passthrough listening");
    accept_on_workers(workers, listener, drain, move |tcp, peer| {
        let state = state.clone();
        async move {
            let _guard = ConnectionGuard::new(&state);
            passthrough(tcp, peer, local.port(), state.clone()).await
        }
    })?;
    Ok(local)
}

async fn passthrough(mut client: TcpStream, peer: SocketAddr, port: u16, state: Arc<EngineState>) {
    let _ = client.set_nodelay(true);
    // Read until the first TLS record (the ClientHello) is complete.
    let mut buf = Vec::new();
    let sni = match read_first_bytes(&mut client, &mut buf, Duration::from_secs(10)).await {
        FirstBytes::Sni(name) => name,
        FirstBytes::Nothing => return,
        FirstBytes::NotTls | FirstBytes::NoSni => {
            // Not TLS, or a ClientHello without SNI: nothing to decide on.
            let d = Decision {
                allowed: false,
                audit: false,
                policy: None,
                rule: None,
                reason: "denied: no TLS server name (SNI) to decide on".into(),
                static_endpoints: Vec::new(),
                originate_tls: None,
            };
            record(&state, peer, &Host::Name(String::new()), port, "tls", &d);
            return;
        }
    };
    let host = Host::parse(&sni);
    let policies = state.config.load().egress.clone();
    let d = policies.decide(peer.ip(), &host, port, Protocol::HTTPS);
    record(&state, peer, &host, port, "tls", &d);
    if !d.allowed {
        return;
    }
    let Ok(addrs) = addresses(&host, port, &d).await else {
        return;
    };
    let Ok(mut upstream) = connect(&addrs).await else {
        return;
    };
    if upstream.write_all(&buf).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// What the first bytes of a connection say.
enum FirstBytes {
    /// Nothing arrived in time, or the connection closed.
    Nothing,
    /// Not a TLS handshake.
    NotTls,
    /// A whole ClientHello with this server name.
    Sni(String),
    /// A TLS handshake whose first record holds no server name: none was sent, or the
    /// ClientHello does not fit in its first record, or it did not arrive whole in time.
    NoSni,
}

/// Reads a connection's first bytes into `buf` until they are known not to be TLS, or hold a
/// whole first TLS record (at most 64 KiB, within `wait`). A ClientHello split across TLS
/// records yields `NoSni`: a server name is never taken from a part of it, so splitting cannot
/// hide one.
async fn read_first_bytes<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    wait: Duration,
) -> FirstBytes {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(&first) = buf.first() {
            if first != 22 {
                return FirstBytes::NotTls;
            }
            if let Some(name) = sni::server_name(buf) {
                return FirstBytes::Sni(name);
            }
            let record_len = buf
                .get(3..5)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
            if record_len.is_some_and(|l| buf.len() >= l + 5) || buf.len() > 64 * 1024 {
                return FirstBytes::NoSni;
            }
        }
        buf.reserve(4096);
        match tokio::time::timeout_at(deadline, r.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ if buf.is_empty() => return FirstBytes::Nothing,
            _ => return FirstBytes::NoSni,
        }
    }
}

/// Copies bytes both ways. The first bytes from the client are checked first: a TLS
/// ClientHello must name the CONNECT host in its SNI (a name may be left out only when the
/// CONNECT host is an IP address).
async fn tunnel<C>(
    mut client: C,
    mut upstream: TcpStream,
    state: &EngineState,
    peer: SocketAddr,
    host: Host,
    port: u16,
    mut d: Decision,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut first = Vec::new();
    let refused = match read_first_bytes(&mut client, &mut first, Duration::from_secs(30)).await
    {
        FirstBytes::Nothing => {
            // The client sent nothing: the tunnel was allowed and carried no traffic.
            record(state, peer, &host, port, "connect", &d);
            return;
        }
        FirstBytes::NotTls => None,
        FirstBytes::Sni(sni) if Host::parse(&sni) != host => Some(format!(
            "denied: the TLS server name (SNI) {sni} does not match the CONNECT host {host}"
        )),
        FirstBytes::Sni(_) => None,
        FirstBytes::NoSni if matches!(host, Host::Ip(_)) => None,
        FirstBytes::NoSni => Some(format!(
            "denied: the TLS ClientHello names no server (SNI) in its first record; the CONNECT host is {host}"
        )),
    };
    if let Some(reason) = refused {
        d.allowed = false;
        d.audit = false;
        d.reason = reason;
        record(state, peer, &host, port, "connect", &d);
        warn!(%host, reason = %d.reason, "CONNECT tunnel refused");
        return;
    }
    record(state, peer, &host, port, "connect", &d);
    if upstream.write_all(&first).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
