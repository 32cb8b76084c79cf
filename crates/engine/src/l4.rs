//! Layer-4 forwarding for TLS and TCP listeners: a connection gets its route once, when it is
//! accepted, and then its bytes are copied to one backend endpoint and back.
//!
//! - TLS: the listener and route are chosen by the SNI of the ClientHello, read from the first
//!   bytes without terminating TLS (`sluice_tls_peek`). Passthrough: those bytes are sent on to
//!   the backend, so the TLS session is the client's and the backend's. Terminate: the gateway
//!   completes the handshake (replaying the bytes it read) and forwards the plaintext.
//! - TCP: the listener's route, with no name to choose by.
//!
//! A backend is picked by weight and an endpoint round-robin, as for HTTP. Half-close is kept
//! (a side that finishes sending shuts down the other side's write and the other direction goes
//! on), a connection with no traffic either way for `IDLE_TIMEOUT` is closed, and a draining
//! listener's connections get `DRAIN_GRACE` to finish. Every connection is one access log line
//! and counts in `sluice_l4_connections_total` (by decision) and `sluice_l4_bytes_total`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::EngineState;
use crate::config::{BackendTarget, Bind, Listener, RequestParts, Route};

/// How long a client may take to send its ClientHello, and a handshake to complete.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes read before the ClientHello is whole: real ones are a few KiB (about 2 with
/// a post-quantum key share); a client that needs more is refused.
const MAX_HELLO_BYTES: usize = 16 * 1024;
/// How long connecting to a backend endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no bytes either way for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a draining listener's connections may go on before they are closed.
pub const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// What became of a connection, as the access log and the metrics say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Bytes were copied to a backend until one side closed.
    Forwarded,
    /// The connection was closed for having no traffic for `IDLE_TIMEOUT`.
    Idle,
    /// The listener was removed and the grace period ended.
    Drained,
    /// No ClientHello could be read (not TLS, malformed, too slow).
    BadClientHello,
    /// The TLS handshake (terminate mode) failed.
    HandshakeFailed,
    /// No listener of the port for the SNI.
    NoListener,
    /// The listener has no route for the SNI.
    NoRoute,
    /// The route has no usable backend (none, weight 0 only, unresolved, no ready endpoint).
    NoBackend,
    /// The backend endpoint did not accept the connection.
    ConnectFailed,
    /// The TLS connection to the backend (a BackendTLSPolicy on a Terminate listener's route)
    /// failed: handshake, certificate, or no usable CA.
    BackendTlsFailed,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Forwarded => "forwarded",
            Decision::Idle => "idle_timeout",
            Decision::Drained => "drained",
            Decision::BadClientHello => "bad_client_hello",
            Decision::HandshakeFailed => "handshake_failed",
            Decision::NoListener => "no_listener",
            Decision::NoRoute => "no_route",
            Decision::NoBackend => "no_backend",
            Decision::ConnectFailed => "connect_failed",
            Decision::BackendTlsFailed => "backend_tls_failed",
        }
    }
}

/// One connection's record, for its log line and metrics.
struct Record<'a> {
    bind: &'a Bind,
    peer: SocketAddr,
    mode: &'static str,
    start: Instant,
    sni: Option<String>,
    listener: Option<Arc<Listener>>,
    route: Option<Arc<Route>>,
    backend: String,
    upstream: Option<SocketAddr>,
    /// Bytes from the client to the backend, and back.
    received: u64,
    sent: u64,
}

impl Record<'_> {
    fn finish(self, state: &EngineState, decision: Decision) {
        let listener = self.listener.as_ref().map_or("", |l| l.name.as_str());
        let route = self
            .route
            .as_ref()
            .map_or("", |r| r.action.route_label.as_str());
        let gateway = self.bind.gateway_label.as_str();
        state
            .metrics
            .l4_connections
            .with_label_values(&[gateway, listener, route, &self.backend, decision.as_str()])
            .inc();
        if self.received > 0 || self.sent > 0 {
            let bytes = &state.metrics.l4_bytes;
            bytes
                .with_label_values(&[gateway, route, "received"])
                .inc_by(self.received);
            bytes
                .with_label_values(&[gateway, route, "sent"])
                .inc_by(self.sent);
        }
        if state.access_log {
            let line = serde_json::json!({
                "time": k8s_openapi::jiff::Timestamp::now().to_string(),
                "client": self.peer.to_string(),
                "protocol": self.mode,
                "sni": self.sni,
                "gateway": gateway,
                "listener": listener,
                "route": route,
                "rule": self.route.as_ref().map(|r| r.rule),
                "backend": self.backend,
                "upstream": self.upstream.map(|a| a.to_string()),
                "decision": decision.as_str(),
                "bytes_received": self.received,
                "bytes_sent": self.sent,
                "duration_ms": self.start.elapsed().as_micros() as f64 / 1000.0,
            });
            crate::access_log::write_line(&line);
        }
    }
}

