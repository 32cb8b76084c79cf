//! UDP listeners of UDPRoutes: one socket per address, sessions keyed by the client's address.
//!
//! The first datagram from a client address opens a session: the listener's route (the oldest
//! UDPRoute attached), one backend by weight, one endpoint round-robin, and a socket of its own
//! connected to that endpoint. Later datagrams of the client go to the same endpoint; the
//! endpoint's replies are sent to the client from the listener's socket, so they come from the
//! address and port the client sent to. A session with no datagram either way for
//! `SESSION_IDLE` ends; at most `MAX_SESSIONS` are open per listener (datagrams that would
//! open another are dropped and counted). Sessions keep their endpoint across reloads, as TCP
//! connections do; a removed listener closes its socket and ends its sessions.
//! Each session is one access-log line and counts in `sluice_l4_connections_total` and
//! `sluice_l4_bytes_total`, like a TCP connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{BindError, EngineState};
use crate::config::{BackendTarget, RequestParts};

/// A session with no datagram either way for this long ends.
pub const SESSION_IDLE: Duration = Duration::from_secs(60);
/// Open sessions per listener at most.
pub const MAX_SESSIONS: usize = 16_384;
/// The largest datagram relayed.
const MAX_DATAGRAM: usize = 65_535;

/// The running UDP listeners, by address. Each runs, with its sessions, on one of the data-path
/// workers (in turn), never on the thread that reloads configuration.
pub struct UdpListeners {
    state: Arc<EngineState>,
    workers: Vec<tokio::runtime::Handle>,
    next: std::sync::atomic::AtomicUsize,
    running: tokio::sync::Mutex<HashMap<SocketAddr, super::drain::Drain>>,
}

