//! The file provider: a folder of manifests (or one file), loaded and translated. It remembers
//! what one translation hands to the next (generations, the last valid TLS Secrets and
//! EgressPolicies, the sockets the engine could not open) and watches the folder, so every
//! change to the files is applied within a second. A change that does not load is reported and
//! the last good configuration stays in force (`app` decides that).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::resources::{self, LoadErrors, Store};
use crate::translate::{self, Options, Translation};

/// How long the folder must be quiet before a reload: editors and tools write a file in several
/// steps (write, rename) within microseconds, so a short quiet time coalesces them.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Loads and translates the manifests under `path` once (`gateway status`, `gateway render`).
/// Objects without `metadata.generation` get one from `generations`, as the API server would
/// give it.
pub fn load_and_translate(
    path: &Path,
    opts: &Options,
    generations: &mut resources::Generations,
) -> Result<Translation, LoadErrors> {
    let mut store = resources::load_path(path)?;
    generations.assign(&mut store);
    Ok(translate::translate(&store, opts))
}

pub use crate::translate::condition_time_now as now;

/// The manifests of one folder, translated again on every change.
pub struct FileProvider {
    path: PathBuf,
    options: Options,
    version: u64,
    generations: resources::Generations,
    cache: resources::ParseCache,
    /// The objects of the last load that succeeded.
    store: Option<Store>,
}

impl FileProvider {
    /// `options` are the fixed translation options; time, version and what translations hand
    /// on are the provider's.
    pub fn new(path: PathBuf, options: Options) -> Self {
        FileProvider {
            path,
            options,
            version: 0,
            generations: resources::Generations::default(),
            cache: resources::ParseCache::default(),
            store: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the folder again (parsing only the files that changed) and translates it as the
    /// next version. On error nothing changes: the last load stays the one translated.
    pub fn reload(&mut self) -> Result<Translation, LoadErrors> {
        let mut store = resources::load_path_cached(&self.path, &mut self.cache)?;
        self.generations.assign(&mut store);
        self.version += 1;
        self.store = Some(store);
        Ok(self.translate())
    }

    /// Reports the sockets the engine could not open for the last translation. When that
    /// changes what status says, returns the same objects translated again (the configuration
    /// is the same; only status differs), so one party, translation, writes all of status.
    pub fn bind_failures(&mut self, failures: BTreeMap<SocketAddr, String>) -> Option<Translation> {
        if failures == self.options.bind_failures {
            return None;
        }
        self.options.bind_failures = failures;
        self.store.as_ref()?;
        Some(self.translate())
    }

    fn translate(&mut self) -> Translation {
        let empty = Store::default();
        let store = self.store.as_ref().unwrap_or(&empty);
        let mut opts = self.options.clone();
        opts.now = now();
        opts.version = self.version;
        let t = translate::translate(store, &opts);
        // What the next translation starts from.
        self.options.tls_last_good = t.tls_last_good.clone();
        self.options.egress_last_good = t.egress_last_good.clone();
        self.options.pool_last = t.pool_assigned.clone();
        t
    }

    /// Watches the folder: the receiver yields once per burst of changes, after the folder has
    /// been quiet for a moment. The watcher stops when dropped.
    pub fn watch(&self) -> notify::Result<(notify::RecommendedWatcher, mpsc::Receiver<()>)> {
        let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
        let root = if self.path.is_file() {
            self.path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        } else {
            self.path.clone()
        };
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if let Ok(ev) = res {
                    if !matches!(ev.kind, notify::EventKind::Access(_)) {
                        let _ = raw_tx.send(());
                    }
                }
            })?;
        watcher.watch(&root, RecursiveMode::Recursive)?;
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            while raw_rx.recv().await.is_some() {
                // Wait until the folder has been quiet for DEBOUNCE.
                while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, raw_rx.recv()).await {}
                if tx.send(()).await.is_err() {
                    break;
                }
            }
        });
        Ok((watcher, rx))
    }
}
