//! Gateway infrastructure in the cluster: for every accepted Gateway, the ServiceAccount,
//! Service, Deployment and PodDisruptionBudget that translation renders (`sluice_translate::infra`,
//! the same objects `gateway render` prints), applied with server-side apply under our field
//! manager and owned by the Gateway (deleting it deletes them). Each object is applied again
//! only when what we render for it changed; the objects of a Gateway that is no longer
//! accepted are deleted.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::Value;
use tracing::{debug, info, warn};

use sluice_api::resources::NsName;
use sluice_translate::infra::GatewayInfra;

use crate::status::FIELD_MANAGER;

/// The kinds we apply per Gateway, in the order they are applied.
const KINDS: [(&str, &str, &str, &str); 5] = [
    ("", "v1", "Secret", "secrets"),
    ("", "v1", "ServiceAccount", "serviceaccounts"),
    ("", "v1", "Service", "services"),
    ("apps", "v1", "Deployment", "deployments"),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
    ),
];

fn resource(kind: &str) -> Option<ApiResource> {
    let (group, version, kind, plural) = KINDS.iter().find(|k| k.2 == kind)?;
    Some(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        plural,
    ))
}

pub struct InfraWriter {
    client: Client,
    ca: std::sync::Arc<crate::ca::Ca>,
    /// What was applied for each object: (kind, namespace/name) → the object.
    applied: BTreeMap<(String, NsName), Value>,
    /// Whether `applied` holds what was in the cluster when this replica began to lead.
    adopted: bool,
}

impl InfraWriter {
    pub fn new(client: Client, ca: std::sync::Arc<crate::ca::Ca>) -> Self {
        InfraWriter {
            client,
            ca,
            applied: BTreeMap::new(),
            adopted: false,
        }
    }

