//! The controller's view of the cluster: one reflector (a watch and its cache) per kind the
//! translation reads, and the object store built from their caches, the same `Store` the
//! standalone gateway loads from files. Namespaces, Secrets and ConfigMaps are watched as
//! metadata only; the Secrets and ConfigMaps translation references
//! (`sluice_translate::referenced_secrets`, `referenced_config_maps`) are then read by name,
//! again only when their resourceVersion changed, and no other one's data is read.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures_util::StreamExt;
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
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store as Cache};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, Notify};
use tracing::{debug, warn};

use sluice_api::egress::{EgressPolicy, POLICY_GROUP};
use sluice_api::resources::{NsName, Object, Source, Store};

/// The EgressPolicy resource, watched as a dynamic object (our CRD type carries no kube
/// derive) and converted with serde.
pub fn egress_policy_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(POLICY_GROUP, "v1alpha1", "EgressPolicy"),
        "egresspolicies",
    )
}

/// The caches of every watched kind. `changed` is notified after every event of any watch.
#[derive(Clone)]
pub struct Watches {
    pub changed: Arc<Notify>,
    gateway_classes: Cache<GatewayClass>,
    gateways: Cache<Gateway>,
    listener_sets: Cache<ListenerSet>,
    http_routes: Cache<HttpRoute>,
    grpc_routes: Cache<GrpcRoute>,
    tls_routes: Cache<TlsRoute>,
    /// TCPRoutes and UDPRoutes are watched as dynamic objects of their `v1` version: the
    /// typed ones of the gateway-api crate are `v1alpha2`, which v1.6's CRDs no longer serve.
    tcp_routes: Cache<DynamicObject>,
    udp_routes: Cache<DynamicObject>,
    reference_grants: Cache<ReferenceGrant>,
    backend_tls_policies: Cache<BackendTlsPolicy>,
    services: Cache<Service>,
    endpoint_slices: Cache<EndpointSlice>,
    secrets: ByName<Secret>,
    config_maps: ByName<ConfigMap>,
    namespaces: Cache<PartialObjectMeta<Namespace>>,
    egress_policies: Cache<DynamicObject>,
}

/// The route kinds added after HTTPRoute whose CRDs may be missing from a cluster (older or
/// partial Gateway API installs): GRPCRoute, TLSRoute, TCPRoute, UDPRoute at `v1`.
const OPTIONAL_ROUTE_KINDS: &[(&str, &str)] = &[
    ("GRPCRoute", "grpcroutes"),
    ("TLSRoute", "tlsroutes"),
    ("TCPRoute", "tcproutes"),
    ("UDPRoute", "udproutes"),
];

/// Which of `OPTIONAL_ROUTE_KINDS` the API server serves at `v1`. A kind it answers 404 for is
/// not watched (its cache is empty and ready), with a warning: a watch of a missing resource
/// would never list, and nothing would be translated. Any other error counts as served (the
/// watch retries).
pub async fn served_route_kinds(client: &Client) -> Vec<&'static str> {
    let mut served = Vec::new();
    for (kind, plural) in OPTIONAL_ROUTE_KINDS {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(sluice_api::resources::GATEWAY_GROUP, "v1", kind),
            plural,
        );
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
        match api
            .list_metadata(&kube::api::ListParams::default().limit(1))
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 404 => warn!(
                "{kind} is not served by the API server at gateway.networking.k8s.io/v1 (its \
                 CRD is missing or older); {kind}s are not read"
            ),
            _ => served.push(*kind),
        }
    }
    served
}

/// A cache with nothing in it, ready: for a kind the API server does not serve.
fn empty<K>(dynamic: K::DynamicType) -> Cache<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let mut writer = reflector::store::Writer::new(dynamic);
    let reader = writer.as_reader();
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

