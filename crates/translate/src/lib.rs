//! The one translation from Gateway API objects to proxy configuration and status.
//!
//! `translate` is a pure function: the same store and options give the same snapshot and the
//! same status, with no I/O and no clock (the condition timestamp is an input). The standalone
//! file provider and the Kubernetes controller both call it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use gateway_api::experimental::gateways::{Gateway, GatewayListeners};
use gateway_api::experimental::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesFilters, HttpRouteRulesFiltersRequestHeaderModifier,
    HttpRouteRulesFiltersRequestRedirectPathType, HttpRouteRulesFiltersRequestRedirectScheme,
    HttpRouteRulesFiltersType, HttpRouteRulesFiltersUrlRewritePathType, HttpRouteRulesMatches,
    HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesPathType,
    HttpRouteRulesMatchesQueryParamsType,
};
use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use regex::Regex;
use serde::Serialize;

use sluice_api::resources::{namespace_labels, secret_data, NsName, Object, Store, GATEWAY_GROUP};
pub use sluice_config::TlsPem;
use sluice_config::{
    BackendTarget, Bind, ClientValidation, Cluster, ClusterId, Config, Header, HeaderMatch,
    HeaderModifier, HostRoutes, Listener, Mirror, PathMatch, PathModifier, Protocol, QueryMatch,
    Redirect, Route, RouteId, RouteMatch, RouteTable, RuleAction, ServerTls, StringMatch,
    UrlRewrite, WeightedBackend,
};

pub mod grpc;
pub mod infra;
pub mod l4;
pub mod presentation;
pub mod unserved;

mod attach;
mod backend_tls;
mod backends;
mod certs;
mod egress;
mod filters;
mod listeners;
mod rules;
mod status;

use attach::*;
use backend_tls::*;
use backends::*;
use certs::*;
use egress::*;
use filters::*;
use listeners::*;
use rules::*;
use status::*;

pub use attach::intersect_hostnames;
pub use certs::{ca_certificates, certified_key, referenced_config_maps, referenced_secrets};
pub use egress::LastValidPolicy;
pub use sluice_api::pem::certified_key_from_pem;

pub const DEFAULT_CONTROLLER_NAME: &str = "sluice.dev/gateway-controller";

/// The Gateway API features (v1.6) an accepted GatewayClass of ours lists in
/// `status.supportedFeatures`: every one whose upstream conformance tests our cases cover,
/// sorted as the CRD requires. Left out: HTTPRouteRetryBackendTimeout and
/// HTTPRouteRetryConnectionError (no upstream test checks them), and the mesh features (not
/// served yet).
pub const SUPPORTED_FEATURES: &[&str] = &[
    "BackendTLSPolicy",
    "BackendTLSPolicySANValidation",
    "GRPCRoute",
    "GRPCRouteNamedRouteRule",
    "Gateway",
    "GatewayAddressEmpty",
    "GatewayBackendClientCertificate",
    "GatewayFrontendClientCertificateValidation",
    "GatewayFrontendClientCertificateValidationInsecureFallback",
    "GatewayHTTPListenerIsolation",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "GatewayInfrastructure",
    "GatewayPort8080",
    "GatewayStaticAddresses",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendTimeout",
    "HTTPRouteCORS",
    "HTTPRouteDestinationPortMatching",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteRetry",
    "HTTPRouteSchemeRedirect",
    "ListenerSet",
    "ReferenceGrant",
    "TCPRoute",
    "TLSRoute",
    "TLSRouteModeMixed",
    "TLSRouteModeTerminate",
    "UDPRoute",
];

/// The features a GatewayClass of ours lists: [`SUPPORTED_FEATURES`], less
/// GatewayStaticAddresses for a controller whose Gateways' Services may not take requested
/// addresses (cluster mode without `--service-external-ips`).
pub fn supported_features(opts: &Options) -> Vec<&'static str> {
    let static_addresses = !opts.infra.addresses_from_service || opts.infra.external_ips;
    SUPPORTED_FEATURES
        .iter()
        .copied()
        .filter(|f| static_addresses || *f != "GatewayStaticAddresses")
        .collect()
}