/// A TLS port: the ClientHello's SNI selects the listener. A Passthrough listener forwards the
/// connection as it is, starting with the ClientHello's bytes; a Terminate listener (one with a
/// certificate) completes the handshake with the port's certificates (`tls`, chosen by SNI)
/// and forwards the plaintext. One port may have both (mixed mode).
pub async fn serve_tls(
    mut client: TcpStream,
    peer: SocketAddr,
    bind: Arc<Bind>,
    state: Arc<EngineState>,
    shutdown: watch::Receiver<bool>,
) {
    let mut rec = Record::new(&bind, peer, "tls-passthrough");
    let mut hello = Vec::with_capacity(1024);
    let sni = match tokio::time::timeout(HELLO_TIMEOUT, read_client_hello(&mut client, &mut hello))
        .await
    {
        Ok(Ok(sni)) => sni,
        _ => return rec.finish(&state, Decision::BadClientHello),
    };
    rec.sni = sni.clone();
    let Some(listener) = bind.listeners.select(sni.as_deref()).cloned() else {
        return rec.finish(&state, Decision::NoListener);
    };
    let terminate = match (&bind.tls, listener.tls) {
        (Some(cfg), true) => cfg.clone(),
        // A Terminate listener without the port's certificates: fail closed.
        (None, true) => return rec.finish(&state, Decision::HandshakeFailed),
        (_, false) => {
            let to = Upstream {
                first: &hello,
                reencrypt: false,
            };
            return forward(client, to, listener, sni.as_deref(), rec, &state, shutdown).await;
        }
    };
    rec.mode = "tls-terminate";
    let acceptor = tokio_rustls::TlsAcceptor::from(terminate);
    let replayed = Rewind::new(hello, client);
    let tls = match tokio::time::timeout(HELLO_TIMEOUT, acceptor.accept(replayed)).await {
        Ok(Ok(tls)) => tls,
        _ => {
            state.metrics.tls_handshake_errors.inc();
            return rec.finish(&state, Decision::HandshakeFailed);
        }
    };
    let to = Upstream {
        first: &[],
        reencrypt: true,
    };
    forward(tls, to, listener, sni.as_deref(), rec, &state, shutdown).await;
}

/// A TCP listener: its one route.
pub async fn serve_tcp(
    client: TcpStream,
    peer: SocketAddr,
    bind: Arc<Bind>,
    state: Arc<EngineState>,
    shutdown: watch::Receiver<bool>,
) {
    let rec = Record::new(&bind, peer, "tcp");
    let Some(listener) = bind.listeners.select(None).cloned() else {
        return rec.finish(&state, Decision::NoListener);
    };
    let to = Upstream {
        first: &[],
        reencrypt: false,
    };
    forward(client, to, listener, None, rec, &state, shutdown).await;
}

static BACKEND_TLS_LOG: super::log_limit::LogLimit = super::log_limit::LogLimit::new(10);

/// A failed TLS connection to a backend, logged at most 10 times a second (each connection's
/// access-log line says `backend_tls_failed` as well).
fn backend_tls_failed(policy: &str, addr: SocketAddr, why: &str) {
    if let Some(suppressed) = BACKEND_TLS_LOG.allow() {
        tracing::warn!(%policy, %addr, error = %why, suppressed, "TLS to the backend failed");
    }
}

/// What a forwarded connection sends its backend besides the client's bytes.
struct Upstream<'a> {
    /// Bytes already read from the client (a passthrough ClientHello), sent first.
    first: &'a [u8],
    /// The client's TLS was terminated here: the backend's cluster's BackendTLSPolicy, if it
    /// has one, makes the backend connection TLS too.
    reencrypt: bool,
}

/// A backend connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl<'a> Record<'a> {
    fn new(bind: &'a Bind, peer: SocketAddr, mode: &'static str) -> Self {
        Record {
            bind,
            peer,
            mode,
            start: Instant::now(),
            sni: None,
            listener: None,
            route: None,
            backend: String::new(),
            upstream: None,
            received: 0,
            sent: 0,
        }
    }
}