impl Watches {
    /// Starts every watch (each retries with backoff on its own), of the optional route kinds
    /// only those `served`. Call `ready` before reading.
    pub fn start(client: &Client, served: &[&str]) -> Watches {
        let changed = Arc::new(Notify::new());
        let n = &changed;
        let egress = Api::<DynamicObject>::all_with(client.clone(), &egress_policy_resource());
        Watches {
            gateway_classes: watch(Api::all(client.clone()), n, "GatewayClass"),
            gateways: watch(Api::all(client.clone()), n, "Gateway"),
            listener_sets: watch(Api::all(client.clone()), n, "ListenerSet"),
            http_routes: watch(Api::all(client.clone()), n, "HTTPRoute"),
            grpc_routes: match served.contains(&"GRPCRoute") {
                true => watch(Api::all(client.clone()), n, "GRPCRoute"),
                false => empty(()),
            },
            tls_routes: match served.contains(&"TLSRoute") {
                true => watch(Api::all(client.clone()), n, "TLSRoute"),
                false => empty(()),
            },
            tcp_routes: match served.contains(&"TCPRoute") {
                true => watch_dynamic(
                    Api::all_with(client.clone(), &l4_route_resource("TCPRoute")),
                    l4_route_resource("TCPRoute"),
                    n,
                    "TCPRoute",
                ),
                false => empty(l4_route_resource("TCPRoute")),
            },
            udp_routes: match served.contains(&"UDPRoute") {
                true => watch_dynamic(
                    Api::all_with(client.clone(), &l4_route_resource("UDPRoute")),
                    l4_route_resource("UDPRoute"),
                    n,
                    "UDPRoute",
                ),
                false => empty(l4_route_resource("UDPRoute")),
            },
            reference_grants: watch(Api::all(client.clone()), n, "ReferenceGrant"),
            backend_tls_policies: watch(Api::all(client.clone()), n, "BackendTLSPolicy"),
            services: watch(Api::all(client.clone()), n, "Service"),
            endpoint_slices: watch(Api::all(client.clone()), n, "EndpointSlice"),
            secrets: ByName::start(client, n, "Secret"),
            config_maps: ByName::start(client, n, "ConfigMap"),
            // Metadata only: translation reads a namespace's labels.
            namespaces: watch(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                n,
                "Namespace",
            ),
            egress_policies: watch_dynamic(egress, egress_policy_resource(), n, "EgressPolicy"),
            changed,
        }
    }

    /// Waits until every cache holds a complete first list: translating a partial view would
    /// write wrong status (a route's Service not seen yet is not a missing Service).
    pub async fn ready(&self) -> anyhow::Result<()> {
        macro_rules! wait {
            ($($f:ident),*) => {
                $( self.$f.wait_until_ready().await.map_err(|e| {
                    anyhow::anyhow!("the watch of {} stopped before its first list: {e}", stringify!($f))
                })?; )*
            };
        }
        wait!(
            gateway_classes,
            gateways,
            listener_sets,
            http_routes,
            grpc_routes,
            tls_routes,
            tcp_routes,
            udp_routes,
            reference_grants,
            backend_tls_policies,
            services,
            endpoint_slices,
            namespaces,
            egress_policies
        );
        self.secrets.ready().await?;
        self.config_maps.ready().await?;
        Ok(())
    }

    /// The objects as the caches hold them now, with the referenced Secrets and ConfigMaps
    /// read.
    pub async fn store(&self) -> anyhow::Result<Store> {
        let mut store = self.store_without_data();
        store.secrets = self
            .secrets
            .read(&sluice_translate::referenced_secrets(&store))
            .await?;
        store.config_maps = self
            .config_maps
            .read(&sluice_translate::referenced_config_maps(&store))
            .await?;
        Ok(store)
    }