/// The time for `Options::now`: whole seconds, as the API server stores condition times.
pub fn condition_time_now() -> k8s_openapi::jiff::Timestamp {
    let t = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// What translation needs besides the objects.
#[derive(Clone, Debug)]
pub struct Options {
    pub controller_name: String,
    /// Address for Gateways without `spec.addresses` when there is no pool.
    pub bind: IpAddr,
    /// Addresses handed out to Gateways without `spec.addresses`, in order.
    pub address_pool: Option<IpNet>,
    /// The time written as `lastTransitionTime` of new conditions.
    pub now: k8s_openapi::jiff::Timestamp,
    /// Snapshot version.
    pub version: u64,
    /// How the resources that run each Gateway in a cluster are rendered.
    pub infra: crate::infra::InfraOptions,
    /// The last valid content of each TLS Secret a listener used (`Translation::tls_last_good`
    /// of the previous translation). A listener whose Secret became invalid keeps serving it.
    pub tls_last_good: BTreeMap<NsName, TlsPem>,
    /// The last valid version of each EgressPolicy (`Translation::egress_last_good` of the
    /// previous translation): an EgressPolicy that became invalid keeps it in force.
    pub egress_last_good: BTreeMap<NsName, LastValidPolicy>,
    /// The sockets the engine could not open when it applied the previous translation, with
    /// the error (a port another process holds, an address not on this host). Their listeners
    /// stay in the configuration, so the engine tries again, and status reports them as not
    /// accepted (PortUnavailable) and not programmed.
    pub bind_failures: BTreeMap<SocketAddr, String>,
    /// The addresses the pool gave each Gateway last time (`Translation::pool_assigned` of the
    /// previous translation): a Gateway keeps its address while it is in the pool and free,
    /// whatever Gateways come and go around it.
    pub pool_last: BTreeMap<NsName, IpAddr>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            controller_name: DEFAULT_CONTROLLER_NAME.into(),
            bind: IpAddr::from([127, 0, 0, 1]),
            address_pool: None,
            now: k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            version: 0,
            infra: crate::infra::InfraOptions::default(),
            tls_last_good: BTreeMap::new(),
            egress_last_good: BTreeMap::new(),
            bind_failures: BTreeMap::new(),
            pool_last: BTreeMap::new(),
        }
    }
}

/// The status of one object, exactly as a controller would write it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ObjectStatus {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: StatusMeta,
    pub status: serde_json::Value,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StatusMeta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// A problem worth an operator's attention that does not stop the configuration from applying
/// (it is also visible in status).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Warning {
    pub source: String,
    pub object: String,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&sluice_api::resources::located(
            &self.source,
            &self.object,
            &self.field,
            &self.message,
        ))
    }
}

