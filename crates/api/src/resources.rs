//! Loading Kubernetes manifests from files into a typed object store.
//!
//! The store holds objects exactly as `kubectl apply` would have accepted them: typed with the
//! `gateway-api` and `k8s-openapi` crates, unknown fields rejected, and the validation rules of
//! the CRD schemas that a real API server would enforce. Every error names the file, the object
//! and the field, so an operator can fix the manifest without guessing.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use gateway_api::backendtlspolicies::BackendTlsPolicy;
use gateway_api::experimental::gatewayclasses::GatewayClass;
use gateway_api::experimental::gateways::Gateway;
use gateway_api::experimental::grpcroutes::GrpcRoute;
use gateway_api::experimental::httproutes::HttpRoute;
use gateway_api::experimental::referencegrants::ReferenceGrant;
use gateway_api::experimental::tcproutes::TcpRoute;
use gateway_api::experimental::tlsroutes::TlsRoute;
use gateway_api::experimental::udproutes::UdpRoute;
use gateway_api::listenersets::ListenerSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::ByteString;

pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// A namespaced name, written `namespace/name`.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct NsName {
    pub namespace: String,
    pub name: String,
}

impl NsName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        NsName {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for NsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where an object came from: a document of a manifest file, or the Kubernetes API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File {
        file: PathBuf,
        /// 1-based document number within the file (0: the file as a whole).
        document: usize,
    },
    /// Read from the API server (the controller's watches); the object names itself.
    Cluster,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File { file, document: 0 } => write!(f, "{}", file.display()),
            Source::File { file, document } => {
                write!(f, "{} (document {document})", file.display())
            }
            Source::Cluster => f.write_str("cluster"),
        }
    }
}

/// One stored object with its origin and its creation rank.
#[derive(Clone, Debug)]
pub struct Object<T> {
    pub obj: T,
    pub source: Source,
    /// Creation order: objects with a `creationTimestamp` keep it; the others are ranked in the
    /// order they were read (files sorted by path, documents in order), as if applied in turn.
    pub created: (Option<i64>, usize),
}

/// Every object the gateway reads, keyed by name.
#[derive(Clone, Debug, Default)]
pub struct Store {
    pub namespaces: BTreeMap<String, Object<Namespace>>,
    pub gateway_classes: BTreeMap<String, Object<GatewayClass>>,
    pub gateways: BTreeMap<NsName, Object<Gateway>>,
    pub http_routes: BTreeMap<NsName, Object<HttpRoute>>,
    pub grpc_routes: BTreeMap<NsName, Object<GrpcRoute>>,
    pub tls_routes: BTreeMap<NsName, Object<TlsRoute>>,
    pub tcp_routes: BTreeMap<NsName, Object<TcpRoute>>,
    pub udp_routes: BTreeMap<NsName, Object<UdpRoute>>,
    pub reference_grants: BTreeMap<NsName, Object<ReferenceGrant>>,
    pub services: BTreeMap<NsName, Object<Service>>,
    pub endpoint_slices: BTreeMap<NsName, Object<EndpointSlice>>,
    pub secrets: BTreeMap<NsName, Object<Secret>>,
    pub config_maps: BTreeMap<NsName, Object<ConfigMap>>,
    pub backend_tls_policies: BTreeMap<NsName, Object<BackendTlsPolicy>>,
    pub listener_sets: BTreeMap<NsName, Object<ListenerSet>>,
    pub egress_policies: BTreeMap<NsName, Object<crate::egress::EgressPolicy>>,
    /// Objects of kinds the gateway does not serve, each reported as a warning by translation.
    pub skipped: Vec<Skipped>,
}

/// An object read but not served: its origin, `group` ("" for the core group), `kind`, and
/// `Kind namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub source: Source,
    pub group: String,
    pub kind: String,
    pub object: String,
}

/// An invalid manifest: the file, the object, the field and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", located(&origin.to_string(), object, field, message))]
pub struct ManifestError {
    pub origin: Source,
    /// `Kind namespace/name`, or what is known of it.
    pub object: String,
    /// JSON path of the field, `.` when the whole document is at fault.
    pub field: String,
    pub message: String,
}

/// `file: object: field: message`, leaving out the parts that are not known (`-`) or are the
/// whole document (`.`), so an error about a file's YAML reads `file: invalid YAML: ... at line
/// L column C`.
pub fn located(source: &str, object: &str, field: &str, message: &str) -> String {
    let mut out = String::new();
    for part in [source, object, field] {
        if !matches!(part, "" | "-" | ".") {
            out.push_str(part);
            out.push_str(": ");
        }
    }
    out.push_str(message);
    out
}

