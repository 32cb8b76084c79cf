//! The Sluice controller: watches the Gateway API objects of a cluster, translates them with
//! the same pure function as the standalone gateway, writes their status, and streams each
//! gateway process its Gateway's configuration over gRPC.
#![forbid(unsafe_code)]

pub mod ca;
pub mod discovery;
pub mod infra;
pub mod lease;
pub mod local;
pub mod reports;
pub mod status;
pub mod watch;
pub mod workload_ca;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::net::TcpListener;
use tracing::{info, warn};

use sluice_api::resources::NsName;
use sluice_translate::{translate, Options};

use crate::discovery::{Discovery, Event};
use crate::status::StatusWriter;
use crate::watch::Watches;

/// The addresses Gateways are translated with in a cluster (RFC 2544's benchmarking range,
/// never routed): only to keep each Gateway's listeners apart, never bound.
const CLUSTER_POOL: &str = "198.18.0.0/15";

/// Changes closer together than this are translated once.
const DEBOUNCE: Duration = Duration::from_millis(30);
/// A burst of changes is translated at the latest this long after its first change.
const DEBOUNCE_MAX: Duration = Duration::from_millis(250);
/// After a status write failed, translate and write again this much later.
const RETRY: Duration = Duration::from_secs(2);
/// Translate and sync at least this often, changes or not: discovery certificates are renewed
/// on a sync.
const RESYNC: Duration = Duration::from_secs(3600);

pub struct ControllerOptions {
    pub controller_name: String,
    /// Where the configuration discovery service listens (port 0: any free port).
    pub discovery_addr: SocketAddr,
    /// Address of Gateways without spec.addresses when there is no pool.
    pub bind: IpAddr,
    /// Addresses handed out to Gateways without spec.addresses.
    pub address_pool: Option<ipnet::IpNet>,
    /// Run a gateway process on this host for every accepted Gateway.
    pub local_gateways: Option<local::LocalOptions>,
    /// Without local gateways: how the gateway Deployments are rendered. Their Pods listen on
    /// every address and Gateways get their Service's addresses in status.
    pub infra: sluice_translate::infra::InfraOptions,
    /// The controller's own namespace: its Lease and its discovery CA's Secret live there.
    pub namespace: String,
    /// Names of the discovery service in the serving certificate (besides localhost,
    /// 127.0.0.1 and ::1).
    pub discovery_names: Vec<String>,
    /// Elect a leader among replicas: only the leader writes status (and runs local
    /// gateways); every replica serves configuration to gateways. None: always lead.
    pub leader_election: Option<LeaderElection>,
    /// Serve the workload certificate service (`workload_ca`). None: not served.
    pub workload_ca: Option<WorkloadCaOptions>,
}

#[derive(Clone, Debug)]
pub struct WorkloadCaOptions {
    /// Where the certificate service listens (TLS with a serving certificate of the workload
    /// CA).
    pub addr: SocketAddr,
    /// The SPIFFE trust domain of workload identities.
    pub trust_domain: String,
    /// The audience workload tokens must be bound to.
    pub audience: String,
}

#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub lease: String,
    /// This replica, as the Lease's holderIdentity.
    pub identity: String,
}

/// Runs a gRPC server in the background; its end is logged as `what` stopping.
pub(crate) fn spawn_server<E: std::fmt::Display>(
    what: &'static str,
    server: impl Future<Output = Result<(), E>> + Send + 'static,
) {
    tokio::spawn(async move {
        if let Err(e) = server.await {
            warn!("{what} stopped: {e}");
        }
    });
}

/// A started controller: its discovery service listening, its watches running.
pub struct Controller {
    client: Client,
    ca: Arc<ca::Ca>,
    opts: ControllerOptions,
    discovery_addr: SocketAddr,
    discovery: Discovery,
    events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    watches: Watches,
}