pub struct Translation {
    pub config: Config,
    pub statuses: Vec<ObjectStatus>,
    pub warnings: Vec<Warning>,
    /// What runs each accepted Gateway in a cluster, with its `spec.infrastructure` metadata.
    pub infrastructure: Vec<crate::infra::GatewayInfra>,
    /// The last valid content of every TLS Secret a listener references: its content now when
    /// valid, else what `Options::tls_last_good` held. Pass it to the next translation.
    pub tls_last_good: BTreeMap<NsName, TlsPem>,
    /// The last valid version of every EgressPolicy; pass it to the next translation.
    pub egress_last_good: BTreeMap<NsName, LastValidPolicy>,
    /// The address the pool gave each Gateway; pass it to the next translation.
    pub pool_assigned: BTreeMap<NsName, IpAddr>,
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: k8s_openapi::jiff::Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// A listener's state while routes are attached to it.
struct ListenerState {
    /// The ListenerSet that declares this listener; `None` for the Gateway's own listeners.
    owner: Option<NsName>,
    name: String,
    port: u16,
    protocol: Option<Protocol>,
    /// `protocol` as written, for conflicts with listeners of protocols we do not serve.
    raw_protocol: String,
    hostname: Option<String>,
    /// Route kinds it accepts (empty when none is supported).
    kinds: Vec<String>,
    allowed: AllowedNamespaces,
    accepted: (bool, &'static str, String),
    resolved_refs: (bool, &'static str, String),
    conflicted: Option<(&'static str, String)>,
    /// The listener's certificate, checked (from its Secret, or the Secret's last valid content).
    cert: Option<TlsPem>,
    /// Its Secret is invalid now, and `cert` is the Secret's last valid content.
    serving_last_good: bool,
    /// Client certificate validation of this HTTPS listener (from `spec.tls.frontend`).
    client_validation: Option<ClientValidation>,
    attached: i32,
    /// The hostnames each route attached here serves on it, by kind: an HTTPRoute and a
    /// GRPCRoute whose hostnames intersect cannot both attach (the older one does).
    hostnames_by_route: Vec<(RouteKind, NsName, Vec<Option<String>>)>,
    routes: Vec<PendingRoute>,
    /// The engine could not open this listener's socket (`Options::bind_failures`): why.
    unbound: Option<String>,
}

impl ListenerState {
    fn programmed(&self) -> bool {
        self.accepted.0
            && (self.resolved_refs.0 || self.serving_last_good)
            && self.conflicted.is_none()
    }
}

enum AllowedNamespaces {
    Same,
    All,
    Selector(gateway_api::experimental::gateways::GatewayListenersAllowedRoutesNamespacesSelector),
}

struct GatewayState<'a> {
    key: NsName,
    obj: &'a Object<Gateway>,
    address: Result<IpAddr, (&'static str, String)>,
    /// `address` is the pool's.
    from_pool: bool,
    listeners: Vec<ListenerState>,
    /// ListenerSets whose parent is this Gateway, in precedence order, and whether they are
    /// allowed to attach.
    listener_sets: Vec<(
        NsName,
        &'a Object<gateway_api::listenersets::ListenerSet>,
        bool,
    )>,
    /// `spec.tls.backend.clientCertificateRef`: the certificate, or why it cannot be used.
    backend_cert: Option<Result<TlsPem, (&'static str, String)>>,
    /// Requested addresses this controller may not use, and why (cluster mode).
    unusable_address: Option<String>,
}

/// The route kinds, all attached with the HTTPRoute machinery: a GRPCRoute as the HTTPRoute it
/// means (`grpc::as_http_route`), a TLSRoute, TCPRoute or UDPRoute as one catch-all match per
/// rule (`l4::as_http_route`); each is reported under its own kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum RouteKind {
    Http,
    Grpc,
    Tls,
    Tcp,
    Udp,
}

impl RouteKind {
    fn name(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
            RouteKind::Tls => "TLSRoute",
            RouteKind::Tcp => "TCPRoute",
            RouteKind::Udp => "UDPRoute",
        }
    }

    /// An HTTPRoute and a GRPCRoute may not share a hostname on a listener.
    fn conflicts_with(self, other: RouteKind) -> bool {
        matches!(
            (self, other),
            (RouteKind::Http, RouteKind::Grpc) | (RouteKind::Grpc, RouteKind::Http)
        )
    }

    /// Its backends' connections may be TLS by a BackendTLSPolicy (a TCPRoute's and a
    /// UDPRoute's never are).
    fn takes_backend_tls(self) -> bool {
        !matches!(self, RouteKind::Tcp | RouteKind::Udp)
    }
}

/// A route match waiting to be placed in a listener's route table.
struct PendingRoute {
    hostnames: Vec<Option<String>>,
    route: RouteId,
    order: RouteOrder,
}

/// The Gateway API precedence of a match, as a sort key (smaller first).
///
/// Within one hostname, precedence goes to:
/// 1. an Exact path match, then the longest PathPrefix (regex matches after prefixes, longest
///    pattern first; their precedence is implementation-specific);
/// 2. a method match;
/// 3. the most header matches;
/// 4. the most query parameter matches;
/// 5. then the oldest Route, then `namespace/name` alphabetically, then rule and match order.
///
/// A GRPCRoute's matches (never in one hostname's table with an HTTPRoute's) order by the
/// characters of the service matched (`path_len`), then of the method (`grpc_method_len`),
/// then the header matches, as GRPCRoute's precedence says; `path_kind` is the same for all.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RouteOrder {
    path_kind: std::cmp::Reverse<u8>,
    path_len: std::cmp::Reverse<usize>,
    grpc_method_len: std::cmp::Reverse<usize>,
    method: std::cmp::Reverse<bool>,
    headers: std::cmp::Reverse<usize>,
    query: std::cmp::Reverse<usize>,
    created: (Option<i64>, usize),
    route: NsName,
    rule: usize,
    matcher: usize,
}

/// Translates every object into one snapshot and the status of every object we own.
pub fn translate(store: &Store, opts: &Options) -> Translation {
    let mut statuses = Vec::new();
    let mut warnings = Vec::new();
    let mut tls_memory = TlsMemory {
        previous: &opts.tls_last_good,
        next: BTreeMap::new(),
    };

    let our_classes = gateway_classes(store, opts, &mut statuses);
    // Our Gateways, oldest first: the older Gateway keeps a contested address and port.
    let mut gateways: Vec<(&NsName, &Object<Gateway>)> = store
        .gateways
        .iter()
        .filter(|(_, g)| our_classes.contains(&g.obj.spec.gateway_class_name))
        .collect();
    gateways.sort_by(|a, b| (a.1.created, a.0).cmp(&(b.1.created, b.0)));
    crate::unserved::skipped_objects(store, &mut warnings);
    crate::unserved::gateway_classes(store, &opts.controller_name, gateways.len(), &mut warnings);

    let mut states = gateway_states(store, opts, &gateways, &mut warnings, &mut tls_memory);
    let pool_assigned: BTreeMap<NsName, IpAddr> = states
        .iter()
        .filter(|st| st.from_pool)
        .filter_map(|st| Some((st.key.clone(), *st.address.as_ref().ok()?)))
        .collect();
    claim_ports(&mut states);
    mark_unbound(&mut states, &opts.bind_failures);

    // BackendTLSPolicies, then routes, oldest first.
    let mut config = Config {
        version: opts.version,
        ..Config::default()
    };
    let (tls, policy_states) = backend_tls_policies(store, &mut config);
    let mut tables = Tables {
        config,
        clusters: HashMap::new(),
        tls,
        without_endpoints: Vec::new(),
        route_kind: RouteKind::Http,
    };
    let routes = routes_oldest_first(store, &mut warnings);
    for (key, route, kind) in &routes {
        tables.route_kind = *kind;
        if let Some(st) = attach_http_route(
            store,
            key,
            route,
            &mut states,
            &mut tables,
            &mut warnings,
            opts,
        ) {
            statuses.push(st);
        }
    }
    warn_without_endpoints(store, &tables, &mut warnings);

    let (egress, egress_last_good) = egress_policies(store, opts, &mut statuses, &mut warnings);

    // Gateway status and the snapshot.
    let mut config = tables.config;
    config.egress = egress;
    let our_gateways: HashSet<NsName> = states.iter().map(|s| s.key.clone()).collect();
    let mut infrastructure = Vec::new();
    for st in states {
        let ports: Vec<(u16, crate::infra::Transport)> = st
            .listeners
            .iter()
            .filter(|l| l.accepted.0)
            .map(|l| {
                let transport = if l.protocol == Some(Protocol::Udp) {
                    crate::infra::Transport::Udp
                } else {
                    crate::infra::Transport::Tcp
                };
                (l.port, transport)
            })
            .collect();
        let from_service = opts
            .infra
            .addresses_from_service
            .then(|| service_addresses(store, &st.key));
        let out = gateway_status(&st, &mut config, opts.now, from_service);
        let accepted = out.iter().any(|s| {
            s.kind == "Gateway"
                && s.status["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Accepted" && c["status"] == "True")
                })
        });
        if accepted {
            infrastructure.push(crate::infra::render(&st.obj.obj, &ports, &opts.infra));
        }
        statuses.extend(out);
    }
    config.binds.sort_by_key(|b| b.addr);
    statuses.extend(policy_statuses(
        &routes,
        &policy_states,
        &our_gateways,
        opts,
    ));
    statuses.sort_by(|a, b| {
        (kind_rank(&a.kind), &a.metadata.namespace, &a.metadata.name).cmp(&(
            kind_rank(&b.kind),
            &b.metadata.namespace,
            &b.metadata.name,
        ))
    });
    Translation {
        config,
        statuses,
        warnings,
        infrastructure,
        tls_last_good: tls_memory.next,
        egress_last_good,
        pool_assigned,
    }
}

