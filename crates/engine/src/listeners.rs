//! Accept loops, one per socket address and worker, started and stopped at runtime.
//!
//! A connection looks up the current snapshot when it is accepted (for its TLS configuration)
//! and each request looks it up again, so configuration changes never restart a socket. A loop
//! that is stopped closes its socket and tells its connections to finish their current
//! request and close (HTTP/1.1 keep-alive ends, HTTP/2 sends GOAWAY).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::listeners::tls::Acceptor;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::socket::SocketAddr as PSocketAddr;
use pingora::protocols::tls::server::handshake_with_callback;
use pingora::protocols::SocketDigest;
use pingora::protocols::Ssl;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Mutex};
use tracing::{debug, info, warn};

use super::buffered::{AwaitData, Buffered};
use super::proxy::SluiceHttpProxy;
use super::tcp::Tcp;
use super::workers::accept_on;
use super::{BindError, EngineState};
use crate::config::Protocol;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

struct Running {
    /// One stop signal per worker: every connection waits on its worker's, so the signal's
    /// lock is never shared between threads.
    stop: Vec<super::drain::Drain>,
}

/// A data-path worker: the runtime its accept loops and connections run on, and its proxy.
pub struct Worker {
    pub handle: tokio::runtime::Handle,
    pub proxy: Arc<SluiceHttpProxy>,
}

pub struct Listeners {
    state: Arc<EngineState>,
    workers: Vec<Worker>,
    running: Mutex<HashMap<SocketAddr, Running>>,
}

impl Listeners {
    pub fn new(state: Arc<EngineState>, workers: Vec<Worker>) -> Self {
        Listeners {
            state,
            workers,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Binds `addr` once and starts an accept loop for it on every worker.
    fn listen(&self, addr: SocketAddr) -> std::io::Result<Vec<super::drain::Drain>> {
        let listener = bind(addr)?.into_std()?;
        let stop: Vec<super::drain::Drain> =
            self.workers.iter().map(|_| Default::default()).collect();
        let stop_rx: Arc<[_]> = stop.iter().map(|d| d.signal()).collect();
        let handles: Vec<_> = self.workers.iter().map(|w| w.handle.clone()).collect();
        let proxies: Arc<[_]> = self.workers.iter().map(|w| w.proxy.clone()).collect();
        let state = self.state.clone();
        accept_on(&handles, listener, move |i, l| {
            let accepted = state
                .metrics
                .worker_connections
                .with_label_values(&[&i.to_string()]);
            accept_loop(
                l,
                addr,
                state.clone(),
                proxies[i].clone(),
                accepted,
                stop_rx[i].clone(),
            )
        })?;
        Ok(stop)
    }

    pub async fn addrs(&self) -> Vec<SocketAddr> {
        let mut v: Vec<_> = self.running.lock().await.keys().copied().collect();
        v.sort();
        v
    }

    /// Listens on exactly `want`: opens what is missing, stops what is no longer wanted.
    pub async fn reconcile(&self, want: &[SocketAddr]) -> Vec<BindError> {
        let mut running = self.running.lock().await;
        let gone: Vec<SocketAddr> = running
            .keys()
            .filter(|a| !want.contains(a))
            .copied()
            .collect();
        for addr in gone {
            if let Some(r) = running.remove(&addr) {
                info!(%addr, "listener removed; draining its connections");
                for stop in &r.stop {
                    stop.start();
                }
            }
        }
        let mut errors = Vec::new();
        for addr in want {
            if running.contains_key(addr) {
                continue;
            }
            match self.listen(*addr) {
                Ok(stop) => {
                    info!(%addr, "listening");
                    running.insert(*addr, Running { stop });
                }
                Err(source) => {
                    warn!(%addr, error = %source, "cannot listen");
                    errors.push(BindError {
                        addr: *addr,
                        source,
                    });
                }
            }
        }
        errors
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // A restarted gateway must be able to take its port back while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    state: Arc<EngineState>,
    proxy: Arc<SluiceHttpProxy>,
    accepted: prometheus::IntCounter,
    stop: watch::Receiver<bool>,
) {
    let shutdown = stop.clone();
    super::drain::accept_until(listener, addr, stop, move |tcp, peer| {
        accepted.inc();
        let state = state.clone();
        let proxy = proxy.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve_connection(tcp, addr, peer, state, proxy, shutdown).await;
        });
    })
    .await;
}

async fn serve_connection(
    tcp: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    state: Arc<EngineState>,
    proxy: Arc<SluiceHttpProxy>,
    shutdown: watch::Receiver<bool>,
) {
    let _guard = super::drain::ConnectionGuard::new(&state);
    let _ = tcp.set_nodelay(true);
    let tls = {
        let snapshot = state.config.load();
        let Some(bind) = snapshot.bind_for(local) else {
            return;
        };
        match bind.protocol {
            Protocol::Https => bind.tls.clone(),
            Protocol::Http => None,
            Protocol::Udp => return,
            // Layer 4: the route is chosen once, for the whole connection.
            Protocol::Tls | Protocol::Tcp => {
                let bind = bind.clone();
                drop(snapshot);
                serve_l4(tcp, peer, bind, state.clone(), shutdown).await;
                return;
            }
        }
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    // The addresses are known from accept(): record them so no request pays a syscall for them.
    let digest = SocketDigest::from_raw_fd(fd);
    let _ = digest.peer_addr.set(Some(PSocketAddr::Inet(peer)));
    let _ = digest.local_addr.set(Some(PSocketAddr::Inet(local)));
    let tcp = Tcp::new(tcp, digest);

    let Some(cfg) = tls else {
        let mut plain = Box::new(Buffered::new(tcp));
        match tokio::time::timeout(KEEPALIVE_IDLE, plain.starts_with_h2_preface()).await {
            Ok(Ok(false)) => serve_http1(&proxy, plain, &shutdown).await,
            Ok(Ok(true)) => {
                let _ = proxy.process_new(plain, &shutdown).await;
            }
            // Nothing arrived in time, or the connection failed before its first request.
            _ => {}
        }
        return;
    };
    let acceptor = Acceptor::from_server_config(cfg);
    // Boxed: the handshake's state is large and must not stay in the connection's task for as
    // long as the connection lives.
    // The SNI is kept on every TLS connection, even on a port with one listener: a reload may
    // add another listener to the port while the connection stays open.
    let handshake =
        Box::pin(
            async move { handshake_with_callback(&acceptor, tcp, &super::tls::KeepSni).await },
        );
    // Boxed at once, too: the TLS connection is large, and this task's state must not reserve
    // room for it while an idle plain connection waits.
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(s)) => Box::new(Buffered::new(s)),
        Ok(Err(e)) => {
            debug!(%peer, %local, error = %e, "TLS handshake failed");
            state.metrics.tls_handshake_errors.inc();
            return;
        }
        Err(_) => {
            debug!(%peer, %local, "TLS handshake timed out");
            state.metrics.tls_handshake_errors.inc();
            return;
        }
    };
    if tls.selected_alpn_proto() != Some(pingora::protocols::ALPN::H2) {
        serve_http1(&proxy, tls, &shutdown).await;
        return;
    }
    let _ = proxy.process_new(tls, &shutdown).await;
}

