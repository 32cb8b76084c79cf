//! The admin listener: readiness, status of every object, the effective configuration, the
//! resources that would run each Gateway in a cluster, and Prometheus metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::engine::EngineState;
use crate::infra::GatewayInfra;
use crate::translate::{ObjectStatus, Warning};

/// What the admin endpoints show, updated by the provider on every reload.
pub struct AdminState {
    pub engine: Arc<EngineState>,
    pub ready: AtomicBool,
    pub statuses: ArcSwap<Vec<ObjectStatus>>,
    pub warnings: ArcSwap<Vec<Warning>>,
    /// What would run each Gateway in a cluster (`gateway render`).
    pub infrastructure: ArcSwap<Vec<GatewayInfra>>,
    /// The last rejected reload, if the newest files could not be applied.
    pub last_error: ArcSwap<Option<String>>,
}

impl AdminState {
    pub fn new(engine: Arc<EngineState>) -> Self {
        AdminState {
            engine,
            ready: AtomicBool::new(false),
            statuses: ArcSwap::from_pointee(Vec::new()),
            warnings: ArcSwap::from_pointee(Vec::new()),
            infrastructure: ArcSwap::from_pointee(Vec::new()),
            last_error: ArcSwap::from_pointee(None),
        }
    }
}

/// Binds the admin listener and serves it in the background.
pub async fn serve(addr: SocketAddr, state: Arc<AdminState>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    info!(addr = %local, "admin listening");
    tokio::spawn(async move {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    continue;
                }
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state, req)) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(local)
}

fn reply(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .unwrap_or_default()
}

fn json(v: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    reply(StatusCode::OK, "application/json", body)
}

fn handle(state: &AdminState, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/ready" => {
            if state.ready.load(Ordering::Acquire) {
                reply(StatusCode::OK, "text/plain", "ready\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
            }
        }
        "/status" => json(&**state.statuses.load()),
        "/warnings" => json(&serde_json::json!({
            "warnings": &**state.warnings.load(),
            "lastRejectedReload": &**state.last_error.load(),
        })),
        "/config" => json(&state.engine.config.load().dump()),
        "/infrastructure" => json(&crate::infra::list(&state.infrastructure.load())),
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            state.engine.metrics.render(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "endpoints: /ready /status /warnings /config /infrastructure /metrics\n",
        ),
    }
}