/// Every route (GRPCRoutes, TLSRoutes, TCPRoutes and UDPRoutes as the HTTPRoutes they mean),
/// oldest first: of an HTTPRoute and a GRPCRoute that claim one hostname, the older attaches.
fn routes_oldest_first<'a>(
    store: &'a Store,
    warnings: &mut Vec<Warning>,
) -> Vec<(NsName, std::borrow::Cow<'a, Object<HttpRoute>>, RouteKind)> {
    use std::borrow::Cow;
    let mut routes: Vec<_> = store
        .http_routes
        .iter()
        .map(|(k, r)| (k.clone(), Cow::Borrowed(r), RouteKind::Http))
        .collect();
    let mut converted = |key: &NsName,
                         source: &sluice_api::resources::Source,
                         created: (Option<i64>, usize),
                         kind: RouteKind,
                         obj: Result<HttpRoute, String>| {
        match obj {
            Ok(obj) => routes.push((
                key.clone(),
                Cow::Owned(Object {
                    obj,
                    source: source.clone(),
                    created,
                }),
                kind,
            )),
            // Only what the CRDs' validation refuses gets here.
            Err(message) => warnings.push(Warning {
                source: source.to_string(),
                object: format!("{} {key}", kind.name()),
                field: ".spec".into(),
                message: format!("not served: {message}"),
            }),
        }
    };
    for (key, r) in &store.grpc_routes {
        let obj = crate::grpc::as_http_route(&r.obj);
        converted(key, &r.source, r.created, RouteKind::Grpc, obj);
    }
    for (key, r) in &store.tls_routes {
        let obj = crate::l4::as_http_route(&r.obj);
        converted(key, &r.source, r.created, RouteKind::Tls, obj);
    }
    for (key, r) in &store.tcp_routes {
        let obj = crate::l4::as_http_route(&r.obj);
        converted(key, &r.source, r.created, RouteKind::Tcp, obj);
    }
    for (key, r) in &store.udp_routes {
        let obj = crate::l4::as_http_route(&r.obj);
        converted(key, &r.source, r.created, RouteKind::Udp, obj);
    }
    routes.sort_by(|a, b| (a.1.created, &a.0, a.2).cmp(&(b.1.created, &b.0, b.2)));
    routes
}