    fn store_without_data(&self) -> Store {
        let mut store = Store {
            gateway_classes: cluster_scoped(&self.gateway_classes),
            gateways: namespaced(&self.gateways),
            listener_sets: namespaced(&self.listener_sets),
            http_routes: namespaced(&self.http_routes),
            grpc_routes: namespaced(&self.grpc_routes),
            tls_routes: namespaced(&self.tls_routes),
            reference_grants: namespaced(&self.reference_grants),
            backend_tls_policies: namespaced(&self.backend_tls_policies),
            services: namespaced(&self.services),
            endpoint_slices: namespaced(&self.endpoint_slices),
            ..Store::default()
        };
        for meta in self.namespaces.state() {
            let ns = Namespace {
                metadata: meta.metadata.clone(),
                ..Namespace::default()
            };
            store
                .namespaces
                .insert(meta.name_any(), object(ns, &meta.metadata));
        }
        for (cache, kind) in [
            (&self.tcp_routes, "TCPRoute"),
            (&self.udp_routes, "UDPRoute"),
        ] {
            for dynamic in cache.state() {
                let key = key_of(&dynamic.metadata);
                let meta = &dynamic.metadata;
                let parsed = if kind == "TCPRoute" {
                    from_dynamic::<TcpRoute>(&dynamic).map(|r| {
                        store.tcp_routes.insert(key.clone(), object(r, meta));
                    })
                } else {
                    from_dynamic::<UdpRoute>(&dynamic).map(|r| {
                        store.udp_routes.insert(key.clone(), object(r, meta));
                    })
                };
                if let Err(e) = parsed {
                    warn!(route = %key, "{kind} does not parse, left out: {e}");
                }
            }
        }
        for dynamic in self.egress_policies.state() {
            let key = key_of(&dynamic.metadata);
            match from_dynamic::<EgressPolicy>(&dynamic) {
                Ok(p) => {
                    store
                        .egress_policies
                        .insert(key, object(p, &dynamic.metadata));
                }
                // The API server checked it against our CRD's schema; what still fails here
                // is a field the schema allows and the type does not.
                Err(e) => warn!(policy = %key, "EgressPolicy does not parse, left out: {e}"),
            }
        }
        store
    }

    /// The routes (every kind) and BackendTLSPolicies whose status holds an entry of
    /// `controller` in `parents`/`ancestors`, as `(kind, key)`.
    pub fn with_entries_of(&self, controller: &str) -> Vec<(&'static str, NsName)> {
        /// The objects of `cache` whose serialized `status.<list>` has an entry of `controller`
        /// (typed and dynamic objects alike serialize their status under `status`).
        fn ours<K>(
            cache: &Cache<K>,
            kind: &'static str,
            list: &str,
            controller: &str,
            out: &mut Vec<(&'static str, NsName)>,
        ) where
            K: Resource + serde::Serialize + Clone,
            K::DynamicType: Eq + Hash + Clone,
        {
            for o in cache.state() {
                let v = serde_json::to_value(&*o).unwrap_or_default();
                let has = v["status"][list]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e["controllerName"] == controller));
                if has {
                    out.push((kind, key_of(o.meta())));
                }
            }
        }
        let mut out = Vec::new();
        ours(
            &self.http_routes,
            "HTTPRoute",
            "parents",
            controller,
            &mut out,
        );
        ours(
            &self.grpc_routes,
            "GRPCRoute",
            "parents",
            controller,
            &mut out,
        );
        ours(
            &self.tls_routes,
            "TLSRoute",
            "parents",
            controller,
            &mut out,
        );
        ours(
            &self.tcp_routes,
            "TCPRoute",
            "parents",
            controller,
            &mut out,
        );
        ours(
            &self.udp_routes,
            "UDPRoute",
            "parents",
            controller,
            &mut out,
        );
        let policies = &self.backend_tls_policies;
        ours(
            policies,
            "BackendTLSPolicy",
            "ancestors",
            controller,
            &mut out,
        );
        out
    }

    /// The first address in each Gateway's status, as written before (by an earlier run):
    /// local gateways keep their pool address across controller restarts.
    pub fn status_addresses(&self) -> BTreeMap<NsName, std::net::IpAddr> {
        self.gateways
            .state()
            .iter()
            .filter_map(|g| {
                let ip = g
                    .status
                    .as_ref()?
                    .addresses
                    .as_ref()?
                    .first()?
                    .value
                    .parse()
                    .ok()?;
                Some((key_of(&g.metadata), ip))
            })
            .collect()
    }

    /// A Gateway, GatewayClass or route as cached now, for the status writer.
    pub fn live(&self, kind: &str, key: &NsName) -> Option<serde_json::Value> {
        fn get<K: Resource<DynamicType = ()> + Clone + serde::Serialize>(
            cache: &Cache<K>,
            key: &NsName,
            namespaced: bool,
        ) -> Option<serde_json::Value> {
            let r = if namespaced {
                reflector::ObjectRef::new(&key.name).within(&key.namespace)
            } else {
                reflector::ObjectRef::new(&key.name)
            };
            cache.get(&r).and_then(|o| serde_json::to_value(&*o).ok())
        }
        match kind {
            "GatewayClass" => get(&self.gateway_classes, key, false),
            "Gateway" => get(&self.gateways, key, true),
            "ListenerSet" => get(&self.listener_sets, key, true),
            "HTTPRoute" => get(&self.http_routes, key, true),
            "GRPCRoute" => get(&self.grpc_routes, key, true),
            "TLSRoute" => get(&self.tls_routes, key, true),
            "TCPRoute" | "UDPRoute" => {
                let cache = if kind == "TCPRoute" {
                    &self.tcp_routes
                } else {
                    &self.udp_routes
                };
                let r = reflector::ObjectRef::new_with(&key.name, l4_route_resource(kind))
                    .within(&key.namespace);
                cache.get(&r).and_then(|o| serde_json::to_value(&*o).ok())
            }
            "BackendTLSPolicy" => get(&self.backend_tls_policies, key, true),
            "EgressPolicy" => {
                let r = reflector::ObjectRef::new_with(&key.name, egress_policy_resource())
                    .within(&key.namespace);
                self.egress_policies
                    .get(&r)
                    .and_then(|o| serde_json::to_value(&*o).ok())
            }
            _ => None,
        }
    }
}