    /// Takes over what an earlier leader (or this replica before a restart) applied: every
    /// object of ours (managed-by sluice) whose GatewayClass is one of `classes` (ours), so
    /// the next `sync` deletes those no Gateway wants any more. Objects of other Sluice
    /// controllers' classes are never touched.
    async fn adopt(&mut self, classes: &BTreeSet<String>) -> anyhow::Result<usize> {
        use sluice_translate::infra::{GATEWAY_CLASS_LABEL, MANAGED_BY_LABEL};
        self.applied.clear();
        let selector = format!("{MANAGED_BY_LABEL}=sluice");
        let params = kube::api::ListParams::default().labels(&selector);
        for (_, _, kind, _) in KINDS {
            let Some(ar) = resource(kind) else { continue };
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
            for o in api.list(&params).await? {
                let class = o
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(GATEWAY_CLASS_LABEL));
                if class.is_some_and(|c| classes.contains(c)) {
                    let key = NsName::new(
                        o.metadata.namespace.clone().unwrap_or_default(),
                        o.metadata.name.clone().unwrap_or_default(),
                    );
                    // Null: never equal to what is rendered, so a wanted object is applied
                    // again and an unwanted one deleted.
                    self.applied.insert((kind.to_string(), key), Value::Null);
                }
            }
        }
        Ok(self.applied.len())
    }

    /// Forgets what was applied (leadership lost: the next leader owns it).
    pub fn forget(&mut self) {
        self.applied.clear();
        self.adopted = false;
    }

    /// Makes the cluster hold exactly the objects of `infra`, the first time after taking
    /// over what exists of `classes` (ours); returns how many writes failed (the caller
    /// tries again later).
    pub async fn sync(&mut self, infra: &[GatewayInfra], classes: &BTreeSet<String>) -> usize {
        if !self.adopted {
            match self.adopt(classes).await {
                Ok(n) => {
                    info!(objects = n, "took over the gateway objects of our classes");
                    self.adopted = true;
                }
                Err(e) => {
                    warn!("cannot list the gateway objects of our classes: {e}");
                    return 1;
                }
            }
        }
        let mut failed = 0;
        let mut wanted = BTreeSet::new();
        for gi in infra {
            let mut objects = gi.objects();
            match self.discovery_secret(gi).await {
                Ok(secret) => objects.insert(0, secret),
                Err(e) => {
                    warn!(gateway = %gi.name, "cannot issue the discovery certificate: {e}");
                    failed += 1;
                }
            }
            for obj in objects {
                let kind = obj["kind"].as_str().unwrap_or("").to_string();
                let key = NsName::new(
                    obj["metadata"]["namespace"].as_str().unwrap_or(""),
                    obj["metadata"]["name"].as_str().unwrap_or(""),
                );
                let id = (kind.clone(), key.clone());
                wanted.insert(id.clone());
                if self.applied.get(&id) == Some(&obj) {
                    continue;
                }
                match self.apply(&kind, &key, &obj).await {
                    Ok(()) => {
                        debug!(%kind, object = %key, "applied");
                        self.applied.insert(id, obj);
                    }
                    Err(e) => {
                        warn!(%kind, object = %key, "cannot apply: {e}");
                        failed += 1;
                    }
                }
            }
        }
        let gone: Vec<(String, NsName)> = self
            .applied
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for (kind, key) in gone {
            match self.delete(&kind, &key).await {
                Ok(()) => {
                    info!(%kind, object = %key, "deleted: its Gateway is no longer accepted");
                    self.applied.remove(&(kind, key));
                }
                Err(e) => {
                    warn!(%kind, object = %key, "cannot delete: {e}");
                    failed += 1;
                }
            }
        }
        failed
    }

    /// The Secret with the Gateway's discovery client certificate, which its Pods mount: the
    /// one in the cluster while it holds our CA's certificate for this Gateway with more than
    /// a month left, else a new one (the kubelet updates the mounted files; the gateway reads
    /// them when it next connects).
    async fn discovery_secret(&self, gi: &GatewayInfra) -> anyhow::Result<Value> {
        use sluice_translate::infra::{discovery_secret_name, GATEWAY_NAME_LABEL};
        let meta = &gi.deployment.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let gateway_name = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(GATEWAY_NAME_LABEL))
            .cloned()
            .unwrap_or_default();
        let gateway = NsName::new(namespace.clone(), gateway_name);
        let name = discovery_secret_name(&gi.name);
        let id = (
            "Secret".to_string(),
            NsName::new(namespace.clone(), name.clone()),
        );
        if let Some(v) = self.applied.get(&id) {
            let cert = serde_json::from_value::<k8s_openapi::api::core::v1::Secret>(v.clone())
                .ok()
                .and_then(|s| s.data?.remove("tls.crt"))
                .map(|pem| String::from_utf8_lossy(&pem.0).into_owned())
                .unwrap_or_default();
            if !crate::ca::renewal_due(&cert) {
                return Ok(v.clone());
            }
        }
        let api: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(self.client.clone(), &namespace);
        let current = api.get_opt(&name).await?;
        let data = |k: &str| {
            current
                .as_ref()
                .and_then(|s| s.data.as_ref())
                .and_then(|d| d.get(k))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        };
        let reusable = data("ca.crt").as_deref() == Some(self.ca.cert_pem.as_str())
            && data("tls.crt").is_some_and(|pem| !crate::ca::renewal_due(&pem))
            && data("tls.crt")
                .and_then(|pem| {
                    let der = rustls_pemfile::certs(&mut pem.as_bytes()).next()?.ok()?;
                    crate::ca::gateway_of(der.as_ref())
                })
                .as_ref()
                == Some(&gateway);
        let (cert, key) = match (reusable, data("tls.crt"), data("tls.key")) {
            (true, Some(c), Some(k)) => (c, k),
            _ => {
                let issued = self.ca.gateway_client(&gateway)?;
                (issued.cert_pem, issued.key_pem)
            }
        };
        let bytes = |s: &str| k8s_openapi::ByteString(s.as_bytes().to_vec());
        let secret = k8s_openapi::api::core::v1::Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name),
                ..meta.clone()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(std::collections::BTreeMap::from([
                ("ca.crt".to_string(), bytes(&self.ca.cert_pem)),
                ("tls.crt".to_string(), bytes(&cert)),
                ("tls.key".to_string(), bytes(&key)),
            ])),
            ..Default::default()
        };
        Ok(serde_json::to_value(secret)?)
    }

    fn api(&self, kind: &str, namespace: &str) -> Result<Api<DynamicObject>, String> {
        let ar = resource(kind).ok_or_else(|| format!("no resource known for kind {kind}"))?;
        Ok(Api::namespaced_with(self.client.clone(), namespace, &ar))
    }

    async fn apply(&self, kind: &str, key: &NsName, obj: &Value) -> Result<(), String> {
        let api = self.api(kind, &key.namespace)?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&key.name, &params, &Patch::Apply(obj))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn delete(&self, kind: &str, key: &NsName) -> Result<(), String> {
        let api = self.api(kind, &key.namespace)?;
        match api.delete(&key.name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}