/// The GatewayClasses naming our controller get a status; returns the accepted ones.
fn gateway_classes(
    store: &Store,
    opts: &Options,
    statuses: &mut Vec<ObjectStatus>,
) -> HashSet<String> {
    let mut ours = HashSet::new();
    for (name, class) in &store.gateway_classes {
        if class.obj.spec.controller_name != opts.controller_name {
            continue;
        }
        let generation = class.obj.metadata.generation;
        let (ok, reason, msg) = match &class.obj.spec.parameters_ref {
            Some(p) => (
                false,
                "InvalidParameters",
                format!(
                    "parametersRef {}/{} is not supported by this controller",
                    p.kind, p.name
                ),
            ),
            None => (true, "Accepted", "Accepted by Sluice".to_string()),
        };
        if ok {
            ours.insert(name.clone());
        }
        statuses.push(ObjectStatus {
            api_version: format!("{GATEWAY_GROUP}/v1"),
            kind: "GatewayClass".into(),
            metadata: StatusMeta {
                namespace: None,
                name: name.clone(),
                generation,
            },
            status: if ok {
                serde_json::json!({
                    "conditions": [condition("Accepted", ok, reason, msg, generation, opts.now)],
                    "supportedFeatures": supported_features(opts)
                        .iter()
                        .map(|name| serde_json::json!({ "name": name }))
                        .collect::<Vec<_>>(),
                })
            } else {
                serde_json::json!({
                    "conditions": [condition("Accepted", ok, reason, msg, generation, opts.now)],
                })
            },
        });
    }
    ours
}