/// A kind watched as metadata only (`Api<PartialObjectMeta<_>>` asks for nothing else), whose
/// objects are read by name when translation references them.
#[derive(Clone)]
struct ByName<K: Resource<DynamicType = ()> + Clone + 'static> {
    meta: Cache<PartialObjectMeta<K>>,
    /// The referenced objects as last read.
    read: Arc<Mutex<BTreeMap<NsName, Object<K>>>>,
    client: Client,
    kind: &'static str,
}

impl<K> ByName<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    fn start(client: &Client, changed: &Arc<Notify>, kind: &'static str) -> Self {
        ByName {
            meta: watch(
                Api::<PartialObjectMeta<K>>::all(client.clone()),
                changed,
                kind,
            ),
            read: Arc::default(),
            client: client.clone(),
            kind,
        }
    }

    async fn ready(&self) -> anyhow::Result<()> {
        self.meta.wait_until_ready().await.map_err(|e| {
            anyhow::anyhow!(
                "the watch of {} stopped before its first list: {e}",
                self.kind
            )
        })
    }

    /// The objects of `wanted` that exist (per the metadata watch); one read already held at
    /// the same resourceVersion is not read again. A failed read keeps the copy read before,
    /// if any (a running gateway keeps its certificate through an API error); an object that
    /// exists and was never read is an error, so that nothing is translated as if it were
    /// missing.
    async fn read(
        &self,
        wanted: &std::collections::BTreeSet<NsName>,
    ) -> anyhow::Result<BTreeMap<NsName, Object<K>>> {
        let mut read = self.read.lock().await;
        read.retain(|k, _| wanted.contains(k));
        for key in wanted {
            let r = reflector::ObjectRef::new(&key.name).within(&key.namespace);
            let Some(meta) = self.meta.get(&r) else {
                read.remove(key);
                continue;
            };
            let version = &meta.metadata.resource_version;
            if read
                .get(key)
                .is_some_and(|o| &o.obj.meta().resource_version == version)
            {
                continue;
            }
            let api = Api::<K>::namespaced(self.client.clone(), &key.namespace);
            match api.get_opt(&key.name).await {
                Ok(Some(obj)) => {
                    let m = obj.meta().clone();
                    read.insert(key.clone(), object(obj, &m));
                }
                Ok(None) => {
                    read.remove(key);
                }
                Err(e) if read.contains_key(key) => {
                    warn!(kind = self.kind, object = %key, "reading a referenced object failed, using the copy read before: {e}");
                }
                Err(e) => anyhow::bail!("reading {} {key} failed: {e}", self.kind),
            }
        }
        Ok(read.clone())
    }
}

