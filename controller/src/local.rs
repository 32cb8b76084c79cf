//! `--local-gateways`: a gateway process on this host for every accepted Gateway, instead of a
//! Deployment in the cluster (development, and tests without a node). Each process gets its
//! configuration over the discovery stream like a gateway Pod; one that exits is started
//! again a second later; one whose Gateway goes away is stopped with SIGTERM (it drains).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use sluice_api::resources::NsName;

/// How long an exited gateway waits before it is started again.
const RESTART_DELAY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// The `gateway` binary.
    pub gateway_bin: PathBuf,
    /// Where each gateway writes its log (`namespace_name.log`), keeps its snapshot cache and
    /// finds its discovery certificate.
    pub state_dir: PathBuf,
}

pub struct LocalGateways {
    opts: LocalOptions,
    controller_url: String,
    ca: std::sync::Arc<crate::ca::Ca>,
    /// The running processes by PID.
    running: BTreeMap<NsName, u32>,
    exits_tx: mpsc::UnboundedSender<(NsName, u32)>,
    exits: mpsc::UnboundedReceiver<(NsName, u32)>,
}

impl LocalGateways {
    pub fn new(
        opts: LocalOptions,
        discovery: SocketAddr,
        ca: std::sync::Arc<crate::ca::Ca>,
    ) -> Self {
        let mut addr = discovery;
        if addr.ip().is_unspecified() {
            addr.set_ip([127, 0, 0, 1].into());
        }
        let (exits_tx, exits) = mpsc::unbounded_channel();
        LocalGateways {
            opts,
            controller_url: format!("https://{addr}"),
            ca,
            running: BTreeMap::new(),
            exits_tx,
            exits,
        }
    }

    /// Runs exactly one gateway per Gateway of `desired`.
    pub async fn sync(&mut self, desired: BTreeSet<NsName>) {
        let gone: Vec<NsName> = self
            .running
            .keys()
            .filter(|g| !desired.contains(*g))
            .cloned()
            .collect();
        for g in gone {
            if let Some(pid) = self.running.remove(&g) {
                info!(gateway = %g, pid, "stopping local gateway");
                terminate(pid).await;
            }
        }
        for g in desired {
            if !self.running.contains_key(&g) {
                match self.start(&g) {
                    Ok(pid) => {
                        info!(gateway = %g, pid, "started local gateway");
                        self.running.insert(g, pid);
                    }
                    Err(e) => warn!(gateway = %g, "cannot start local gateway: {e}"),
                }
            }
        }
    }

    fn start(&self, gateway: &NsName) -> anyhow::Result<u32> {
        let mut cmd = tokio::process::Command::new(&self.opts.gateway_bin);
        cmd.args(["run", "--controller", &self.controller_url])
            .args(["--gateway", &gateway.to_string()])
            .args(["--admin-addr", "127.0.0.1:0", "--access-log", "off"])
            .args(["--exit-with", &std::process::id().to_string()])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let dir = &self.opts.state_dir;
        {
            use std::os::unix::fs::DirBuilderExt;
            // Only this user may read the keys: a key gets its Gateway's configuration.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let base = format!("{}_{}", gateway.namespace, gateway.name);
        let issued = self.ca.gateway_client(gateway)?;
        let ca = dir.join("ca.crt");
        let cert = dir.join(format!("{base}.crt"));
        let key = dir.join(format!("{base}.key"));
        std::fs::write(&ca, &self.ca.cert_pem)?;
        std::fs::write(&cert, &issued.cert_pem)?;
        write_private(&key, &issued.key_pem)?;
        cmd.arg("--controller-ca").arg(ca);
        cmd.arg("--client-cert").arg(cert);
        cmd.arg("--client-key").arg(key);
        cmd.arg("--snapshot-cache")
            .arg(dir.join(format!("{base}.snapshot.json")));
        let log = std::fs::File::create(dir.join(format!("{base}.log")))?;
        cmd.stderr(log.try_clone()?).stdout(log);
        let mut child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.opts.gateway_bin.display()))?;
        let pid = child.id().unwrap_or(0);
        let tx = self.exits_tx.clone();
        let g = gateway.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            warn!(gateway = %g, pid, ?status, "local gateway exited");
            tokio::time::sleep(RESTART_DELAY).await;
            let _ = tx.send((g, pid));
        });
        Ok(pid)
    }

    /// Completes when a gateway process exited (it is then started again by the next sync,
    /// if its Gateway is still there).
    pub async fn exited(&mut self) {
        if let Some((g, pid)) = self.exits.recv().await {
            if self.running.get(&g) == Some(&pid) {
                self.running.remove(&g);
            }
        }
    }

    pub async fn stop_all(&mut self) {
        for (g, pid) in std::mem::take(&mut self.running) {
            info!(gateway = %g, pid, "stopping local gateway");
            terminate(pid).await;
        }
    }
}

/// Writes a file only its owner can read.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// SIGTERM, so the gateway drains its connections (`kill`: this crate forbids the unsafe
/// code a direct signal call needs).
async fn terminate(pid: u32) {
    let _ = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await;
}