/// Each Gateway's address and listeners (its own, then its ListenerSets'), with conflicts
/// marked.
fn gateway_states<'a>(
    store: &'a Store,
    opts: &Options,
    gateways: &[(&'a NsName, &'a Object<Gateway>)],
    warnings: &mut Vec<Warning>,
    tls_memory: &mut TlsMemory<'_>,
) -> Vec<GatewayState<'a>> {
    let requested: HashSet<IpAddr> = gateways
        .iter()
        .flat_map(|(_, g)| g.obj.spec.addresses.iter().flatten())
        .filter_map(|a| a.value.as_deref()?.parse().ok())
        .collect();
    // Gateways the pool served before keep their address; the others take the free ones.
    let mut kept: HashMap<&NsName, IpAddr> = HashMap::new();
    if let Some(net) = opts.address_pool {
        let mut taken = HashSet::new();
        for (key, gw) in gateways {
            if let Some(ip) = opts.pool_last.get(*key) {
                if wants_pool_address(gw)
                    && net.contains(ip)
                    && !requested.contains(ip)
                    && taken.insert(*ip)
                {
                    kept.insert(*key, *ip);
                }
            }
        }
    }
    let reserved: HashSet<IpAddr> = kept.values().copied().collect();
    let mut pool = opts.address_pool.map(|net| {
        net.hosts()
            .filter(move |ip| !requested.contains(ip) && !reserved.contains(ip))
    });
    let mut states = Vec::new();
    for (key, gw) in gateways {
        let from_pool = opts.address_pool.is_some() && wants_pool_address(gw);
        let address = match kept.get(key) {
            Some(ip) => Ok(*ip),
            None => gateway_address(gw, &mut pool, opts),
        };
        let mut listeners: Vec<ListenerState> = gw
            .obj
            .spec
            .listeners
            .iter()
            .map(|l| listener_state(store, key, l, warnings, tls_memory, gw))
            .collect();
        let listener_sets = attached_listener_sets(store, key, gw);
        for (ls_key, ls, allowed) in &listener_sets {
            if !allowed {
                continue;
            }
            for l in &ls.obj.spec.listeners {
                // A ListenerSet listener has the schema of a Gateway listener.
                let gl = match serde_json::to_value(l)
                    .and_then(serde_json::from_value::<GatewayListeners>)
                {
                    Ok(gl) => gl,
                    Err(e) => {
                        warnings.push(Warning {
                            source: ls.source.to_string(),
                            object: format!("ListenerSet {ls_key}"),
                            field: format!(".spec.listeners[name={}]", l.name),
                            message: format!(
                                "not served: it does not read as a Gateway listener: {e}"
                            ),
                        });
                        continue;
                    }
                };
                let mut st = listener_state(store, ls_key, &gl, warnings, tls_memory, gw);
                st.owner = Some(ls_key.clone());
                listeners.push(st);
            }
        }
        let mut state = GatewayState {
            key: (*key).clone(),
            obj: gw,
            address,
            from_pool,
            listeners,
            listener_sets,
            backend_cert: backend_client_cert(store, key, gw),
            unusable_address: unusable_addresses(gw, opts),
        };
        mark_conflicts(&mut state);
        states.push(state);
    }
    states
}