impl UdpListeners {
    pub fn new(state: Arc<EngineState>, workers: Vec<tokio::runtime::Handle>) -> Self {
        UdpListeners {
            state,
            workers,
            next: std::sync::atomic::AtomicUsize::new(0),
            running: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    pub async fn addrs(&self) -> Vec<SocketAddr> {
        let mut v: Vec<_> = self.running.lock().await.keys().copied().collect();
        v.sort();
        v
    }

    /// Listens on exactly `want`: binds what is missing, stops what is no longer wanted.
    pub async fn reconcile(&self, want: &[SocketAddr]) -> Vec<BindError> {
        let mut running = self.running.lock().await;
        running.retain(|addr, drain| {
            let keep = want.contains(addr);
            if !keep {
                info!(%addr, "UDP listener removed; its sessions end");
                drain.start();
            }
            keep
        });
        let mut errors = Vec::new();
        for addr in want {
            if running.contains_key(addr) {
                continue;
            }
            let worker = match self.workers.len() {
                0 => tokio::runtime::Handle::current(),
                n => self.workers[self.next.fetch_add(1, Ordering::Relaxed) % n].clone(),
            };
            // The socket is registered with the worker's reactor, so it is made there.
            let bound = {
                let _in_worker = worker.enter();
                bind(*addr)
            };
            match bound {
                Ok(socket) => {
                    info!(%addr, "listening (UDP)");
                    let drain = super::drain::Drain::default();
                    worker.spawn(serve(
                        Arc::new(socket),
                        *addr,
                        self.state.clone(),
                        drain.signal(),
                    ));
                    running.insert(*addr, drain);
                }
                Err(source) => {
                    warn!(%addr, error = %source, "cannot listen (UDP)");
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

fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let std = std::net::UdpSocket::bind(addr)?;
    std.set_nonblocking(true)?;
    UdpSocket::from_std(std)
}

/// A session: the socket connected to its endpoint, and when it last moved a datagram.
struct Session {
    /// Tells this session from a later one of the same client.
    id: u64,
    upstream: Arc<UdpSocket>,
    start: Instant,
    last_ms: Arc<AtomicU64>,
    /// Bytes from the client.
    received: Arc<AtomicU64>,
    /// The configuration version the session was last checked against, its route and its
    /// endpoint: after a reload, a session whose route no longer sends to its endpoint ends.
    version: u64,
    route: String,
    endpoint: SocketAddr,
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Session>>>;

async fn serve(
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    state: Arc<EngineState>,
    mut stop: watch::Receiver<bool>,
) {
    let sessions: Sessions = Arc::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // An ICMP error for an earlier send, and the like: not this socket's end.
                    debug!(%local, error = %e, "UDP receive failed");
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let version = state.config.load().version;
        let existing = sessions.lock().ok().and_then(|mut s| {
            let sess = s.get_mut(&client)?;
            if sess.version != version {
                if !still_routed(&state, local, &sess.route, sess.endpoint) {
                    // Its relay sees the entry gone and ends; this datagram opens a new one.
                    s.remove(&client);
                    return None;
                }
                sess.version = version;
            }
            touch(sess.start, &sess.last_ms);
            Some((sess.upstream.clone(), sess.received.clone()))
        });
        let (upstream, received) = match existing {
            Some(u) => u,
            None => match open(&socket, local, client, &state, &sessions, stop.clone()).await {
                Some(u) => u,
                None => continue,
            },
        };
        received.fetch_add(n as u64, Ordering::Relaxed);
        if let Err(e) = upstream.send(&buf[..n]).await {
            debug!(%client, error = %e, "UDP send to the backend failed");
        }
    }
    debug!(%local, "UDP listener stopped");
}

/// Whether the current configuration still sends this listener's new sessions to `route`, and
/// that route can still pick `endpoint`.
fn still_routed(state: &EngineState, local: SocketAddr, route: &str, endpoint: SocketAddr) -> bool {
    let parts = RequestParts::layer4();
    let snapshot = state.config.load();
    let Some(found) = snapshot
        .bind_for(local)
        .and_then(|b| b.listeners.select(None))
        .and_then(|l| l.routes.find(None, &parts))
    else {
        return false;
    };
    found.action.route_label == route
        && found.action.backends.iter().any(|b| {
            b.weight > 0
                && matches!(&b.target, BackendTarget::Cluster(c) if c.endpoints.contains(&endpoint))
        })
}

static SESSION_IDS: AtomicU64 = AtomicU64::new(0);

fn touch(start: Instant, last_ms: &AtomicU64) {
    let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    last_ms.store(ms, Ordering::Relaxed);
}

/// Opens `client`'s session: its route, backend and endpoint, a socket connected to it, and
/// the task relaying its replies. `None`: the datagram is dropped (counted with its reason).
async fn open(
    socket: &Arc<UdpSocket>,
    local: SocketAddr,
    client: SocketAddr,
    state: &Arc<EngineState>,
    sessions: &Sessions,
    stop: watch::Receiver<bool>,
) -> Option<(Arc<UdpSocket>, Arc<AtomicU64>)> {
    let snapshot = state.config.load_full();
    let bind = snapshot.bind_for(local)?.clone();
    let gateway = bind.gateway_label.clone();
    let count = |listener: &str, route: &str, backend: &str, decision: &str| {
        state
            .metrics
            .l4_connections
            .with_label_values(&[&gateway, listener, route, backend, decision])
            .inc();
    };
    let Some(listener) = bind.listeners.select(None).cloned() else {
        count("", "", "", "no_listener");
        return None;
    };
    let parts = RequestParts::layer4();
    let Some(route) = listener.routes.find(None, &parts).cloned() else {
        count(&listener.name, "", "", "no_route");
        return None;
    };
    let route_label = route.action.route_label.clone();
    let Some(backend) = route.action.pick_backend() else {
        count(&listener.name, &route_label, "", "no_backend");
        return None;
    };
    let backend_label = backend.target.label().to_string();
    let endpoint = match &backend.target {
        BackendTarget::Cluster(c) => c.pick(),
        BackendTarget::Invalid { .. } => None,
    };
    let Some(endpoint) = endpoint else {
        count(&listener.name, &route_label, &backend_label, "no_backend");
        return None;
    };
    if sessions.lock().map(|s| s.len()).unwrap_or(0) >= MAX_SESSIONS {
        count(
            &listener.name,
            &route_label,
            &backend_label,
            "too_many_sessions",
        );
        return None;
    }
    let unspecified: SocketAddr = if endpoint.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let upstream = match UdpSocket::bind(unspecified).await {
        Ok(u) if u.connect(endpoint).await.is_ok() => Arc::new(u),
        _ => {
            count(
                &listener.name,
                &route_label,
                &backend_label,
                "connect_failed",
            );
            return None;
        }
    };
    let start = Instant::now();
    let last_ms = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let id = SESSION_IDS.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut s) = sessions.lock() {
        s.insert(
            client,
            Session {
                id,
                upstream: upstream.clone(),
                start,
                last_ms: last_ms.clone(),
                received: received.clone(),
                version: snapshot.version,
                route: route_label.clone(),
                endpoint,
            },
        );
    }
    let relay = Relay {
        id,
        socket: socket.clone(),
        upstream: upstream.clone(),
        client,
        endpoint,
        state: state.clone(),
        sessions: sessions.clone(),
        gateway,
        listener: listener.name.clone(),
        route: route_label,
        rule: route.rule,
        backend: backend_label,
        start,
        last_ms,
        received: received.clone(),
    };
    tokio::spawn(relay.run(stop));
    Some((upstream, received))
}

/// One session's replies, relayed until it idles out, its listener stops, or a reload takes its
/// route or endpoint away.
struct Relay {
    id: u64,
    socket: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    endpoint: SocketAddr,
    state: Arc<EngineState>,
    sessions: Sessions,
    gateway: String,
    listener: String,
    route: String,
    rule: usize,
    backend: String,
    start: Instant,
    last_ms: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
}

impl Relay {
    /// The session is still the client's (a reload did not end it).
    fn current(&self) -> bool {
        self.sessions
            .lock()
            .map(|s| s.get(&self.client).is_some_and(|e| e.id == self.id))
            .unwrap_or(false)
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut sent = 0u64;
        let decision = loop {
            let idle_at = self.start
                + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
                + SESSION_IDLE;
            tokio::select! {
                r = self.upstream.recv(&mut buf) => match r {
                    Ok(n) => {
                        touch(self.start, &self.last_ms);
                        if self.socket.send_to(&buf[..n], self.client).await.is_ok() {
                            sent += n as u64;
                        }
                    }
                    // The endpoint refused (ICMP port unreachable): the session goes on, as
                    // the client may retry.
                    Err(e) => debug!(endpoint = %self.endpoint, error = %e, "UDP receive from the backend failed"),
                },
                _ = tokio::time::sleep_until(idle_at.into()) => {
                    let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
                    if last.elapsed() >= SESSION_IDLE {
                        break "idle_timeout";
                    }
                }
                _ = tokio::time::sleep(Duration::from_secs(1)), if !self.current() => break "rerouted",
                _ = stop.changed() => break "drained",
            }
        };
        if let Ok(mut s) = self.sessions.lock() {
            if s.get(&self.client).is_some_and(|e| e.id == self.id) {
                s.remove(&self.client);
            }
        }
        let state = &self.state;
        state
            .metrics
            .l4_connections
            .with_label_values(&[
                &self.gateway,
                &self.listener,
                &self.route,
                &self.backend,
                decision,
            ])
            .inc();
        let received = self.received.load(Ordering::Relaxed);
        let bytes = &state.metrics.l4_bytes;
        bytes
            .with_label_values(&[&self.gateway, &self.route, "received"])
            .inc_by(received);
        bytes
            .with_label_values(&[&self.gateway, &self.route, "sent"])
            .inc_by(sent);
        if state.access_log {
            let line = serde_json::json!({
                "time": k8s_openapi::jiff::Timestamp::now().to_string(),
                "client": self.client.to_string(),
                "protocol": "udp",
                "gateway": self.gateway,
                "listener": self.listener,
                "route": self.route,
                "rule": self.rule,
                "backend": self.backend,
                "upstream": self.endpoint.to_string(),
                "decision": decision,
                "bytes_received": received,
                "bytes_sent": sent,
                "duration_ms": self.start.elapsed().as_micros() as f64 / 1000.0,
            });
            crate::access_log::write_line(&line);
        }
    }
}