/// Reads until `buf` holds a whole ClientHello; returns its server name (lowercased). The
/// parse runs again only once the bytes it asked for (`NeedMore`: the total it needs) have
/// arrived, and nothing past `MAX_HELLO_BYTES` is read.
async fn read_client_hello(
    client: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> io::Result<Option<String>> {
    use sluice_tls_peek::Peek;
    loop {
        let need = match sluice_tls_peek::peek(buf) {
            Ok(Peek::Hello(h)) => return Ok(h.server_name.map(|s| s.to_ascii_lowercase())),
            Ok(Peek::NeedMore(n)) => n,
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        };
        if need > MAX_HELLO_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "ClientHello larger than the gateway reads",
            ));
        }
        buf.reserve(need.saturating_sub(buf.len()));
        while buf.len() < need {
            if client.read_buf(buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// Picks the route and a backend endpoint, connects (with TLS when `to` says so), sends
/// `to.first`, and copies both ways until the connection ends.
async fn forward<S: AsyncRead + AsyncWrite + Unpin>(
    client: S,
    to: Upstream<'_>,
    listener: Arc<Listener>,
    host: Option<&str>,
    mut rec: Record<'_>,
    state: &EngineState,
    mut shutdown: watch::Receiver<bool>,
) {
    let parts = RequestParts::layer4();
    let route = listener.routes.find(host, &parts).cloned();
    rec.listener = Some(listener);
    let Some(route) = route else {
        return rec.finish(state, Decision::NoRoute);
    };
    rec.route = Some(route.clone());
    let Some(backend) = route.action.pick_backend() else {
        return rec.finish(state, Decision::NoBackend);
    };
    rec.backend = backend.target.label().to_string();
    let BackendTarget::Cluster(cluster) = &backend.target else {
        return rec.finish(state, Decision::NoBackend);
    };
    let Some(addr) = cluster.pick() else {
        return rec.finish(state, Decision::NoBackend);
    };
    rec.upstream = Some(addr);
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        _ => {
            state
                .metrics
                .upstream_connect_errors
                .with_label_values(&[&rec.backend])
                .inc();
            return rec.finish(state, Decision::ConnectFailed);
        }
    };
    let _ = upstream.set_nodelay(true);
    let upstream: Box<dyn Io> = match (&cluster.tls, to.reencrypt) {
        (Some(tls), true) => {
            let gateway = rec.listener.as_ref().map(|l| &l.gateway);
            let Some(origin) = &tls.origins(gateway).layer4 else {
                backend_tls_failed(&tls.policy, addr, "the policy has no usable CA certificate");
                return rec.finish(state, Decision::BackendTlsFailed);
            };
            match tokio::time::timeout(CONNECT_TIMEOUT, origin.handshake(upstream)).await {
                Ok(Ok(tls)) => Box::new(tls),
                Ok(Err(e)) => {
                    backend_tls_failed(&tls.policy, addr, &e.to_string());
                    return rec.finish(state, Decision::BackendTlsFailed);
                }
                Err(_) => {
                    backend_tls_failed(&tls.policy, addr, "handshake timed out");
                    return rec.finish(state, Decision::BackendTlsFailed);
                }
            }
        }
        _ => Box::new(upstream),
    };
    let first = to.first;
    let activity = Arc::new(Activity::new());
    let mut client = Counted::new(client, activity.clone());
    let mut upstream = Counted::new(upstream, activity.clone());
    if !first.is_empty() && upstream.write_all(first).await.is_err() {
        return rec.finish(state, Decision::ConnectFailed);
    }
    let decision = {
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::pin!(copy);
        let drained = async {
            if !*shutdown.borrow() && shutdown.changed().await.is_err() {
                // The engine went away without draining: never fires.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(DRAIN_GRACE).await;
        };
        tokio::select! {
            _ = &mut copy => Decision::Forwarded,
            _ = activity.idle(IDLE_TIMEOUT) => Decision::Idle,
            _ = drained => Decision::Drained,
        }
    };
    rec.received = client.read_bytes + first.len() as u64;
    rec.sent = client.written_bytes;
    rec.finish(state, decision);
}

/// The last time bytes moved on a connection, in milliseconds from its start.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `limit`.
    async fn idle(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// A stream that counts its bytes and marks activity.
struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
    read_bytes: u64,
    written_bytes: u64,
}

impl<S> Counted<S> {
    fn new(inner: S, activity: Arc<Activity>) -> Self {
        Counted {
            inner,
            activity,
            read_bytes: 0,
            written_bytes: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.read_bytes += n;
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.written_bytes += *n as u64;
            self.activity.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A stream that first yields bytes already read from it.
struct Rewind<S> {
    head: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    fn new(head: Vec<u8>, inner: S) -> Self {
        Rewind {
            head,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.head.len() {
            let n = buf.remaining().min(self.head.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.head[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