/// Address and port are claimed by the oldest Gateway; later claimants are refused.
fn claim_ports(states: &mut [GatewayState<'_>]) {
    let mut claimed: HashMap<SocketAddr, NsName> = HashMap::new();
    for st in states {
        let Ok(ip) = st.address else { continue };
        let mut mine = HashSet::new();
        for l in &mut st.listeners {
            let addr = SocketAddr::new(ip, l.port);
            match claimed.get(&addr) {
                Some(owner) if !mine.contains(&addr) => {
                    l.accepted = (
                        false,
                        "PortUnavailable",
                        format!("{addr} is already served by Gateway {owner}, which is older"),
                    );
                }
                _ => {
                    claimed.insert(addr, st.key.clone());
                    mine.insert(addr);
                }
            }
        }
    }
}

/// Listeners whose socket the engine could not open: status says so.
fn mark_unbound(states: &mut [GatewayState<'_>], failures: &BTreeMap<SocketAddr, String>) {
    if failures.is_empty() {
        return;
    }
    for st in states {
        let Ok(ip) = st.address else { continue };
        for l in st.listeners.iter_mut().filter(|l| l.programmed()) {
            l.unbound = failures.get(&SocketAddr::new(ip, l.port)).cloned();
        }
    }
}

/// A warning for every Service port routes use that has no ready endpoint.
fn warn_without_endpoints(store: &Store, tables: &Tables, warnings: &mut Vec<Warning>) {
    for (svc, port) in &tables.without_endpoints {
        let Some(obj) = store.services.get(svc) else {
            continue;
        };
        warnings.push(Warning {
            source: obj.source.to_string(),
            object: format!("Service {svc}"),
            field: format!(".spec.ports[port={port}]"),
            message: format!(
                "no ready endpoints: requests routed to it are answered 503. Endpoints come from \
                 EndpointSlices labelled kubernetes.io/service-name={}, with a port named as \
                 this Service port",
                svc.name
            ),
        });
    }
}

/// The last valid TLS Secrets: what the previous translation kept, and what this one keeps.
struct TlsMemory<'a> {
    previous: &'a BTreeMap<NsName, TlsPem>,
    next: BTreeMap<NsName, TlsPem>,
}

/// The configuration's shared tables as translation fills them (routes, actions, clusters,
/// backend TLS settings), with the indexes that find an entry again.
struct Tables {
    config: Config,
    /// Cluster by `namespace/service:port`, with ` h2` for HTTP/2 ones.
    clusters: HashMap<String, ClusterId>,
    tls: BackendTlsByTarget,
    /// Service ports routes use that have no ready endpoint, in the order first used.
    without_endpoints: Vec<(NsName, i32)>,
    /// The kind of the route being translated: the kind its references are made from
    /// (ReferenceGrants), and a GRPCRoute's backends speak HTTP/2.
    route_kind: RouteKind,
}

/// (Service, port name or "" for the whole Service) → TLS settings.
type BackendTlsByTarget = HashMap<(NsName, String), sluice_config::BackendTlsId>;

fn kind_rank(kind: &str) -> u8 {
    match kind {
        "GatewayClass" => 0,
        "Gateway" => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_intersection() {
        assert_eq!(intersect_hostnames(None, "a.com").as_deref(), Some("a.com"));
        assert_eq!(
            intersect_hostnames(Some("a.com"), "a.com").as_deref(),
            Some("a.com")
        );
        assert_eq!(
            intersect_hostnames(Some("*.a.com"), "x.a.com").as_deref(),
            Some("x.a.com")
        );
        assert_eq!(
            intersect_hostnames(Some("x.a.com"), "*.a.com").as_deref(),
            Some("x.a.com")
        );
        assert_eq!(
            intersect_hostnames(Some("*.a.com"), "*.b.a.com").as_deref(),
            Some("*.b.a.com")
        );
        assert_eq!(
            intersect_hostnames(Some("*.b.a.com"), "*.a.com").as_deref(),
            Some("*.b.a.com")
        );
        assert_eq!(intersect_hostnames(Some("*.a.com"), "a.com"), None);
        assert_eq!(intersect_hostnames(Some("b.com"), "a.com"), None);
    }
}