/// The `v1` resource of TCPRoute or UDPRoute.
fn l4_route_resource(kind: &str) -> ApiResource {
    let plural = if kind == "TCPRoute" {
        "tcproutes"
    } else {
        "udproutes"
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(sluice_api::resources::GATEWAY_GROUP, "v1", kind),
        plural,
    )
}

/// A dynamic object as its type (the API server checked it against the CRD's schema).
fn from_dynamic<T: serde::de::DeserializeOwned>(d: &DynamicObject) -> Result<T, serde_json::Error> {
    let mut v = serde_json::to_value(d)?;
    if let Some(o) = v.as_object_mut() {
        // Status is ours to write, not part of the policy.
        o.remove("status");
    }
    serde_json::from_value(v)
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> NsName {
    NsName::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// A cached object as the store holds it: its origin is the cluster, its rank its creation
/// time (ties are broken by name, as the Gateway API orders them).
fn object<T>(
    obj: T,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Object<T> {
    Object {
        obj,
        source: Source::Cluster,
        created: (meta.creation_timestamp.as_ref().map(|t| t.0.as_second()), 0),
    }
}

fn namespaced<K>(cache: &Cache<K>) -> BTreeMap<NsName, Object<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    collect(cache, key_of)
}

fn cluster_scoped<K>(cache: &Cache<K>) -> BTreeMap<String, Object<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    collect(cache, |m| m.name.clone().unwrap_or_default())
}

fn collect<K, Key: Ord + Hash>(
    cache: &Cache<K>,
    key: impl Fn(&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key,
) -> BTreeMap<Key, Object<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    cache
        .state()
        .into_iter()
        .map(|o| {
            let meta = o.meta().clone();
            (key(&meta), object((*o).clone(), &meta))
        })
        .collect()
}

/// Runs one reflector: every event updates the cache, then notifies `changed`. Watch errors
/// (a CRD not installed yet, RBAC, the API server away) are logged and retried with backoff.
fn watch<K>(api: Api<K>, changed: &Arc<Notify>, kind: &'static str) -> Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer);
    spawn_events(stream, changed.clone(), kind);
    reader
}

fn watch_dynamic(
    api: Api<DynamicObject>,
    resource: ApiResource,
    changed: &Arc<Notify>,
    kind: &'static str,
) -> Cache<DynamicObject> {
    let writer = reflector::store::Writer::new(resource);
    let reader = writer.as_reader();
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer);
    spawn_events(stream, changed.clone(), kind);
    reader
}

pub(crate) fn spawn_events<S, T>(stream: S, changed: Arc<Notify>, kind: &'static str)
where
    S: futures_util::Stream<Item = Result<watcher::Event<T>, watcher::Error>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => {
                    debug!(kind, "watch event");
                    changed.notify_one();
                }
                Err(e) => warn!(kind, "watch failed, retrying: {e}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache of a kind the API server does not serve is ready at once and empty, so
    /// `Watches::ready` does not wait for it.
    #[tokio::test]
    async fn the_cache_of_an_unserved_kind_is_ready_and_empty() {
        let typed: Cache<TlsRoute> = empty(());
        let dynamic: Cache<DynamicObject> = empty(l4_route_resource("UDPRoute"));
        tokio::time::timeout(std::time::Duration::from_secs(1), async {
            typed.wait_until_ready().await.unwrap();
            dynamic.wait_until_ready().await.unwrap();
        })
        .await
        .expect("ready without a watch");
        assert!(typed.state().is_empty() && dynamic.state().is_empty());
    }
}