/// A connection of a TLS or TCP listener (`l4`).
async fn serve_l4(
    tcp: TcpStream,
    peer: SocketAddr,
    bind: Arc<crate::config::Bind>,
    state: Arc<EngineState>,
    shutdown: watch::Receiver<bool>,
) {
    use super::l4;
    match bind.protocol {
        Protocol::Tls => l4::serve_tls(tcp, peer, bind, state, shutdown).await,
        _ => l4::serve_tcp(tcp, peer, bind, state, shutdown).await,
    }
}

/// How long a keep-alive connection may wait for its next request (pingora's default).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// HTTP/1.1 on one connection, a pingora session per request. Between requests the connection
/// waits here, holding only its stream: pingora's own loop would keep the whole proxy session
/// state allocated for every idle keep-alive connection. pingora's pipelining is off, so a
/// finished session never holds bytes of the next request.
async fn serve_http1<S: pingora::protocols::IO + AwaitData + 'static>(
    proxy: &Arc<SluiceHttpProxy>,
    mut stream: Box<Buffered<S>>,
    shutdown: &watch::Receiver<bool>,
) {
    // What the previous request leaves for the next one on this connection.
    let mut settings: Option<HttpPersistentSettings> = None;
    for request in 0u64.. {
        if request > 0 && !next_request(&mut stream, shutdown).await {
            break;
        }
        let mut session = ServerSession::new_http1(stream);
        match settings.take() {
            Some(s) => s.apply_to_session(&mut session),
            None => session.set_keepalive(Some(KEEPALIVE_IDLE.as_secs())),
        }
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        let Some(reused) = proxy.process_new_http(session, shutdown).await else {
            break;
        };
        let (s, next_settings) = reused.consume();
        // The stream pingora hands back is the one it was given.
        let Ok(s) = s.into_any().downcast::<Buffered<S>>() else {
            break;
        };
        stream = s;
        settings = next_settings;
    }
}

/// Waits for a keep-alive connection's next request: false when it idled too long, failed, or
/// its listener is draining (idle connections then close at once).
async fn next_request<S: pingora::protocols::IO + AwaitData + 'static>(
    stream: &mut Buffered<S>,
    shutdown: &watch::Receiver<bool>,
) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    let mut stop = shutdown.clone();
    tokio::select! {
        r = tokio::time::timeout(KEEPALIVE_IDLE, stream.next_request()) => matches!(r, Ok(Ok(()))),
        _ = stop.changed() => false,
    }
}
