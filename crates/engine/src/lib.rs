//! Sluice's proxy engine, shared by the gateway and (next) the mesh sidecar: listeners started and stopped as configuration changes, TLS termination,
//! and pingora's HTTP proxy driven by the current configuration snapshot.
//!
//! pingora cannot add services after it starts, so the engine owns its accept loops and hands
//! each accepted connection to the pingora `HttpProxy` of the worker that accepted it (which
//! also owns that worker's upstream connection pool).

pub mod access_log;
pub mod answers;
pub mod backend_tls;
pub mod buffered;
pub mod compile;
pub mod config;
pub mod drain;
pub mod egress;
pub mod l4;
pub mod listeners;
pub mod log_limit;
pub mod metrics;
pub mod mirror;
pub mod proxy;
pub mod request_id;
pub mod tcp;
pub mod tls;
pub mod udp;
pub mod workers;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::metrics::Metrics;

/// What the data path shares: the current snapshot, metrics and logging switches.
pub struct EngineState {
    pub config: ArcSwap<Config>,
    pub metrics: Metrics,
    pub access_log: bool,
    pub mirror: mirror::MirrorClient,
    /// Open downstream connections, for draining at shutdown.
    pub connections: std::sync::atomic::AtomicUsize,
}

/// The engine: state plus the running listeners.
pub struct Engine {
    pub state: Arc<EngineState>,
    listeners: listeners::Listeners,
    udp: udp::UdpListeners,
    /// The egress listeners' drain: they stop with the engine.
    egress: drain::Drain,
}

/// A socket the engine could not listen on.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

impl Engine {
    /// An engine whose connections run on `workers`: every listener accepts on each of them.
    pub fn new(metrics: Metrics, access_log: bool, workers: &workers::Workers) -> Self {
        let state = Arc::new(EngineState {
            config: ArcSwap::from_pointee(Config::default()),
            metrics,
            access_log,
            mirror: mirror::MirrorClient::new(),
            connections: std::sync::atomic::AtomicUsize::new(0),
        });
        // One proxy per worker: each has its own upstream pool, so a pooled connection is
        // only ever used on the thread (and the runtime's reactor) that opened it.
        let handles: Vec<tokio::runtime::Handle> = workers.handles().to_vec();
        let workers = handles
            .iter()
            .map(|h| listeners::Worker {
                handle: h.clone(),
                proxy: proxy::new_http_proxy(state.clone()),
            })
            .collect();
        Engine {
            listeners: listeners::Listeners::new(state.clone(), workers),
            udp: udp::UdpListeners::new(state.clone(), handles),
            state,
            egress: drain::Drain::default(),
        }
    }

    /// Makes `config` current: new requests use it at once, requests in flight finish on the
    /// snapshot they started with. Listeners are then opened and closed to match; closed
    /// listeners drain their connections. Returns the sockets that could not be opened.
    pub async fn apply(&self, config: sluice_config::Config) -> Vec<BindError> {
        let config = compile::compile(config);
        let (udp, tcp): (Vec<_>, Vec<_>) = config
            .binds
            .iter()
            .partition(|(_, b)| b.protocol == crate::config::Protocol::Udp);
        let tcp: Vec<SocketAddr> = tcp.into_iter().map(|(a, _)| *a).collect();
        let udp: Vec<SocketAddr> = udp.into_iter().map(|(a, _)| *a).collect();
        self.state.config.store(Arc::new(config));
        let mut errors = self.listeners.reconcile(&tcp).await;
        errors.extend(self.udp.reconcile(&udp).await);
        errors
    }

    /// Addresses the engine is listening on.
    pub async fn listening(&self) -> Vec<SocketAddr> {
        let mut all = self.listeners.addrs().await;
        all.extend(self.udp.addrs().await);
        all
    }

    /// What egress listeners watch, to stop with the engine.
    pub fn egress_drain(&self) -> tokio::sync::watch::Receiver<bool> {
        self.egress.signal()
    }

    /// Stops every listener, Gateway and egress alike; their connections finish and close.
    pub async fn shutdown(&self) {
        self.egress.start();
        self.listeners.reconcile(&[]).await;
        self.udp.reconcile(&[]).await;
    }
}
