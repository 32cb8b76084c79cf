//! Drain: the one way a listener stops. A listener removed by a reload, SIGTERM, and the egress
//! listeners all stop the same way: the accept loops of the listener end and its socket
//! closes, its connections are told to finish what they are doing and close, and the engine
//! counts open connections so shutdown can wait for them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::EngineState;

/// Tells a listener's accept loops and connections to stop.
pub struct Drain(watch::Sender<bool>);

impl Default for Drain {
    fn default() -> Self {
        Drain(watch::channel(false).0)
    }
}

impl Drain {
    /// What the accept loops and connections of this listener watch.
    pub fn signal(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }

    /// Starts draining: accept loops stop, connections finish their current work and close.
    pub fn start(&self) {
        let _ = self.0.send(true);
    }
}

/// Accepts on `listener` until `stop` is set, handing each connection to `serve` (which
/// spawns it). Accept errors (out of file descriptors and the like) back off instead of
/// spinning.
pub async fn accept_until<F>(
    listener: TcpListener,
    addr: SocketAddr,
    mut stop: watch::Receiver<bool>,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr),
{
    if *stop.borrow() {
        return;
    }
    loop {
        tokio::select! {
            res = listener.accept() => match res {
                Ok((tcp, peer)) => serve(tcp, peer),
                Err(e) => {
                    warn!(%addr, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    debug!(%addr, "accept loop stopped");
}

/// Counts a connection as open for as long as it lives.
pub struct ConnectionGuard(Arc<EngineState>);

impl ConnectionGuard {
    pub fn new(state: &Arc<EngineState>) -> Self {
        state
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        ConnectionGuard(state.clone())
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}
