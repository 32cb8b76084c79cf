//! What gateways answered a replica, for the leader. With leader election a gateway's stream
//! ends at whichever replica its Service picked, but only the leader writes status. So every
//! replica publishes the sockets its gateways could not bind in a ConfigMap of its own in the
//! controller's namespace (`sluice-reports-<identity>`, labelled [`REPORT_LABEL`], owned by
//! its Pod when it runs in one so that it goes with the Pod), and the leader adds the other
//! replicas' reports to its own. A report is renewed every [`RENEW`]; the leader ignores one
//! older than [`STALE`] (a replica that was killed outside a Pod leaves its ConfigMap behind),
//! and a replica removes its own when it stops. Addresses are the publisher's translation's:
//! the leader moves each failure onto its own address for that Gateway, by port.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store as Cache};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::warn;

use sluice_api::resources::NsName;

use crate::Unbound;

pub const REPORT_LABEL: &str = "sluice.dev/controller-report";
const DATA_KEY: &str = "bind-failures.json";
const RENEWED_KEY: &str = "renewed";
/// How often a replica rewrites its report, changed or not.
pub const RENEW: Duration = Duration::from_secs(60);
/// A report not renewed for this long is ignored.
const STALE: Duration = Duration::from_secs(180);

/// One gateway process's report, as stored.
#[derive(Serialize, Deserialize)]
struct Entry {
    gateway: NsName,
    instance: String,
    failures: BTreeMap<SocketAddr, String>,
}

pub struct Reports {
    api: Api<ConfigMap>,
    name: String,
    owner: Option<serde_json::Value>,
    /// What was published last, and when (None: nothing yet).
    published: Option<(String, std::time::Instant)>,
    cache: Cache<ConfigMap>,
}

impl Reports {
    /// Starts watching the replicas' reports in `namespace`; a change notifies `changed`.
    pub fn start(client: &Client, namespace: &str, identity: &str, changed: Arc<Notify>) -> Self {
        let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
        let (cache, writer) = reflector::store();
        let stream = watcher(api.clone(), watcher::Config::default().labels(REPORT_LABEL))
            .default_backoff()
            .reflect(writer);
        crate::watch::spawn_events(stream, changed, "report ConfigMap");
        // In a Pod (the chart sets both), the ConfigMap is the Pod's: deleted with it.
        let owner = match (std::env::var("POD_NAME"), std::env::var("POD_UID")) {
            (Ok(name), Ok(uid)) if !name.is_empty() && !uid.is_empty() => Some(serde_json::json!(
                {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}
            )),
            _ => None,
        };
        Reports {
            api,
            name: report_name(identity),
            owner,
            published: None,
            cache,
        }
    }

    /// Publishes this replica's reports when they differ from what it published last, or when
    /// that is due for renewal.
    pub async fn publish(&mut self, unbound: &Unbound) -> anyhow::Result<()> {
        let entries: Vec<Entry> = unbound
            .iter()
            .map(|((gateway, instance), failures)| Entry {
                gateway: gateway.clone(),
                instance: instance.clone(),
                failures: failures.clone(),
            })
            .collect();
        let text = serde_json::to_string(&entries)?;
        if let Some((last, at)) = &self.published {
            if *last == text && at.elapsed() < RENEW / 2 {
                return Ok(());
            }
        }
        let mut metadata = serde_json::json!({
            "name": self.name,
            "labels": {REPORT_LABEL: "true"},
        });
        if let Some(owner) = &self.owner {
            metadata["ownerReferences"] = serde_json::json!([owner]);
        }
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata,
            "data": {DATA_KEY: text, RENEWED_KEY: unix_now().to_string()},
        });
        self.api
            .patch(
                &self.name,
                &PatchParams::apply(crate::status::FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|e| anyhow::anyhow!("ConfigMap {}: {e}", self.name))?;
        self.published = Some((text, std::time::Instant::now()));
        Ok(())
    }

    /// Deletes this replica's report (on shutdown).
    pub async fn remove(&self) {
        if let Err(e) = self.api.delete(&self.name, &Default::default()).await {
            warn!(configmap = %self.name, "cannot remove this replica's report: {e}");
        }
    }

    /// The other replicas' live reports, the newest winning, with each failure on `addresses`'
    /// address for its Gateway (the same port); failures of Gateways not in `addresses` are left
    /// out.
    pub fn others(&self, addresses: &BTreeMap<NsName, std::net::IpAddr>) -> Unbound {
        let now = unix_now();
        let mut reports: Vec<(u64, Vec<Entry>)> = Vec::new();
        for cm in self.cache.state() {
            if cm.name_any() == self.name {
                continue;
            }
            let data = cm.data.as_ref();
            let renewed = data
                .and_then(|d| d.get(RENEWED_KEY))
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
            if now.saturating_sub(renewed) > STALE.as_secs() {
                continue;
            }
            let Some(text) = data.and_then(|d| d.get(DATA_KEY)) else {
                continue;
            };
            match serde_json::from_str::<Vec<Entry>>(text) {
                Ok(entries) => reports.push((renewed, entries)),
                Err(e) => warn!(configmap = %cm.name_any(), "report does not parse, ignored: {e}"),
            }
        }
        reports.sort_by_key(|(renewed, _)| *renewed);
        let mut out = Unbound::new();
        for e in reports.into_iter().flat_map(|(_, entries)| entries) {
            let Some(ip) = addresses.get(&e.gateway) else {
                continue;
            };
            let failures = e
                .failures
                .into_iter()
                .map(|(a, why)| (SocketAddr::new(*ip, a.port()), why))
                .collect();
            out.insert((e.gateway, e.instance), failures);
        }
        out
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `sluice-reports-<identity>` as a valid object name (lower case, dashes, at most 253).
fn report_name(identity: &str) -> String {
    let clean: String = identity
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    let mut name = format!(
        "sluice-reports-{}",
        clean.trim_matches(|c| c == '-' || c == '.')
    );
    name.truncate(253);
    name.trim_end_matches(['-', '.']).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_are_valid_object_names() {
        assert_eq!(
            report_name("sluice-controller-7d9f-x2"),
            "sluice-reports-sluice-controller-7d9f-x2"
        );
        assert_eq!(report_name("Host_Name:42"), "sluice-reports-host-name-42");
    }
}
