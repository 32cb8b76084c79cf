//! Writing status: every object's status as translation gives it, through the status
//! subresource with server-side apply under our field manager, only when it differs from what
//! the API server holds. Conditions keep their `lastTransitionTime` while their status stays;
//! route and policy entries of other controllers (in the atomic `parents` and `ancestors`
//! lists) are kept as they are.

use std::collections::{BTreeSet, HashMap};

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::Value;
use tracing::{debug, warn};

use sluice_api::resources::NsName;
use sluice_translate::presentation::carry_transition_times;
use sluice_translate::{ObjectStatus, StatusMeta};

use crate::watch::Watches;

pub const FIELD_MANAGER: &str = "sluice-controller";

/// The resource behind each kind translation writes status for.
fn resource(api_version: &str, kind: &str) -> Option<ApiResource> {
    let plural = match kind {
        "GatewayClass" => "gatewayclasses",
        "Gateway" => "gateways",
        "ListenerSet" => "listenersets",
        "HTTPRoute" => "httproutes",
        "GRPCRoute" => "grpcroutes",
        "TLSRoute" => "tlsroutes",
        "TCPRoute" => "tcproutes",
        "UDPRoute" => "udproutes",
        "BackendTLSPolicy" => "backendtlspolicies",
        "EgressPolicy" => "egresspolicies",
        _ => return None,
    };
    let (group, version) = api_version.rsplit_once('/')?;
    Some(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        plural,
    ))
}

/// The lists where each controller writes its own entries.
const SHARED_LISTS: [&str; 2] = ["parents", "ancestors"];

type Key = (String, NsName);

fn key(s: &ObjectStatus) -> Key {
    (
        s.kind.clone(),
        NsName::new(
            s.metadata.namespace.clone().unwrap_or_default(),
            s.metadata.name.clone(),
        ),
    )
}

pub struct StatusWriter {
    client: Client,
    controller_name: String,
    /// What we applied last for each object, and its kind's API version: an object that
    /// drops out of translation's statuses has its entries of ours removed.
    written: HashMap<Key, (String, Value)>,
    /// Whether the live objects were searched for entries of ours that translation no longer
    /// gives (left by an earlier run or another replica), since start or the last `forget`.
    swept: bool,
}

/// What one `write` did.
#[derive(Debug, Default)]
pub struct Written {
    pub applied: usize,
    pub unchanged: usize,
    /// Objects whose write failed: the caller translates again later.
    pub failed: usize,
}

impl StatusWriter {
    pub fn new(client: Client, controller_name: String) -> Self {
        StatusWriter {
            client,
            controller_name,
            written: HashMap::new(),
            swept: false,
        }
    }

    /// Forgets what was written: the next `write` compares everything with the API server.
    pub fn forget(&mut self) {
        self.written.clear();
        self.swept = false;
    }

    /// Writes what differs; stops as soon as `leading` says this replica no longer leads.
    pub async fn write(
        &mut self,
        statuses: Vec<ObjectStatus>,
        watches: &Watches,
        leading: &tokio::sync::watch::Receiver<bool>,
    ) -> Written {
        let mut out = Written::default();
        let current: BTreeSet<Key> = statuses.iter().map(key).collect();
        // Objects that had our status and no longer do: keep only the other controllers'
        // entries of their shared lists.
        let mut gone: Vec<(Key, String)> = self
            .written
            .iter()
            .filter(|(k, _)| !current.contains(*k))
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        // What this process did not write itself: entries of ours on objects translation
        // gives no status for (a route moved to another Gateway while no controller ran).
        let sweeping = !self.swept;
        if sweeping {
            for (kind, name) in watches.with_entries_of(&self.controller_name) {
                let k = (kind.to_string(), name);
                if !current.contains(&k) && !gone.iter().any(|(g, _)| *g == k) {
                    gone.push((k, format!("{}/v1", sluice_api::resources::GATEWAY_GROUP)));
                }
            }
        }
        let mut todo = statuses;
        for ((kind, name), api_version) in gone {
            self.written.remove(&(kind.clone(), name.clone()));
            if !matches!(
                kind.as_str(),
                "HTTPRoute"
                    | "GRPCRoute"
                    | "TLSRoute"
                    | "TCPRoute"
                    | "UDPRoute"
                    | "BackendTLSPolicy"
            ) {
                continue;
            }
            todo.push(ObjectStatus {
                api_version,
                kind,
                metadata: StatusMeta {
                    namespace: Some(name.namespace.clone()),
                    name: name.name.clone(),
                    generation: None,
                },
                status: serde_json::json!({}),
            });
        }
        for s in todo {
            if !*leading.borrow() {
                out.failed += 1;
                break;
            }
            match self.write_one(s, watches).await {
                Ok(true) => out.applied += 1,
                Ok(false) => out.unchanged += 1,
                Err(()) => out.failed += 1,
            }
        }
        // A failed write leaves the sweep to the next round.
        if sweeping && out.failed == 0 {
            self.swept = true;
        }
        out
    }

