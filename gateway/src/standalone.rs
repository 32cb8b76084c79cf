//! The file provider: reads a folder of manifests, serves it, and applies every change to the
//! files within a second. A change that does not load is reported and the last good
//! configuration stays in force.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::admin::{self, AdminState};
use crate::engine::workers::Workers;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::resources::{self, LoadErrors};
use crate::status::carry_transition_times;
use crate::translate::{self, Options, Translation};

/// How long the folder must be quiet before a reload: editors and tools write a file in several
/// steps (write, rename) within microseconds, so a short quiet time coalesces them.
const DEBOUNCE: Duration = Duration::from_millis(50);

pub struct RunOptions {
    pub manifests: PathBuf,
    pub translate: Options,
    pub admin_addr: SocketAddr,
    pub access_log: bool,
    /// Data-path worker threads; with 1, the caller's runtime serves connections itself.
    pub threads: usize,
    /// How long shutdown waits for open connections.
    pub drain_timeout: Duration,
    /// Where the egress forward proxy listens, if anywhere.
    pub egress_addr: Option<SocketAddr>,
    /// Where the egress TLS passthrough (SNI) listener listens, if anywhere.
    pub egress_sni_addr: Option<SocketAddr>,
}

/// Loads and translates the manifests under `path`. Objects without `metadata.generation`
/// get one from `generations`, as the API server would give it.
pub fn load_and_translate(
    path: &Path,
    opts: &Options,
    generations: &mut resources::Generations,
) -> Result<Translation, LoadErrors> {
    load_and_translate_cached(
        path,
        opts,
        generations,
        &mut resources::ParseCache::default(),
    )
}

/// `load_and_translate`, parsing again only the files that changed since the last call.
pub fn load_and_translate_cached(
    path: &Path,
    opts: &Options,
    generations: &mut resources::Generations,
    cache: &mut resources::ParseCache,
) -> Result<Translation, LoadErrors> {
    let mut store = resources::load_path_cached(path, cache)?;
    generations.assign(&mut store);
    Ok(translate::translate(&store, opts))
}

fn now() -> k8s_openapi::jiff::Timestamp {
    // Whole seconds, as the API server stores condition times.
    let t = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// Runs the gateway until SIGINT or SIGTERM. Fails if the manifests do not load at start.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let mut topts = opts.translate.clone();
    topts.now = now();
    topts.version = 1;
    let mut generations = resources::Generations::default();
    let mut cache = resources::ParseCache::default();
    let first = load_and_translate_cached(&opts.manifests, &topts, &mut generations, &mut cache)
        .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;

    let metrics = Metrics::new();
    let workers = Workers::start(opts.threads)
        .map_err(|e| anyhow::anyhow!("cannot start {} worker threads: {e}", opts.threads))?;
    let engine = Engine::new(metrics.clone(), opts.access_log, &workers);
    let admin_state = Arc::new(AdminState::new(engine.state.clone()));
    admin::serve(opts.admin_addr, admin_state.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on admin address {}: {e}", opts.admin_addr))?;

    // The last valid content of each TLS Secret, carried from one translation to the next.
    let mut tls_last_good = first.tls_last_good.clone();
    let mut egress_last_good = first.egress_last_good.clone();
    apply(&engine, &admin_state, first, &metrics).await;
    if let Some(addr) = opts.egress_addr {
        crate::egress::serve(
            addr,
            engine.state.clone(),
            workers.handles(),
            engine.egress_drain(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on egress address {addr}: {e}"))?;
    }
    if let Some(addr) = opts.egress_sni_addr {
        crate::egress::serve_sni(
            addr,
            engine.state.clone(),
            workers.handles(),
            engine.egress_drain(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on egress TLS address {addr}: {e}"))?;
    }
    admin_state.ready.store(true, Ordering::Release);

    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let watch_root = if opts.manifests.is_file() {
        opts.manifests
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    } else {
        opts.manifests.clone()
    };
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if !matches!(ev.kind, notify::EventKind::Access(_)) {
                let _ = tx.send(());
            }
        }
    })?;
    watcher.watch(&watch_root, RecursiveMode::Recursive)?;
    info!(path = %opts.manifests.display(), "watching manifests");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut version = 1u64;
    loop {
        tokio::select! {
            ev = rx.recv() => {
                if ev.is_none() { break; }
                // Wait until the folder has been quiet for DEBOUNCE.
                while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                version += 1;
                let mut topts = opts.translate.clone();
                topts.now = now();
                topts.version = version;
                topts.tls_last_good = tls_last_good.clone();
                topts.egress_last_good = egress_last_good.clone();
                match load_and_translate_cached(&opts.manifests, &topts, &mut generations, &mut cache) {
                    Ok(t) => {
                        admin_state.last_error.store(Arc::new(None));
                        tls_last_good = t.tls_last_good.clone();
                        egress_last_good = t.egress_last_good.clone();
                        apply(&engine, &admin_state, t, &metrics).await;
                        metrics.reloads.with_label_values(&["applied"]).inc();
                        info!(version, "configuration reloaded");
                    }
                    Err(e) => {
                        metrics.reloads.with_label_values(&["rejected"]).inc();
                        for err in &e.0 {
                            error!(file = %err.origin, object = %err.object, field = %err.field, "{}", err.message);
                        }
                        error!("manifests rejected; still serving configuration version {}", engine.state.config.load().version);
                        admin_state.last_error.store(Arc::new(Some(e.to_string())));
                    }
                }
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    info!("shutting down: draining connections");
    admin_state.ready.store(false, Ordering::Release);
    engine.shutdown().await;
    let deadline = tokio::time::Instant::now() + opts.drain_timeout;
    while engine.state.connections.load(Ordering::Acquire) > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn apply(engine: &Engine, admin: &AdminState, t: Translation, metrics: &Metrics) {
    for w in &t.warnings {
        warn!(file = %w.source, object = %w.object, field = %w.field, "{}", w.message);
    }
    let version = t.config.version;
    // Which Gateway listeners each socket serves, to report the sockets that cannot be opened.
    let served: Vec<(std::net::SocketAddr, crate::resources::NsName, Vec<String>)> = t
        .config
        .binds
        .iter()
        .map(|b| {
            (
                b.addr,
                b.gateway.clone(),
                b.listeners.iter().map(|l| l.name.clone()).collect(),
            )
        })
        .collect();
    let bind_errors = engine.apply(t.config).await;
    let mut statuses = t.statuses;
    for e in &bind_errors {
        error!("{e}");
        if let Some((_, gw, listeners)) = served.iter().find(|(a, _, _)| *a == e.addr) {
            crate::status::mark_unbound(&mut statuses, gw, listeners, &e.to_string());
        }
    }
    carry_transition_times(&admin.statuses.load(), &mut statuses);
    admin.statuses.store(Arc::new(statuses));
    admin.warnings.store(Arc::new(t.warnings));
    admin.infrastructure.store(Arc::new(t.infrastructure));
    metrics
        .config_version
        .set(i64::try_from(version).unwrap_or(i64::MAX));
}
