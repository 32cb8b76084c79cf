//! The composition root: a provider of configuration (a folder of manifests, or the
//! controller's discovery stream), the engine, its workers, the admin listener and the egress
//! listeners, put together one way for the binary and for tests that run the whole gateway
//! in-process.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::admin::{self, AdminState};
use crate::controlled::{Answer, ControllerOptions, ControllerProvider};
use crate::engine::workers::Workers;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::standalone::FileProvider;
use crate::status::carry_transition_times;
use crate::translate::{Options, Translation};

/// Where the configuration comes from.
pub enum ConfigSource {
    /// A folder of manifests (or one file), translated here; status is served on /status.
    Files {
        manifests: PathBuf,
        translate: Options,
    },
    /// The controller's discovery stream; the controller translates and writes status.
    Controller(ControllerOptions),
}

pub struct AppOptions {
    pub source: ConfigSource,
    /// Where the admin listener listens (port 0: any free port, see `App::admin_addr`).
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

/// A started gateway: serving its first configuration, ready, not yet watching for changes.
enum Provider {
    Files(Box<FileProvider>),
    Controller(Box<ControllerProvider>),
}

pub struct App {
    provider: Provider,
    engine: Engine,
    admin: Arc<AdminState>,
    admin_addr: SocketAddr,
    metrics: Metrics,
    drain_timeout: Duration,
    /// Kept for as long as the gateway runs: dropping them stops the worker threads.
    workers: Workers,
}

enum First {
    Translated(Translation),
    Cached(sluice_config::Config),
}

/// Starts the gateway on the manifests of `opts`: fails if they do not load, or if the admin
/// or an egress listener cannot listen. Gateway listeners that cannot listen are reported in
/// status instead; the rest is served.
pub async fn build(opts: AppOptions) -> anyhow::Result<App> {
    let (provider, first) = match opts.source {
        ConfigSource::Files {
            manifests,
            translate,
        } => {
            let mut provider = FileProvider::new(manifests, translate);
            let first = provider
                .reload()
                .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
            (
                Provider::Files(Box::new(provider)),
                Some(First::Translated(first)),
            )
        }
        ConfigSource::Controller(c) => {
            // A configuration cached by an earlier run is served at once; without one the
            // gateway serves nothing (and is not ready) until the first snapshot arrives.
            let (provider, cached) = ControllerProvider::start(c);
            (
                Provider::Controller(Box::new(provider)),
                cached.map(First::Cached),
            )
        }
    };
    let metrics = Metrics::new();
    let workers = Workers::start(opts.threads)
        .map_err(|e| anyhow::anyhow!("cannot start {} worker threads: {e}", opts.threads))?;
    let engine = Engine::new(metrics.clone(), opts.access_log, &workers);
    let admin = Arc::new(AdminState::new(engine.state.clone()));
    let admin_addr = admin::serve(opts.admin_addr, admin.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on admin address {}: {e}", opts.admin_addr))?;
    let mut app = App {
        provider,
        engine,
        admin,
        admin_addr,
        metrics,
        drain_timeout: opts.drain_timeout,
        workers,
    };
    let ready = match first {
        Some(First::Translated(t)) => {
            app.apply(t).await;
            true
        }
        Some(First::Cached(config)) => {
            info!(version = config.version, "serving the cached snapshot");
            let failures = app.apply_snapshot(config).await;
            if let Provider::Controller(c) = &mut app.provider {
                c.failed_to_bind(failures);
            }
            true
        }
        None => false,
    };
    if let Some(addr) = opts.egress_addr {
        crate::egress::serve(
            addr,
            app.engine.state.clone(),
            app.workers.handles(),
            app.engine.egress_drain(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on egress address {addr}: {e}"))?;
    }
    if let Some(addr) = opts.egress_sni_addr {
        crate::egress::serve_sni(
            addr,
            app.engine.state.clone(),
            app.workers.handles(),
            app.engine.egress_drain(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on egress TLS address {addr}: {e}"))?;
    }
    app.admin.ready.store(ready, Ordering::Release);
    Ok(app)
}

impl App {
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Addresses the engine listens on now.
    pub async fn listening(&self) -> Vec<SocketAddr> {
        self.engine.listening().await
    }

    /// Serves, applying every change to the manifests, until `shutdown` completes; then stops
    /// every listener and waits up to the drain timeout for open connections.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        match &self.provider {
            Provider::Files(files) => {
                let (_watcher, mut changes) = files.watch()?;
                info!(path = %files.path().display(), "watching manifests");
                loop {
                    tokio::select! {
                        changed = changes.recv() => {
                            if changed.is_none() { break; }
                            self.reload().await;
                        }
                        () = &mut shutdown => break,
                    }
                }
            }
            Provider::Controller(c) => {
                info!(controller = %c.url(), "configuration from the controller");
                while let Provider::Controller(c) = &mut self.provider {
                    tokio::select! {
                        snapshot = c.next() => {
                            let Some((version, config)) = snapshot else { break };
                            self.snapshot(version, config).await;
                        }
                        () = &mut shutdown => break,
                    }
                }
            }
        }
        info!("shutting down: draining connections");
        self.admin.ready.store(false, Ordering::Release);
        self.engine.shutdown().await;
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        while self.engine.state.connections.load(Ordering::Acquire) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// A snapshot from the controller: applied like a reload of files and answered.
    async fn snapshot(&mut self, version: u64, config: Result<sluice_config::Config, String>) {
        match config {
            Ok(config) => {
                let failures = self.apply_snapshot(config.clone()).await;
                self.metrics.reloads.with_label_values(&["applied"]).inc();
                self.admin.last_error.store(Arc::new(None));
                self.admin.ready.store(true, Ordering::Release);
                info!(version, "snapshot applied");
                if let Provider::Controller(c) = &mut self.provider {
                    c.applied(
                        &config,
                        Answer {
                            version,
                            error: None,
                            bind_failures: failures,
                        },
                    );
                }
            }
            Err(e) => {
                self.metrics.reloads.with_label_values(&["rejected"]).inc();
                error!(
                    version,
                    "snapshot refused: {e}; still serving configuration version {}",
                    self.engine.state.config.load().version
                );
                self.admin.last_error.store(Arc::new(Some(e.clone())));
                if let Provider::Controller(c) = &self.provider {
                    c.refused(version, e);
                }
            }
        }
    }

    /// Serves a configuration translated elsewhere; returns the sockets it could not open.
    async fn apply_snapshot(&mut self, config: sluice_config::Config) -> Vec<(SocketAddr, String)> {
        let version = config.version;
        let span = info_span!("apply", version);
        // A Pod listens on every address; failures are reported for the snapshot's own.
        let mut config = config;
        let mut original = BTreeMap::new();
        if matches!(&self.provider, Provider::Controller(c) if c.bind_any()) {
            for b in &mut config.binds {
                let any = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), b.addr.port());
                original.insert(any, b.addr);
                b.addr = any;
            }
            config.binds.sort_by_key(|b| b.addr);
        }
        async {
            let mut failures = Vec::new();
            for e in self.engine.apply(config).await {
                error!("{e}");
                failures.push((
                    original.get(&e.addr).copied().unwrap_or(e.addr),
                    e.to_string(),
                ));
            }
            self.metrics
                .config_version
                .set(i64::try_from(version).unwrap_or(i64::MAX));
            failures
        }
        .instrument(span)
        .await
    }

    async fn reload(&mut self) {
        let Provider::Files(files) = &mut self.provider else {
            return;
        };
        match files.reload() {
            Ok(t) => {
                let version = t.config.version;
                self.admin.last_error.store(Arc::new(None));
                self.apply(t).await;
                self.metrics.reloads.with_label_values(&["applied"]).inc();
                info!(version, "configuration reloaded");
            }
            Err(e) => {
                self.metrics.reloads.with_label_values(&["rejected"]).inc();
                for err in &e.0 {
                    error!(file = %err.origin, object = %err.object, field = %err.field, "{}", err.message);
                }
                error!(
                    "manifests rejected; still serving configuration version {}",
                    self.engine.state.config.load().version
                );
                self.admin.last_error.store(Arc::new(Some(e.to_string())));
            }
        }
    }

    /// Applies a translation: the engine serves its configuration, then the status (with the
    /// sockets that could not be opened, as translation reports them) is published.
    async fn apply(&mut self, t: Translation) {
        let version = t.config.version;
        let span = info_span!("apply", version);
        async {
            for w in &t.warnings {
                warn!(file = %w.source, object = %w.object, field = %w.field, "{}", w.message);
            }
            let bind_errors = self.engine.apply(t.config).await;
            let mut failures = BTreeMap::new();
            for e in &bind_errors {
                error!("{e}");
                failures.insert(e.addr, e.to_string());
            }
            debug!(
                binds = self.engine.state.config.load().binds.len(),
                unbound = failures.len(),
                "configuration applied"
            );
            let mut statuses = t.statuses;
            if let Provider::Files(files) = &mut self.provider {
                if let Some(again) = files.bind_failures(failures) {
                    statuses = again.statuses;
                }
            }
            carry_transition_times(&self.admin.statuses.load(), &mut statuses);
            self.admin.statuses.store(Arc::new(statuses));
            self.admin.warnings.store(Arc::new(t.warnings));
            self.admin.infrastructure.store(Arc::new(t.infrastructure));
            self.metrics
                .config_version
                .set(i64::try_from(version).unwrap_or(i64::MAX));
        }
        .instrument(span)
        .await
    }
}

/// Completes when process `pid` no longer exists (checked once a second).
pub async fn process_gone(pid: u32) {
    let path = PathBuf::from(format!("/proc/{pid}"));
    while path.exists() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn signals() -> anyhow::Result<impl Future<Output = ()>> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = sigterm.recv() => {}
        }
    })
}