    /// Applies one status unless the API server holds it already; `Ok(true)` when written.
    async fn write_one(&mut self, mut s: ObjectStatus, watches: &Watches) -> Result<bool, ()> {
        let k = key(&s);
        let Some(live) = watches.live(&s.kind, &k.1) else {
            // Deleted since translation; nothing to write.
            return Ok(false);
        };
        if let Some(g) = s.metadata.generation {
            if live.pointer("/metadata/generation").and_then(Value::as_i64) != Some(g) {
                // Changed since translation: the translation of the new generation writes it.
                return Ok(false);
            }
        }
        let live_status = live.get("status").cloned().unwrap_or(Value::Null);
        let previous = [ObjectStatus {
            status: live_status.clone(),
            ..s.clone()
        }];
        carry_transition_times(&previous, std::slice::from_mut(&mut s));
        keep_others(&mut s.status, &live_status, &self.controller_name);
        if pruned(&s.status) == pruned(&live_status) {
            self.written
                .insert(k, (s.api_version.clone(), s.status.clone()));
            return Ok(false);
        }
        let Some(ar) = resource(&s.api_version, &s.kind) else {
            warn!(kind = %s.kind, "no status resource known for this kind; status not written");
            return Err(());
        };
        let api: Api<DynamicObject> = if s.kind == "GatewayClass" {
            Api::all_with(self.client.clone(), &ar)
        } else {
            Api::namespaced_with(self.client.clone(), &k.1.namespace, &ar)
        };
        // The resourceVersion the status was computed against: if the object changed since
        // (another controller's entry in a shared list, say), the write fails with a
        // conflict and is computed again from the newer object.
        let mut metadata = serde_json::json!({"name": k.1.name});
        if let Some(rv) = live.pointer("/metadata/resourceVersion") {
            metadata["resourceVersion"] = rv.clone();
        }
        if s.kind != "GatewayClass" {
            metadata["namespace"] = k.1.namespace.clone().into();
        }
        let body = serde_json::json!({
            "apiVersion": s.api_version,
            "kind": s.kind,
            "metadata": metadata,
            "status": s.status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch_status(&k.1.name, &params, &Patch::Apply(&body))
            .await
        {
            Ok(_) => {
                debug!(kind = %s.kind, object = %k.1, "status written");
                self.written.insert(k, (s.api_version, s.status));
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                debug!(kind = %s.kind, object = %k.1, "changed since it was read; written again later");
                Err(())
            }
            Err(e) => {
                warn!(kind = %s.kind, object = %k.1, "status not written: {e}");
                Err(())
            }
        }
    }
}

/// Adds to our `parents`/`ancestors` entries the live entries of other controllers, which the
/// atomic list would otherwise lose.
fn keep_others(desired: &mut Value, live: &Value, ours: &str) {
    for list in SHARED_LISTS {
        let Some(theirs) = live.get(list).and_then(Value::as_array) else {
            continue;
        };
        let others: Vec<Value> = theirs
            .iter()
            .filter(|e| e.get("controllerName").and_then(Value::as_str) != Some(ours))
            .cloned()
            .collect();
        if others.is_empty() && desired.get(list).is_none() {
            // We have no entries and nobody else has: write the empty list, removing ours.
            if let Some(d) = desired.as_object_mut() {
                d.insert(list.to_string(), Value::Array(Vec::new()));
            }
            continue;
        }
        let Some(d) = desired.as_object_mut() else {
            continue;
        };
        let entry = d
            .entry(list.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(a) = entry.as_array_mut() {
            a.extend(others);
        }
    }
}

/// The value without nulls and empty lists or objects, so that what we would write and what
/// the API server returns compare equal when they mean the same.
fn pruned(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), pruned(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(pruned).collect()),
        v => v.clone(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_controllers_entries_are_kept_and_ours_replaced() {
        let live = serde_json::json!({"parents": [
            {"controllerName": "sluice.dev/gateway-controller", "parentRef": {"name": "old"}},
            {"controllerName": "example.com/other", "parentRef": {"name": "theirs"}},
        ]});
        let mut desired = serde_json::json!({"parents": [
            {"controllerName": "sluice.dev/gateway-controller", "parentRef": {"name": "new"}},
        ]});
        keep_others(&mut desired, &live, "sluice.dev/gateway-controller");
        let names: Vec<&str> = desired["parents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["parentRef"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["new", "theirs"]);
    }

    #[test]
    fn a_route_we_no_longer_own_loses_only_our_entries() {
        let live = serde_json::json!({"parents": [
            {"controllerName": "sluice.dev/gateway-controller", "parentRef": {"name": "old"}},
        ]});
        let mut desired = serde_json::json!({});
        keep_others(&mut desired, &live, "sluice.dev/gateway-controller");
        assert_eq!(desired, serde_json::json!({"parents": []}));
    }

    #[test]
    fn empty_and_missing_compare_equal() {
        let a = serde_json::json!({"addresses": [], "conditions": [{"type": "A", "message": ""}]});
        let b = serde_json::json!({"conditions": [{"type": "A", "message": ""}], "x": null});
        assert_eq!(pruned(&a), pruned(&b));
        assert_ne!(pruned(&a), pruned(&serde_json::json!({"conditions": []})));
    }
}