impl Controller {
    pub async fn start(client: Client, opts: ControllerOptions) -> anyhow::Result<Controller> {
        let listener = TcpListener::bind(opts.discovery_addr).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on discovery address {}: {e}",
                opts.discovery_addr
            )
        })?;
        let discovery_addr = listener.local_addr()?;
        let ca = Arc::new(ca::Ca::load_or_create(client.clone(), &opts.namespace).await?);
        let mut dns = opts.discovery_names.clone();
        dns.push("localhost".into());
        let serving = ca.server(
            &dns,
            &[[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()],
        )?;
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &serving.cert_pem,
                &serving.key_pem,
            ))
            .client_ca_root(tonic::transport::Certificate::from_pem(&ca.cert_pem));
        let (discovery, events) = Discovery::new();
        let server = tonic::transport::Server::builder()
            // A gateway that vanished without closing its connection is noticed.
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(5)))
            .tls_config(tls)?
            .add_service(discovery.server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        spawn_server("discovery service", server);
        info!(%discovery_addr, "configuration discovery listening");
        if let Some(w) = &opts.workload_ca {
            workload_ca::serve(client.clone(), &opts.namespace, w, &dns).await?;
        }
        let served = watch::served_route_kinds(&client).await;
        let watches = Watches::start(&client, &served);
        Ok(Controller {
            client,
            ca,
            opts,
            discovery_addr,
            discovery,
            events,
            watches,
        })
    }

    pub fn discovery_addr(&self) -> SocketAddr {
        self.discovery_addr
    }

    /// Translates and writes status on every change until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        tokio::select! {
            ready = self.watches.ready() => ready?,
            () = &mut shutdown => return Ok(()),
        }
        info!("watches listed every kind; translating");
        let (leading_tx, mut leading) =
            tokio::sync::watch::channel(self.opts.leader_election.is_none());
        let (stop_election, election_stopped) = tokio::sync::oneshot::channel::<()>();
        // Without election this replica always leads; the sender stays here, unused.
        let mut _always = None;
        let mut election_alive = true;
        let election = match self.opts.leader_election.clone() {
            Some(le) => {
                let elector = lease::Elector::new(
                    self.client.clone(),
                    &self.opts.namespace,
                    &le.lease,
                    &le.identity,
                );
                info!(lease = %format!("{}/{}", self.opts.namespace, le.lease), identity = %le.identity, "leader election");
                Some(tokio::spawn(elector.run(leading_tx, async {
                    let _ = election_stopped.await;
                })))
            }
            None => {
                _always = Some(leading_tx);
                None
            }
        };
        let cluster_mode = self.opts.local_gateways.is_none();
        let mut infra_options = self.opts.infra.clone();
        infra_options.addresses_from_service = cluster_mode;
        let mut options = Options {
            controller_name: self.opts.controller_name.clone(),
            bind: self.opts.bind,
            // In a cluster every Gateway has Pods of its own: distinct addresses (never
            // bound: the Pods listen on all of theirs) keep their ports apart in translation.
            address_pool: self
                .opts
                .address_pool
                .or_else(|| cluster_mode.then(|| CLUSTER_POOL.parse().ok()).flatten()),
            infra: infra_options,
            ..Options::default()
        };
        let mut infra =
            cluster_mode.then(|| infra::InfraWriter::new(self.client.clone(), self.ca.clone()));
        if !cluster_mode {
            // Local gateways keep the pool addresses status shows from before a restart.
            options.pool_last = self.watches.status_addresses();
        }
        let mut status = StatusWriter::new(self.client.clone(), self.opts.controller_name.clone());
        let mut local = self
            .opts
            .local_gateways
            .take()
            .map(|o| local::LocalGateways::new(o, self.discovery_addr, self.ca.clone()));
        // What each gateway reported it could not bind, for status.
        // Keyed by gateway process: one Pod's failures are not another's, and they go with
        // the process's stream.
        let mut unbound: Unbound = BTreeMap::new();
        // With election, the other replicas' gateways' answers reach the leader through
        // their reports.
        // Each Gateway's address in the last translation: relayed reports are moved onto it.
        let mut gateway_ips: BTreeMap<NsName, IpAddr> = BTreeMap::new();
        let mut reports = self.opts.leader_election.as_ref().map(|le| {
            reports::Reports::start(
                &self.client,
                &self.opts.namespace,
                &le.identity,
                self.watches.changed.clone(),
            )
        });
        let mut warned = BTreeSet::new();
        let mut version = 0u64;
        loop {
            version += 1;
            options.version = version;
            options.now = sluice_translate::condition_time_now();
            // The leader adds what the other replicas' gateways reported; a process's own
            // report here wins over an older one relayed.
            let mut reported = match &reports {
                Some(r) if *leading.borrow() => r.others(&gateway_ips),
                _ => Unbound::new(),
            };
            reported.extend(unbound.clone());
            options.bind_failures = reported
                .values()
                .flatten()
                .map(|(a, e)| (*a, e.clone()))
                .collect();
            let store = match self.watches.store().await {
                Ok(store) => store,
                Err(e) => {
                    // Translating without it would drop what uses it: keep serving and
                    // showing the last translation, and try again shortly.
                    warn!("not translating yet: {e}");
                    tokio::select! {
                        () = tokio::time::sleep(RETRY) => {}
                        () = &mut shutdown => {
                            stop(&mut local, reports.as_ref(), stop_election, election).await;
                            return Ok(());
                        }
                    }
                    continue;
                }
            };
            let t = translate(&store, &options);
            options.tls_last_good = t.tls_last_good.clone();
            options.egress_last_good = t.egress_last_good.clone();
            options.pool_last = t.pool_assigned.clone();
            let now_warned: BTreeSet<String> = t.warnings.iter().map(|w| w.to_string()).collect();
            for w in now_warned.difference(&warned) {
                warn!("{w}");
            }
            warned = now_warned;
            let gateways: Vec<NsName> = t.config.binds.iter().map(|b| b.gateway.clone()).collect();
            gateway_ips = t
                .config
                .binds
                .iter()
                .map(|b| (b.gateway.clone(), b.addr.ip()))
                .collect();
            // Gateways that are gone take their processes' reports with them.
            unbound.retain(|(g, _), _| gateways.contains(g));
            self.discovery.publish(version, t.config);
            let leader = election_alive && *leading.borrow_and_update();
            if let Some(local) = &mut local {
                if leader {
                    local.sync(gateways.iter().cloned().collect()).await;
                } else {
                    local.stop_all().await;
                }
            }
            let infra_failed = match (&mut infra, leader) {
                (Some(w), true) => {
                    let ours = store
                        .gateway_classes
                        .iter()
                        .filter(|(_, c)| c.obj.spec.controller_name == options.controller_name)
                        .map(|(n, _)| n.clone())
                        .collect();
                    w.sync(&t.infrastructure, &ours).await
                }
                (Some(w), false) => {
                    w.forget();
                    0
                }
                _ => 0,
            };
            let mut report_failed = false;
            if let Some(r) = &mut reports {
                if let Err(e) = r.publish(&unbound).await {
                    warn!("cannot publish this replica's gateway reports: {e}");
                    report_failed = true;
                }
            }
            let written = if leader {
                status.write(t.statuses, &self.watches, &leading).await
            } else {
                // What the leader wrote may change under us: start afresh when we lead.
                status.forget();
                status::Written::default()
            };
            info!(
                version,
                leader,
                applied = written.applied,
                unchanged = written.unchanged,
                failed = written.failed,
                "translated"
            );
            let retry = written.failed > 0 || infra_failed > 0 || report_failed;
            // Wait for the next reason to translate. The deadlines are set once, so events
            // that do not end the wait do not push them back.
            let retry_at = tokio::time::sleep(RETRY);
            tokio::pin!(retry_at);
            let resync_at = tokio::time::sleep(RESYNC);
            tokio::pin!(resync_at);
            let renew_at = tokio::time::sleep(reports::RENEW);
            tokio::pin!(renew_at);
            loop {
                tokio::select! {
                    () = self.watches.changed.notified() => {
                        debounce(&self.watches).await;
                        break;
                    }
                    Some(ev) = self.events.recv() => {
                        if answered(ev, &mut unbound) { break; }
                    }
                    () = &mut retry_at, if retry => break,
                    () = &mut resync_at => break,
                    // A report is renewed while nothing changes, so the leader can tell a
                    // live replica's from one left behind.
                    () = &mut renew_at, if reports.is_some() => {
                        if let Some(r) = &mut reports {
                            if let Err(e) = r.publish(&unbound).await {
                                warn!("cannot renew this replica's gateway reports: {e}");
                            }
                        }
                        renew_at.as_mut().reset(tokio::time::Instant::now() + reports::RENEW);
                    }
                    () = local_tick(&mut local) => break,
                    changed = leading.changed(), if election_alive => {
                        if changed.is_err() {
                            // The elector ended: this replica no longer knows it leads.
                            warn!("leader election stopped; no longer writing");
                            election_alive = false;
                        }
                        break;
                    }
                    () = &mut shutdown => {
                        stop(&mut local, reports.as_ref(), stop_election, election).await;
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// On shutdown: local gateways stopped, this replica's report removed, the Lease released.
async fn stop(
    local: &mut Option<local::LocalGateways>,
    reports: Option<&reports::Reports>,
    stop_election: tokio::sync::oneshot::Sender<()>,
    election: Option<tokio::task::JoinHandle<()>>,
) {
    if let Some(local) = local {
        local.stop_all().await;
    }
    if let Some(r) = reports {
        r.remove().await;
    }
    let _ = stop_election.send(());
    if let Some(e) = election {
        let _ = e.await;
    }
}

/// Waits until the watches have been quiet for `DEBOUNCE` (at most `DEBOUNCE_MAX`).
async fn debounce(watches: &Watches) {
    let until = tokio::time::Instant::now() + DEBOUNCE_MAX;
    while tokio::time::Instant::now() < until {
        if tokio::time::timeout(DEBOUNCE, watches.changed.notified())
            .await
            .is_err()
        {
            break;
        }
    }
}

/// Records a gateway's answer; true when what it could not bind changed (status changes).
fn answered(ev: Event, unbound: &mut Unbound) -> bool {
    match ev {
        Event::Answered(a) => {
            if let Some(e) = &a.error {
                warn!(gateway = %a.gateway, instance = %a.instance, version = a.version, "gateway refused the snapshot: {e}");
            }
            let key = (a.gateway, a.instance);
            let before = unbound.get(&key).cloned().unwrap_or_default();
            if before == a.bind_failures {
                return false;
            }
            if a.bind_failures.is_empty() {
                unbound.remove(&key);
            } else {
                unbound.insert(key, a.bind_failures);
            }
            true
        }
        Event::Disconnected { gateway, instance } => unbound.remove(&(gateway, instance)).is_some(),
        Event::Connected { .. } => false,
    }
}

/// What each gateway process (Gateway, instance) reported it could not bind.
pub(crate) type Unbound = BTreeMap<(NsName, String), BTreeMap<SocketAddr, String>>;

/// Completes when local gateway processes need looking after (one exited).
async fn local_tick(local: &mut Option<local::LocalGateways>) {
    match local {
        Some(l) => l.exited().await,
        None => std::future::pending().await,
    }
}