/// All errors found in one load; the load is rejected when this is not empty.
#[derive(Clone, Debug, thiserror::Error)]
pub struct LoadErrors(pub Vec<ManifestError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} invalid manifest(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// Generations the API server would have given objects that do not say their own: 1 when an
/// object is first seen, one more each time its spec changes. Kept across reloads, so status
/// `observedGeneration` moves as it would in a cluster.
#[derive(Default, Debug, Clone)]
pub struct Generations(std::collections::HashMap<(String, NsName), (u64, i64)>);

impl Generations {
    fn next<S: serde::Serialize>(
        &mut self,
        kind: &str,
        key: NsName,
        spec: &S,
        meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ) -> (String, NsName) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_string(spec).unwrap_or_default().hash(&mut h);
        let hash = h.finish();
        let id = (kind.to_string(), key);
        if let Some(g) = meta.generation {
            self.0.insert(id.clone(), (hash, g));
            return id;
        }
        let generation = match self.0.get(&id) {
            Some((old, g)) if *old == hash => *g,
            Some((_, g)) => g + 1,
            None => 1,
        };
        self.0.insert(id.clone(), (hash, generation));
        meta.generation = Some(generation);
        id
    }

    /// Gives every object of `store` that a controller writes status for its generation, and forgets
    /// objects that are gone.
    pub fn assign(&mut self, store: &mut Store) {
        let mut seen = std::collections::HashSet::new();
        for (name, o) in store.gateway_classes.iter_mut() {
            seen.insert(self.next(
                "GatewayClass",
                NsName::new("", name.clone()),
                &o.obj.spec,
                &mut o.obj.metadata,
            ));
        }
        for (key, o) in store.gateways.iter_mut() {
            seen.insert(self.next("Gateway", key.clone(), &o.obj.spec, &mut o.obj.metadata));
        }
        for (key, o) in store.http_routes.iter_mut() {
            seen.insert(self.next("HTTPRoute", key.clone(), &o.obj.spec, &mut o.obj.metadata));
        }
        for (key, o) in store.grpc_routes.iter_mut() {
            seen.insert(self.next("GRPCRoute", key.clone(), &o.obj.spec, &mut o.obj.metadata));
        }
        for (key, o) in store.tls_routes.iter_mut() {
            seen.insert(self.next("TLSRoute", key.clone(), &o.obj.spec, &mut o.obj.metadata));
        }
        for (key, o) in store.tcp_routes.iter_mut() {
            seen.insert(self.next("TCPRoute", key.clone(), &o.obj.spec, &mut o.obj.metadata));
        }
        for (key, o) in store.udp_routes.iter_mut() {
            seen.insert(self.next("UDPRoute", key.clone(), &o.obj.spec, &mut o.obj.metadata));
        }
        for (key, o) in store.listener_sets.iter_mut() {
            seen.insert(self.next("ListenerSet", key.clone(), &o.obj.spec, &mut o.obj.metadata));
        }
        for (key, o) in store.backend_tls_policies.iter_mut() {
            seen.insert(self.next(
                "BackendTLSPolicy",
                key.clone(),
                &o.obj.spec,
                &mut o.obj.metadata,
            ));
        }
        for (key, o) in store.egress_policies.iter_mut() {
            seen.insert(self.next(
                "EgressPolicy",
                key.clone(),
                &o.obj.spec,
                &mut o.obj.metadata,
            ));
        }
        self.0.retain(|k, _| seen.contains(k));
    }
}

/// The data of a Secret, with `stringData` merged over `data` as the API server does.
pub fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, ByteString(v))| (k, v))
        .collect();
    for (k, v) in secret.string_data.clone().unwrap_or_default() {
        out.insert(k, v.into_bytes());
    }
    out
}

/// The labels of a namespace, including the `kubernetes.io/metadata.name` label the API
/// server sets on every namespace. Namespaces not in the manifests exist implicitly.
pub fn namespace_labels(store: &Store, namespace: &str) -> BTreeMap<String, String> {
    let mut labels = store
        .namespaces
        .get(namespace)
        .and_then(|n| n.obj.metadata.labels.clone())
        .unwrap_or_default();
    labels.insert(
        "kubernetes.io/metadata.name".to_string(),
        namespace.to_string(),
    );
    labels
}
