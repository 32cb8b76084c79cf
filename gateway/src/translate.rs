//! The one translation from Gateway API objects to proxy configuration and status.
//!
//! `translate` is a pure function: the same store and options give the same snapshot and the
//! same status, with no I/O and no clock (the condition timestamp is an input). The standalone
//! file provider and the Kubernetes controller both call it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

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

use crate::config::{
    BackendTarget, Bind, Cluster, Config, HeaderMatch, HeaderModifier, Listener, ListenerSet,
    Mirror, PathMatch, PathModifier, Protocol, QueryMatch, Redirect, Route, RouteMatch, RouteTable,
    RuleAction, StringMatch, UrlRewrite, WeightedBackend,
};
use crate::resources::{namespace_labels, secret_data, NsName, Object, Store, GATEWAY_GROUP};

pub const DEFAULT_CONTROLLER_NAME: &str = "sluice.dev/gateway-controller";

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
}

/// A certificate chain and private key, as PEM, from a Secret's `tls.crt` and `tls.key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
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
        f.write_str(&crate::resources::located(
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
    cert: Option<Arc<rustls::sign::CertifiedKey>>,
    /// Its Secret is invalid now, and `cert` is the Secret's last valid content.
    serving_last_good: bool,
    /// Client certificate validation of this HTTPS listener (from `spec.tls.frontend`).
    client_validation: Option<crate::engine::tls::ClientValidation>,
    attached: i32,
    routes: Vec<PendingRoute>,
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
    listeners: Vec<ListenerState>,
    /// ListenerSets whose parent is this Gateway, in precedence order, and whether they are
    /// allowed to attach.
    listener_sets: Vec<(
        NsName,
        &'a Object<gateway_api::listenersets::ListenerSet>,
        bool,
    )>,
    /// `spec.tls.backend.clientCertificateRef`: the certificate, or why it cannot be used.
    backend_cert: Option<Result<Arc<pingora::utils::tls::CertKey>, (&'static str, String)>>,
}

/// A route match waiting to be placed in a listener's route table.
struct PendingRoute {
    hostnames: Vec<Option<String>>,
    route: Arc<Route>,
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
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RouteOrder {
    path_kind: std::cmp::Reverse<u8>,
    path_len: std::cmp::Reverse<usize>,
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
    let now = opts.now;
    let mut statuses = Vec::new();
    let mut warnings = Vec::new();
    let mut tls_memory = TlsMemory {
        previous: &opts.tls_last_good,
        next: BTreeMap::new(),
    };

    // GatewayClasses naming our controller.
    let mut our_classes = HashSet::new();
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
            our_classes.insert(name.clone());
        }
        statuses.push(ObjectStatus {
            api_version: format!("{GATEWAY_GROUP}/v1"),
            kind: "GatewayClass".into(),
            metadata: StatusMeta {
                namespace: None,
                name: name.clone(),
                generation,
            },
            status: serde_json::json!({
                "conditions": [condition("Accepted", ok, reason, msg, generation, now)],
            }),
        });
    }

    // Our Gateways, oldest first: the older Gateway keeps a contested address and port.
    let mut gateways: Vec<(&NsName, &Object<Gateway>)> = store
        .gateways
        .iter()
        .filter(|(_, g)| our_classes.contains(&g.obj.spec.gateway_class_name))
        .collect();
    gateways.sort_by(|a, b| (a.1.created, a.0).cmp(&(b.1.created, b.0)));
    crate::unserved::skipped_objects(store, &mut warnings);
    crate::unserved::gateway_classes(store, &opts.controller_name, gateways.len(), &mut warnings);

    let requested: HashSet<IpAddr> = gateways
        .iter()
        .flat_map(|(_, g)| g.obj.spec.addresses.iter().flatten())
        .filter_map(|a| a.value.as_deref()?.parse().ok())
        .collect();
    let mut pool = opts
        .address_pool
        .map(|net| net.hosts().filter(move |ip| !requested.contains(ip)));

    let mut states: Vec<GatewayState<'_>> = Vec::new();
    for (key, gw) in &gateways {
        let address = gateway_address(gw, &mut pool, opts);
        let mut listeners: Vec<ListenerState> = gw
            .obj
            .spec
            .listeners
            .iter()
            .map(|l| listener_state(store, key, l, &mut warnings, &mut tls_memory, gw))
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
                let mut st = listener_state(store, ls_key, &gl, &mut warnings, &mut tls_memory, gw);
                st.owner = Some(ls_key.clone());
                listeners.push(st);
            }
        }
        let mut state = GatewayState {
            key: (*key).clone(),
            obj: gw,
            address,
            listeners,
            listener_sets,
            backend_cert: backend_client_cert(store, key, gw),
        };
        mark_conflicts(&mut state);
        states.push(state);
    }

    // Address and port are claimed by the oldest Gateway; later claimants are refused.
    let mut claimed: HashMap<SocketAddr, NsName> = HashMap::new();
    for st in &mut states {
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

    // BackendTLSPolicies, then routes.
    let (tls, policy_states) = backend_tls_policies(store, opts);
    let mut clusters = Clusters {
        map: HashMap::new(),
        tls,
        without_endpoints: Vec::new(),
    };
    let mut routes: Vec<(&NsName, &Object<HttpRoute>)> = store.http_routes.iter().collect();
    routes.sort_by(|a, b| (a.1.created, a.0).cmp(&(b.1.created, b.0)));
    for (key, route) in routes {
        if let Some(st) = attach_http_route(
            store,
            key,
            route,
            &mut states,
            &mut clusters,
            &mut warnings,
            opts,
        ) {
            statuses.push(st);
        }
    }

    for (svc, port) in &clusters.without_endpoints {
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

    // Gateway status and the snapshot.
    let mut config = Config {
        version: opts.version,
        binds: HashMap::new(),
        backend_client_certs: HashMap::new(),
        // Checked when the manifests were loaded; a store built otherwise gets no policies.
        egress: Arc::new(
            crate::egress::policy::EgressPolicies::compile(
                store.egress_policies.iter().map(|(k, p)| (k, &p.obj.spec)),
                &crate::egress::policy::store_ca_lookup(store),
            )
            .unwrap_or_default(),
        ),
    };
    let our_gateways: HashSet<NsName> = states.iter().map(|s| s.key.clone()).collect();
    let mut infrastructure = Vec::new();
    for st in states {
        let ports: Vec<u16> = st
            .listeners
            .iter()
            .filter(|l| l.accepted.0)
            .map(|l| l.port)
            .collect();
        let out = gateway_status(&st, &mut config, now);
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
    statuses.extend(policy_statuses(store, &policy_states, &our_gateways, opts));
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
    }
}

/// The last valid TLS Secrets: what the previous translation kept, and what this one keeps.
struct TlsMemory<'a> {
    previous: &'a BTreeMap<NsName, TlsPem>,
    next: BTreeMap<NsName, TlsPem>,
}

/// Clusters built so far, and the backend TLS settings they take from BackendTLSPolicies.
struct Clusters {
    map: HashMap<String, Arc<Cluster>>,
    tls: BackendTlsByTarget,
    /// Service ports routes use that have no ready endpoint, in the order first used.
    without_endpoints: Vec<(NsName, i32)>,
}

/// (Service, port name or "" for the whole Service) → TLS settings.
type BackendTlsByTarget = HashMap<(NsName, String), Arc<crate::config::BackendTls>>;

/// What translation decided about one BackendTLSPolicy.
struct PolicyState {
    key: NsName,
    generation: Option<i64>,
    /// Services it targets.
    targets: Vec<NsName>,
    accepted: (bool, &'static str, String),
    resolved: (bool, &'static str, String),
}

/// Validates every BackendTLSPolicy and resolves conflicts: for one target (Service and
/// sectionName), the oldest policy wins, then the first by `namespace/name`; the others are
/// not accepted (`Conflicted`).
fn backend_tls_policies(store: &Store, opts: &Options) -> (BackendTlsByTarget, Vec<PolicyState>) {
    let _ = opts;
    let mut policies: Vec<_> = store.backend_tls_policies.iter().collect();
    policies.sort_by(|a, b| (a.1.created, a.0).cmp(&(b.1.created, b.0)));
    let mut tls = HashMap::new();
    let mut states = Vec::new();
    for (key, p) in policies {
        let spec = &p.obj.spec;
        let mut st = PolicyState {
            key: key.clone(),
            generation: p.obj.metadata.generation,
            targets: Vec::new(),
            accepted: (true, "Accepted", "Policy is accepted".into()),
            resolved: (true, "ResolvedRefs", "All references are resolved".into()),
        };
        let mut roots = Vec::new();
        let refs = spec
            .validation
            .ca_certificate_refs
            .as_deref()
            .unwrap_or_default();
        let mut problem: Option<(&'static str, String)> = None;
        for r in refs {
            let cm_key = NsName::new(key.namespace.clone(), r.name.clone());
            if !r.group.is_empty() || r.kind != "ConfigMap" {
                problem.get_or_insert((
                    "InvalidKind",
                    format!(
                        "CA certificate kind {}/{} is not supported; use a ConfigMap",
                        r.group, r.kind
                    ),
                ));
                continue;
            }
            match config_map_ca(store, &cm_key) {
                Ok(mut c) => roots.append(&mut c),
                Err(e) => {
                    problem.get_or_insert(("InvalidCACertificateRef", e));
                }
            }
        }
        if let Some((reason, msg)) = problem {
            st.resolved = (false, reason, msg.clone());
            if roots.is_empty() {
                st.accepted = (false, "NoValidCACertificate", msg);
            }
        }
        if refs.is_empty() {
            let wk = spec
                .validation
                .well_known_ca_certificates
                .as_deref()
                .unwrap_or("");
            st.accepted = (
                false,
                "Invalid",
                format!(
                    "wellKnownCACertificates {wk:?} is not supported; reference a CA ConfigMap"
                ),
            );
        }
        let ca: Option<Arc<pingora::protocols::tls::CaType>> = (!roots.is_empty() && st.accepted.0)
            .then(|| {
                let wrapped: Vec<pingora::utils::tls::WrappedX509> = roots
                    .iter()
                    // pingora's certificate type panics on what x509-parser cannot read.
                    .filter(|der| x509_der_ok(der))
                    .map(|der| {
                        pingora::utils::tls::WrappedX509::new(
                            der.to_vec(),
                            pingora::utils::tls::parse_x509,
                        )
                    })
                    .collect();
                Arc::from(wrapped.into_boxed_slice())
            });
        // subjectAltNames: the certificate must name one of them; the hostname is the SNI only.
        let sans = spec
            .validation
            .subject_alt_names
            .as_deref()
            .unwrap_or_default();
        let san = if sans.is_empty() || roots.is_empty() || !st.accepted.0 {
            None
        } else {
            use gateway_api::backendtlspolicies::BackendTlsPolicyValidationSubjectAltNamesType as T;
            let dns: Vec<String> = sans
                .iter()
                .filter(|s| s.r#type == T::Hostname)
                .filter_map(|s| s.hostname.clone())
                .collect();
            let uris: Vec<String> = sans
                .iter()
                .filter(|s| s.r#type == T::Uri)
                .filter_map(|s| s.uri.clone())
                .collect();
            let c = crate::engine::backend_tls::SanTlsConnector::new(
                roots.clone(),
                &spec.validation.hostname,
                &dns,
                &uris,
            );
            if c.is_none() {
                st.accepted = (
                    false,
                    "Invalid",
                    format!(
                        "hostname {:?} is not a TLS server name",
                        spec.validation.hostname
                    ),
                );
            }
            c.map(Arc::new)
        };
        let pool_key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.to_string().hash(&mut h);
            spec.validation.hostname.hash(&mut h);
            for der in &roots {
                der.hash(&mut h);
            }
            format!("{sans:?}").hash(&mut h);
            h.finish()
        };
        let settings = Arc::new(crate::config::BackendTls {
            hostname: spec.validation.hostname.clone(),
            ca: if st.accepted.0 { ca } else { None },
            policy: key.to_string(),
            san,
            pool_key,
        });
        for t in &spec.target_refs {
            if !t.group.is_empty() || t.kind != "Service" {
                continue;
            }
            let svc = NsName::new(key.namespace.clone(), t.name.clone());
            st.targets.push(svc.clone());
            let target = (svc, t.section_name.clone().unwrap_or_default());
            match tls.get(&target) {
                Some(winner) => {
                    let winner: &Arc<crate::config::BackendTls> = winner;
                    st.accepted = (
                        false,
                        "Conflicted",
                        format!(
                            "policy {} already applies to this target and is older",
                            winner.policy
                        ),
                    );
                }
                None => {
                    tls.insert(target, settings.clone());
                }
            }
        }
        states.push(st);
    }
    (tls, states)
}

/// A BackendTLSPolicy's status: one ancestor per Gateway of ours whose routes send traffic to a
/// Service the policy targets.
fn policy_statuses(
    store: &Store,
    states: &[PolicyState],
    ours: &HashSet<NsName>,
    opts: &Options,
) -> Vec<ObjectStatus> {
    let mut out = Vec::new();
    for st in states {
        let mut ancestors: Vec<NsName> = Vec::new();
        for (rkey, r) in &store.http_routes {
            let uses = r
                .obj
                .spec
                .rules
                .iter()
                .flatten()
                .flat_map(|rule| rule.backend_refs.iter().flatten())
                .any(|b| {
                    b.kind.as_deref().unwrap_or("Service") == "Service"
                        && b.group.as_deref().unwrap_or("").is_empty()
                        && st.targets.contains(&NsName::new(
                            b.namespace
                                .clone()
                                .unwrap_or_else(|| rkey.namespace.clone()),
                            b.name.clone(),
                        ))
                });
            if !uses {
                continue;
            }
            for pref in r.obj.spec.parent_refs.iter().flatten() {
                let gw = NsName::new(
                    pref.namespace
                        .clone()
                        .unwrap_or_else(|| rkey.namespace.clone()),
                    pref.name.clone(),
                );
                if ours.contains(&gw) && !ancestors.contains(&gw) {
                    ancestors.push(gw);
                }
            }
        }
        if ancestors.is_empty() {
            continue;
        }
        ancestors.sort();
        let g = st.generation;
        let conds = [
            condition(
                "Accepted",
                st.accepted.0,
                st.accepted.1,
                st.accepted.2.clone(),
                g,
                opts.now,
            ),
            condition(
                "ResolvedRefs",
                st.resolved.0,
                st.resolved.1,
                st.resolved.2.clone(),
                g,
                opts.now,
            ),
        ];
        out.push(ObjectStatus {
            api_version: format!("{GATEWAY_GROUP}/v1"),
            kind: "BackendTLSPolicy".into(),
            metadata: StatusMeta {
                namespace: Some(st.key.namespace.clone()),
                name: st.key.name.clone(),
                generation: g,
            },
            status: serde_json::json!({
                "ancestors": ancestors.iter().map(|a| serde_json::json!({
                    "ancestorRef": {"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": a.namespace, "name": a.name},
                    "controllerName": opts.controller_name,
                    "conditions": conds,
                })).collect::<Vec<_>>(),
            }),
        });
    }
    out
}

fn kind_rank(kind: &str) -> u8 {
    match kind {
        "GatewayClass" => 0,
        "Gateway" => 1,
        _ => 2,
    }
}

fn gateway_address(
    gw: &Object<Gateway>,
    pool: &mut Option<impl Iterator<Item = IpAddr>>,
    opts: &Options,
) -> Result<IpAddr, (&'static str, String)> {
    // An address entry without a value asks for an address to be assigned (GatewayAddressEmpty).
    if let Some(first) = gw
        .obj
        .spec
        .addresses
        .iter()
        .flatten()
        .find(|a| a.value.is_some())
    {
        let ty = first.r#type.as_deref().unwrap_or("IPAddress");
        if ty != "IPAddress" {
            return Err((
                "UnsupportedAddress",
                format!("address type {ty} is not supported; use IPAddress"),
            ));
        }
        return match first.value.as_deref().map(str::parse::<IpAddr>) {
            Some(Ok(ip)) => Ok(ip),
            _ => Err((
                "UnsupportedAddress",
                format!(
                    "{:?} is not an IP address",
                    first.value.as_deref().unwrap_or("")
                ),
            )),
        };
    }
    match pool {
        Some(p) => p.next().ok_or((
            "AddressNotAssigned",
            "the address pool has no free address left".to_string(),
        )),
        None => Ok(opts.bind),
    }
}

fn listener_state(
    store: &Store,
    gw_key: &NsName,
    l: &GatewayListeners,
    warnings: &mut Vec<Warning>,
    memory: &mut TlsMemory<'_>,
    gw: &Object<Gateway>,
) -> ListenerState {
    let protocol = match l.protocol.as_str() {
        "HTTP" => Some(Protocol::Http),
        "HTTPS" => Some(Protocol::Https),
        _ => None,
    };
    let allowed = match l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
    {
        None => AllowedNamespaces::Same,
        Some(ns) => {
            use gateway_api::experimental::gateways::GatewayListenersAllowedRoutesNamespacesFrom as From;
            match ns.from {
                Some(From::All) => AllowedNamespaces::All,
                Some(From::Selector) => {
                    AllowedNamespaces::Selector(ns.selector.clone().unwrap_or_default())
                }
                Some(From::Same) | None => AllowedNamespaces::Same,
            }
        }
    };
    let mut st = ListenerState {
        owner: None,
        name: l.name.clone(),
        port: u16::try_from(l.port).unwrap_or(0),
        protocol,
        raw_protocol: l.protocol.clone(),
        hostname: l.hostname.clone(),
        kinds: Vec::new(),
        allowed,
        accepted: (true, "Accepted", "Listener is accepted".into()),
        resolved_refs: (true, "ResolvedRefs", "All references are resolved".into()),
        conflicted: None,
        cert: None,
        serving_last_good: false,
        client_validation: None,
        attached: 0,
        routes: Vec::new(),
    };
    if protocol.is_none() {
        st.accepted = (
            false,
            "UnsupportedProtocol",
            format!(
                "protocol {} is not supported; supported: HTTP, HTTPS",
                l.protocol
            ),
        );
        return st;
    }
    // Route kinds.
    match l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) {
        None => st.kinds.push("HTTPRoute".into()),
        Some(kinds) => {
            let mut invalid = Vec::new();
            for k in kinds {
                let group = k.group.as_deref().unwrap_or(GATEWAY_GROUP);
                if group == GATEWAY_GROUP && k.kind == "HTTPRoute" {
                    if !st.kinds.contains(&k.kind) {
                        st.kinds.push(k.kind.clone());
                    }
                } else {
                    invalid.push(format!("{group}/{}", k.kind));
                }
            }
            if !invalid.is_empty() {
                st.resolved_refs = (
                    false,
                    "InvalidRouteKinds",
                    format!(
                        "route kinds not supported on this listener: {}",
                        invalid.join(", ")
                    ),
                );
            }
        }
    }
    // TLS.
    if protocol == Some(Protocol::Https) {
        let tls = l.tls.as_ref();
        use gateway_api::experimental::gateways::GatewayListenersTlsMode as Mode;
        if matches!(tls.and_then(|t| t.mode.as_ref()), Some(Mode::Passthrough)) {
            st.accepted = (
                false,
                "UnsupportedValue",
                "TLS mode Passthrough is not valid for HTTPS listeners".into(),
            );
            return st;
        }
        let refs = tls.and_then(|t| t.certificate_refs.as_ref());
        let Some(first) = refs.and_then(|r| r.first()) else {
            st.resolved_refs = (
                false,
                "InvalidCertificateRef",
                "an HTTPS listener needs a certificateRef".into(),
            );
            return st;
        };
        let group = first.group.as_deref().unwrap_or("");
        let kind = first.kind.as_deref().unwrap_or("Secret");
        let ns = first.namespace.as_deref().unwrap_or(&gw_key.namespace);
        let secret_key = NsName::new(ns, first.name.clone());
        if !group.is_empty() || kind != "Secret" {
            st.resolved_refs = (
                false,
                "InvalidCertificateRef",
                format!("certificateRef kind {group}/{kind} is not supported; use a Secret"),
            );
        } else if ns != gw_key.namespace
            && !reference_granted(
                store,
                GATEWAY_GROUP,
                if gw.obj.metadata.name.as_deref() == Some(gw_key.name.as_str())
                    && gw.obj.metadata.namespace.as_deref().unwrap_or("default") == gw_key.namespace
                {
                    "Gateway"
                } else {
                    "ListenerSet"
                },
                &gw_key.namespace,
                "",
                "Secret",
                &secret_key,
            )
        {
            st.resolved_refs = (
                false,
                "RefNotPermitted",
                format!("no ReferenceGrant in namespace {ns} allows this Gateway to use Secret {secret_key}"),
            );
        } else {
            match store.secrets.get(&secret_key) {
                None => {
                    st.resolved_refs = (
                        false,
                        "InvalidCertificateRef",
                        format!("Secret {secret_key} does not exist"),
                    );
                }
                Some(secret) => match certified_key(&secret.obj) {
                    Ok(ck) => {
                        st.cert = Some(ck);
                        let data = secret_data(&secret.obj);
                        if let (Some(cert), Some(key)) = (data.get("tls.crt"), data.get("tls.key"))
                        {
                            memory.next.insert(
                                secret_key.clone(),
                                TlsPem {
                                    cert: cert.clone(),
                                    key: key.clone(),
                                },
                            );
                        }
                    }
                    Err(e) => {
                        // A Secret that was valid before keeps its last valid content in
                        // service: a bad edit must not take an HTTPS listener down.
                        let last = memory.previous.get(&secret_key).and_then(|pem| {
                            certified_key_from_pem(&pem.cert, &pem.key)
                                .ok()
                                .map(|ck| (pem.clone(), ck))
                        });
                        let kept = if let Some((pem, ck)) = last {
                            memory.next.insert(secret_key.clone(), pem);
                            st.cert = Some(ck);
                            st.serving_last_good = true;
                            "; the listener keeps serving the last valid certificate of this Secret"
                        } else {
                            "; no valid certificate was ever loaded from it, so the listener is not served"
                        };
                        warnings.push(Warning {
                            source: secret.source.to_string(),
                            object: format!("Secret {secret_key}"),
                            field: ".data".into(),
                            message: format!("{e}{kept}"),
                        });
                        st.resolved_refs = (
                            false,
                            "InvalidCertificateRef",
                            format!("Secret {secret_key}: {e}{kept}"),
                        );
                    }
                },
            }
        }
        if !st.resolved_refs.0 {
            warnings.push(Warning {
                source: gw.source.to_string(),
                object: format!("Gateway {gw_key}"),
                field: format!(".spec.listeners[name={}].tls.certificateRefs", l.name),
                message: st.resolved_refs.2.clone(),
            });
        }
        if st.resolved_refs.0 || st.serving_last_good {
            frontend_validation(store, gw_key, gw, &mut st);
        }
    }
    st
}

/// Client certificate validation for an HTTPS listener: the per-port configuration of its port,
/// else the default one (`spec.tls.frontend`, GEP-91).
fn frontend_validation(
    store: &Store,
    gw_key: &NsName,
    gw: &Object<Gateway>,
    st: &mut ListenerState,
) {
    let Some(frontend) = gw.obj.spec.tls.as_ref().and_then(|t| t.frontend.as_ref()) else {
        return;
    };
    let per_port = frontend
        .per_port
        .iter()
        .flatten()
        .find(|p| p.port == i32::from(st.port))
        .and_then(|p| p.tls.validation.as_ref())
        .map(|v| serde_json::to_value(v).unwrap_or_default());
    let validation = per_port.or_else(|| {
        frontend
            .default
            .validation
            .as_ref()
            .map(|v| serde_json::to_value(v).unwrap_or_default())
    });
    // Default and per-port validation have the same schema; read both through the default type.
    let Some(v) = validation.and_then(|v| {
        serde_json::from_value::<
            gateway_api::experimental::gateways::GatewayTlsFrontendDefaultValidation,
        >(v)
        .ok()
    }) else {
        return;
    };
    let insecure = matches!(
        v.mode,
        Some(gateway_api::experimental::gateways::GatewayTlsFrontendDefaultValidationMode::AllowInsecureFallback)
    );
    let mut roots = Vec::new();
    let mut problem: Option<(&'static str, String)> = None;
    for r in &v.ca_certificate_refs {
        let ns = r.namespace.as_deref().unwrap_or(&gw_key.namespace);
        let key = NsName::new(ns, r.name.clone());
        if !r.group.is_empty() || r.kind != "ConfigMap" {
            problem.get_or_insert((
                "InvalidCACertificateKind",
                format!(
                    "CA certificate kind {}/{} is not supported; use a ConfigMap",
                    r.group, r.kind
                ),
            ));
            continue;
        }
        if ns != gw_key.namespace
            && !reference_granted(
                store,
                GATEWAY_GROUP,
                "Gateway",
                &gw_key.namespace,
                "",
                "ConfigMap",
                &key,
            )
        {
            problem.get_or_insert((
                "RefNotPermitted",
                format!("no ReferenceGrant in namespace {ns} allows this Gateway to use ConfigMap {key}"),
            ));
            continue;
        }
        match config_map_ca(store, &key) {
            Ok(mut certs) => roots.append(&mut certs),
            Err(e) => {
                problem.get_or_insert(("InvalidCACertificateRef", e));
            }
        }
    }
    if let Some((reason, msg)) = problem {
        st.resolved_refs = (false, reason, msg.clone());
        if roots.is_empty() {
            st.accepted = (false, "NoValidCACertificate", msg);
            return;
        }
    }
    st.client_validation = Some(crate::engine::tls::ClientValidation {
        roots,
        insecure_fallback: insecure,
    });
}

/// The certificates under `ca.crt` of a ConfigMap.
/// The CA certificates of the ConfigMap `key`, or why there are none to use.
fn config_map_ca(
    store: &Store,
    key: &NsName,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    let cm = store
        .config_maps
        .get(key)
        .ok_or(format!("ConfigMap {key} does not exist"))?;
    ca_certificates(&cm.obj).map_err(|e| format!("ConfigMap {key}: {e}"))
}

pub fn ca_certificates(
    cm: &k8s_openapi::api::core::v1::ConfigMap,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    let pem = cm
        .data
        .as_ref()
        .and_then(|d| d.get("ca.crt"))
        .ok_or("no key ca.crt")?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ca.crt is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("ca.crt holds no certificate".into());
    }
    let (usable, _) =
        rustls::RootCertStore::empty().add_parsable_certificates(certs.iter().cloned());
    if usable == 0 {
        return Err("ca.crt holds no usable CA certificate".into());
    }
    Ok(certs)
}

/// Whether x509-parser reads `der`: pingora's certificate types expect it to.
fn x509_der_ok(der: &[u8]) -> bool {
    use x509_parser::prelude::{FromDer, X509Certificate};
    X509Certificate::from_der(der).is_ok()
}

/// The client certificate a Gateway presents to TLS backends, if it names one.
fn backend_client_cert(
    store: &Store,
    gw_key: &NsName,
    gw: &Object<Gateway>,
) -> Option<Result<Arc<pingora::utils::tls::CertKey>, (&'static str, String)>> {
    let r = gw
        .obj
        .spec
        .tls
        .as_ref()?
        .backend
        .as_ref()?
        .client_certificate_ref
        .as_ref()?;
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Secret");
    let ns = r.namespace.as_deref().unwrap_or(&gw_key.namespace);
    let key = NsName::new(ns, r.name.clone());
    if !group.is_empty() || kind != "Secret" {
        return Some(Err((
            "InvalidClientCertificateRef",
            format!("client certificate kind {group}/{kind} is not supported; use a Secret"),
        )));
    }
    if ns != gw_key.namespace
        && !reference_granted(
            store,
            GATEWAY_GROUP,
            "Gateway",
            &gw_key.namespace,
            "",
            "Secret",
            &key,
        )
    {
        return Some(Err((
            "RefNotPermitted",
            format!("no ReferenceGrant in namespace {ns} allows this Gateway to use Secret {key}"),
        )));
    }
    let Some(secret) = store.secrets.get(&key) else {
        return Some(Err((
            "InvalidClientCertificateRef",
            format!("Secret {key} does not exist"),
        )));
    };
    // Checked with rustls first: pingora's certificate type expects well-formed input.
    if let Err(e) = certified_key(&secret.obj) {
        return Some(Err((
            "InvalidClientCertificateRef",
            format!("Secret {key}: {e}"),
        )));
    }
    let data = secret_data(&secret.obj);
    let certs: Vec<Vec<u8>> = rustls_pemfile::certs(&mut data.get("tls.crt")?.as_slice())
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect();
    let key_der = rustls_pemfile::private_key(&mut data.get("tls.key")?.as_slice())
        .ok()
        .flatten()?
        .secret_der()
        .to_vec();
    if certs.is_empty() || !certs.iter().all(|c| x509_der_ok(c)) {
        return Some(Err((
            "InvalidClientCertificateRef",
            format!("Secret {key}: tls.crt holds a certificate that cannot be parsed"),
        )));
    }
    Some(Ok(Arc::new(pingora::utils::tls::CertKey::new(
        certs, key_der,
    ))))
}

/// Parses a `kubernetes.io/tls` Secret into a rustls certified key.
pub fn certified_key(
    secret: &k8s_openapi::api::core::v1::Secret,
) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let data = secret_data(secret);
    let cert_pem = data.get("tls.crt").ok_or("missing tls.crt")?;
    let key_pem = data.get("tls.key").ok_or("missing tls.key")?;
    certified_key_from_pem(cert_pem, key_pem)
}

/// A certificate chain and its private key, from PEM.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| format!("tls.key is not PEM: {e}"))?
        .ok_or("tls.key holds no private key")?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(certs, key, &provider)
        .map(Arc::new)
        .map_err(|e| format!("certificate and key do not form a usable pair: {e}"))
}

/// Marks listeners that share a port with another listener of a different protocol
/// (ProtocolConflict) or of the same protocol and hostname (HostnameConflict). Protocols are
/// compared as written, so a listener of a protocol we do not serve (TCP, UDP, TLS) still
/// conflicts. Within the Gateway every conflicting listener is marked. A ListenerSet listener
/// yields to the listeners that precede it and are not themselves conflicted: the Gateway's,
/// then those of older ListenerSets, then earlier ones of its own set.
fn mark_conflicts(st: &mut GatewayState<'_>) {
    fn conflict(a: &ListenerState, b: &ListenerState) -> Option<(&'static str, String)> {
        if a.port != b.port {
            None
        } else if a.raw_protocol != b.raw_protocol {
            Some((
                "ProtocolConflict",
                format!(
                    "port {} is also used with protocol {} by listener {}",
                    a.port, b.raw_protocol, b.name
                ),
            ))
        } else if a.hostname == b.hostname {
            Some((
                "HostnameConflict",
                format!(
                    "hostname {:?} on port {} is also used by listener {}",
                    a.hostname.as_deref().unwrap_or(""),
                    a.port,
                    b.name
                ),
            ))
        } else {
            None
        }
    }
    let n = st.listeners.len();
    for i in 0..n {
        let found = if st.listeners[i].owner.is_none() {
            (0..n)
                .filter(|&j| j != i && st.listeners[j].owner.is_none())
                .find_map(|j| conflict(&st.listeners[i], &st.listeners[j]))
        } else {
            (0..i)
                .filter(|&j| st.listeners[j].conflicted.is_none())
                .find_map(|j| conflict(&st.listeners[i], &st.listeners[j]))
        };
        if let Some((reason, msg)) = found {
            let l = &mut st.listeners[i];
            l.accepted = (false, reason, msg.clone());
            l.conflicted = Some((reason, msg));
        }
    }
}

/// ListenerSets that name `gw` as their parent, oldest first, and whether the Gateway's
/// `allowedListeners` lets each attach (the default allows none).
fn attached_listener_sets<'a>(
    store: &'a Store,
    gw_key: &NsName,
    gw: &Object<Gateway>,
) -> Vec<(
    NsName,
    &'a Object<gateway_api::listenersets::ListenerSet>,
    bool,
)> {
    let mut out: Vec<_> = store
        .listener_sets
        .iter()
        .filter(|(k, ls)| {
            let p = &ls.obj.spec.parent_ref;
            p.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
                && p.kind.as_deref().unwrap_or("Gateway") == "Gateway"
                && p.name == gw_key.name
                && p.namespace.as_deref().unwrap_or(&k.namespace) == gw_key.namespace
        })
        .map(|(k, ls)| {
            use gateway_api::experimental::gateways::GatewayAllowedListenersNamespacesFrom as From;
            let ns = gw.obj.spec.allowed_listeners.as_ref().and_then(|a| a.namespaces.as_ref());
            let allowed = match ns.and_then(|n| n.from.as_ref()) {
                None | Some(From::None) => false,
                Some(From::Same) => k.namespace == gw_key.namespace,
                Some(From::All) => true,
                Some(From::Selector) => {
                    let sel = ns.and_then(|n| n.selector.as_ref());
                    let sel = sel.map(|s| serde_json::to_value(s).unwrap_or_default()).unwrap_or_default();
                    let sel: gateway_api::experimental::gateways::GatewayListenersAllowedRoutesNamespacesSelector =
                        serde_json::from_value(sel).unwrap_or_default();
                    namespace_allowed(store, &AllowedNamespaces::Selector(sel), &gw_key.namespace, &k.namespace)
                }
            };
            (k.clone(), ls, allowed)
        })
        .collect();
    out.sort_by(|a, b| (a.1.created, &a.0).cmp(&(b.1.created, &b.0)));
    out
}

fn reference_granted(
    store: &Store,
    from_group: &str,
    from_kind: &str,
    from_ns: &str,
    to_group: &str,
    to_kind: &str,
    to: &NsName,
) -> bool {
    store
        .reference_grants
        .iter()
        .filter(|(k, _)| k.namespace == to.namespace)
        .any(|(_, g)| {
            let spec = &g.obj.spec;
            spec.from
                .iter()
                .any(|f| f.group == from_group && f.kind == from_kind && f.namespace == from_ns)
                && spec.to.iter().any(|t| {
                    t.group == to_group
                        && t.kind == to_kind
                        && t.name.as_deref().is_none_or(|n| n == to.name)
                })
        })
}

/// Intersection of a listener hostname and a route hostname, per the Gateway API: the more
/// specific of the two when one contains the other.
pub fn intersect_hostnames(listener: Option<&str>, route: &str) -> Option<String> {
    let Some(l) = listener else {
        return Some(route.to_string());
    };
    let covers = |wild: &str, name: &str| match wild.strip_prefix('*') {
        Some(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
        None => wild == name,
    };
    if l == route || covers(l, route) {
        Some(route.to_string())
    } else if covers(route, l) {
        Some(l.to_string())
    } else {
        None
    }
}

fn namespace_allowed(
    store: &Store,
    allowed: &AllowedNamespaces,
    gw_ns: &str,
    route_ns: &str,
) -> bool {
    match allowed {
        AllowedNamespaces::All => true,
        AllowedNamespaces::Same => gw_ns == route_ns,
        AllowedNamespaces::Selector(sel) => {
            let labels = namespace_labels(store, route_ns);
            let labels_ok = sel
                .match_labels
                .iter()
                .flatten()
                .all(|(k, v)| labels.get(k) == Some(v));
            let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
                let values = e.values.as_deref().unwrap_or_default();
                let v = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => v.is_some_and(|v| values.contains(v)),
                    "NotIn" => v.is_none_or(|v| !values.contains(v)),
                    "Exists" => v.is_some(),
                    "DoesNotExist" => v.is_none(),
                    _ => false,
                }
            });
            labels_ok && exprs_ok
        }
    }
}

/// The rules of a route, compiled once for every parent it attaches to.
struct CompiledRule {
    matches: Vec<(RouteMatch, RouteOrder)>,
    action: Arc<RuleAction>,
}

/// Attaches one HTTPRoute to the listeners its parentRefs select, and returns its status.
fn attach_http_route(
    store: &Store,
    key: &NsName,
    route: &Object<HttpRoute>,
    states: &mut [GatewayState<'_>],
    clusters: &mut Clusters,
    warnings: &mut Vec<Warning>,
    opts: &Options,
) -> Option<ObjectStatus> {
    let spec = &route.obj.spec;
    let generation = route.obj.metadata.generation;
    let now = opts.now;
    let parent_refs = spec.parent_refs.clone().unwrap_or_default();
    let mut warn = |field: String, message: String| {
        warnings.push(Warning {
            source: route.source.to_string(),
            object: format!("HTTPRoute {key}"),
            field,
            message,
        })
    };

    // Compile rules and resolve backends once.
    let mut resolved: (bool, &'static str, String) =
        (true, "ResolvedRefs", "All references are resolved".into());
    let mut unsupported: Option<String> = None;
    let mut rules = Vec::new();
    for (ri, rule) in spec.rules.iter().flatten().enumerate() {
        match compile_rule(store, key, route, ri, rule, clusters) {
            Ok((compiled, problems)) => {
                for (field, reason, msg) in problems {
                    warn(field, msg.clone());
                    if resolved.0 {
                        resolved = (false, reason, msg);
                    }
                }
                rules.push(compiled);
            }
            Err((field, msg)) => {
                warn(field, msg.clone());
                unsupported.get_or_insert(msg);
            }
        }
    }

    let mut parents = Vec::new();
    for (pi, pref) in parent_refs.iter().enumerate() {
        let group = pref.group.as_deref().unwrap_or(GATEWAY_GROUP);
        let kind = pref.kind.as_deref().unwrap_or("Gateway");
        if group != GATEWAY_GROUP || !matches!(kind, "Gateway" | "ListenerSet") {
            continue;
        }
        let parent_ns = pref
            .namespace
            .clone()
            .unwrap_or_else(|| key.namespace.clone());
        let parent_key = NsName::new(parent_ns, pref.name.clone());
        // A ListenerSet parent selects its own listeners on its Gateway.
        let (gw_key, owner) = if kind == "ListenerSet" {
            let Some(ls) = store.listener_sets.get(&parent_key) else {
                warn(
                    format!(".spec.parentRefs[{pi}]"),
                    format!("ListenerSet {parent_key} does not exist"),
                );
                continue;
            };
            let p = &ls.obj.spec.parent_ref;
            (
                NsName::new(
                    p.namespace
                        .clone()
                        .unwrap_or_else(|| parent_key.namespace.clone()),
                    p.name.clone(),
                ),
                Some(parent_key.clone()),
            )
        } else {
            (parent_key.clone(), None)
        };
        // Parents that are not our Gateways get no status from us.
        let Some(gw) = states.iter_mut().find(|s| s.key == gw_key) else {
            if !store.gateways.contains_key(&gw_key) {
                warn(
                    format!(".spec.parentRefs[{pi}]"),
                    format!("Gateway {gw_key} does not exist"),
                );
            }
            continue;
        };
        let mut matched_section = false;
        let mut allowed_any = false;
        let mut hostname_any = false;
        for l in &mut gw.listeners {
            if l.owner != owner {
                continue;
            }
            if pref.section_name.as_ref().is_some_and(|s| *s != l.name) {
                continue;
            }
            if pref.port.is_some_and(|p| p != i32::from(l.port)) {
                continue;
            }
            matched_section = true;
            if !l.kinds.iter().any(|k| k == "HTTPRoute")
                || !namespace_allowed(
                    store,
                    &l.allowed,
                    &l.owner.as_ref().unwrap_or(&gw_key).namespace,
                    &key.namespace,
                )
            {
                continue;
            }
            allowed_any = true;
            // Effective hostnames on this listener.
            let hostnames: Vec<Option<String>> = match spec.hostnames.as_deref() {
                None | Some([]) => vec![l.hostname.clone()],
                Some(hs) => {
                    let mut v: Vec<Option<String>> = hs
                        .iter()
                        .filter_map(|h| intersect_hostnames(l.hostname.as_deref(), h))
                        .map(Some)
                        .collect();
                    v.sort();
                    v.dedup();
                    v
                }
            };
            if hostnames.is_empty() {
                continue;
            }
            hostname_any = true;
            if unsupported.is_some() {
                continue;
            }
            // Only a route accepted on this listener counts as attached to it: one whose
            // hostnames intersect the listener's (GatewayWithAttachedRoutes,
            // HTTPRouteHostnameIntersection).
            l.attached += 1;
            for rule in &rules {
                for (m, order) in &rule.matches {
                    l.routes.push(PendingRoute {
                        hostnames: hostnames.clone(),
                        route: Arc::new(Route {
                            route: key.clone(),
                            rule: order.rule,
                            matcher: clone_match(m),
                            action: rule.action.clone(),
                        }),
                        order: order.clone(),
                    });
                }
            }
        }
        let accepted = if let Some(msg) = &unsupported {
            condition(
                "Accepted",
                false,
                "UnsupportedValue",
                msg.clone(),
                generation,
                now,
            )
        } else if !matched_section {
            condition(
                "Accepted",
                false,
                "NoMatchingParent",
                "no listener of the Gateway matches this parentRef's sectionName and port",
                generation,
                now,
            )
        } else if !allowed_any {
            condition(
                "Accepted",
                false,
                "NotAllowedByListeners",
                "no listener allows routes of this kind from this namespace",
                generation,
                now,
            )
        } else if !hostname_any {
            condition(
                "Accepted",
                false,
                "NoMatchingListenerHostname",
                "no hostname of this route intersects a listener hostname",
                generation,
                now,
            )
        } else {
            condition(
                "Accepted",
                true,
                "Accepted",
                "Route is accepted",
                generation,
                now,
            )
        };
        if accepted.status == "False" {
            warn(
                format!(".spec.parentRefs[{pi}]"),
                format!("{}: {}", accepted.reason, accepted.message),
            );
        }
        let mut parent_ref = serde_json::json!({
            "group": GATEWAY_GROUP,
            "kind": kind,
            "namespace": parent_key.namespace,
            "name": parent_key.name,
        });
        if let Some(s) = &pref.section_name {
            parent_ref["sectionName"] = s.clone().into();
        }
        if let Some(p) = pref.port {
            parent_ref["port"] = p.into();
        }
        parents.push(serde_json::json!({
            "parentRef": parent_ref,
            "controllerName": opts.controller_name,
            "conditions": [
                accepted,
                condition("ResolvedRefs", resolved.0, resolved.1, resolved.2.clone(), generation, now),
            ],
        }));
    }
    if parents.is_empty() {
        return None;
    }
    Some(ObjectStatus {
        api_version: format!("{GATEWAY_GROUP}/v1"),
        kind: "HTTPRoute".into(),
        metadata: StatusMeta {
            namespace: Some(key.namespace.clone()),
            name: key.name.clone(),
            generation,
        },
        status: serde_json::json!({ "parents": parents }),
    })
}

fn clone_match(m: &RouteMatch) -> RouteMatch {
    RouteMatch {
        path: match &m.path {
            PathMatch::Exact(s) => PathMatch::Exact(s.clone()),
            PathMatch::Prefix(s) => PathMatch::Prefix(s.clone()),
            PathMatch::Regex(r) => PathMatch::Regex(r.clone()),
        },
        method: m.method.clone(),
        headers: m
            .headers
            .iter()
            .map(|h| HeaderMatch {
                name: h.name.clone(),
                value: clone_string_match(&h.value),
            })
            .collect(),
        query: m
            .query
            .iter()
            .map(|q| QueryMatch {
                name: q.name.clone(),
                value: clone_string_match(&q.value),
            })
            .collect(),
    }
}

fn clone_string_match(s: &StringMatch) -> StringMatch {
    match s {
        StringMatch::Exact(e) => StringMatch::Exact(e.clone()),
        StringMatch::Regex(r) => StringMatch::Regex(r.clone()),
    }
}

/// A Gateway API duration (`1h`, `30s`, `500ms`, combinations). Zero means no timeout.
fn parse_duration(
    v: Option<&str>,
    field: &str,
) -> Result<Option<std::time::Duration>, (String, String)> {
    let Some(v) = v else { return Ok(None) };
    let d: gateway_api::Duration = v
        .parse()
        .map_err(|e| (field.to_string(), format!("invalid duration {v:?}: {e}")))?;
    let d = std::time::Duration::from_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    Ok((!d.is_zero()).then_some(d))
}

/// Regexes are anchored: a match means the whole value matches, as in Envoy's RE2 semantics.
fn compile_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
}

type RuleProblems = Vec<(String, &'static str, String)>;

/// Compiles one rule. `Err` means the rule uses something we do not support (the route is
/// then not accepted); the problems list holds references that did not resolve.
fn compile_rule(
    store: &Store,
    key: &NsName,
    route: &Object<HttpRoute>,
    ri: usize,
    rule: &HttpRouteRules,
    clusters: &mut Clusters,
) -> Result<(CompiledRule, RuleProblems), (String, String)> {
    let default_match = [HttpRouteRulesMatches::default()];
    let matches: &[HttpRouteRulesMatches] = match rule.matches.as_deref() {
        None | Some([]) => &default_match,
        Some(m) => m,
    };
    let mut compiled_matches = Vec::new();
    for (mi, m) in matches.iter().enumerate() {
        let field = format!(".spec.rules[{ri}].matches[{mi}]");
        let path_type = m
            .path
            .as_ref()
            .and_then(|p| p.r#type.clone())
            .unwrap_or(HttpRouteRulesMatchesPathType::PathPrefix);
        let path_value = m
            .path
            .as_ref()
            .and_then(|p| p.value.clone())
            .unwrap_or_else(|| "/".into());
        let (path, kind) = match path_type {
            HttpRouteRulesMatchesPathType::Exact => (PathMatch::Exact(path_value.clone()), 3),
            HttpRouteRulesMatchesPathType::PathPrefix => (
                PathMatch::Prefix(path_value.trim_end_matches('/').to_string()),
                2,
            ),
            HttpRouteRulesMatchesPathType::RegularExpression => (
                PathMatch::Regex(
                    compile_regex(&path_value).map_err(|e| (format!("{field}.path.value"), e))?,
                ),
                1,
            ),
        };
        let mut headers = Vec::new();
        for (hi, h) in m.headers.iter().flatten().enumerate() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|e| (format!("{field}.headers[{hi}].name"), e.to_string()))?;
            let value = match h.r#type {
                Some(HttpRouteRulesMatchesHeadersType::RegularExpression) => StringMatch::Regex(
                    compile_regex(&h.value)
                        .map_err(|e| (format!("{field}.headers[{hi}].value"), e))?,
                ),
                _ => StringMatch::Exact(h.value.clone()),
            };
            // The first match of a header name wins; later duplicates are ignored (spec).
            if !headers.iter().any(|x: &HeaderMatch| x.name == name) {
                headers.push(HeaderMatch { name, value });
            }
        }
        let mut query = Vec::new();
        for (qi, q) in m.query_params.iter().flatten().enumerate() {
            let value = match q.r#type {
                Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression) => {
                    StringMatch::Regex(
                        compile_regex(&q.value)
                            .map_err(|e| (format!("{field}.queryParams[{qi}].value"), e))?,
                    )
                }
                _ => StringMatch::Exact(q.value.clone()),
            };
            if !query.iter().any(|x: &QueryMatch| x.name == q.name) {
                query.push(QueryMatch {
                    name: q.name.clone(),
                    value,
                });
            }
        }
        let method = m.method.as_ref().map(|meth| {
            let s = serde_json::to_value(meth)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            Method::from_bytes(s.as_bytes()).unwrap_or(Method::GET)
        });
        let path_len = match &path {
            PathMatch::Exact(p) | PathMatch::Prefix(p) => p.len(),
            PathMatch::Regex(r) => r.as_str().len(),
        };
        let order = RouteOrder {
            path_kind: std::cmp::Reverse(kind),
            path_len: std::cmp::Reverse(path_len),
            method: std::cmp::Reverse(method.is_some()),
            headers: std::cmp::Reverse(headers.len()),
            query: std::cmp::Reverse(query.len()),
            created: route.created,
            route: key.clone(),
            rule: ri,
            matcher: mi,
        };
        compiled_matches.push((
            RouteMatch {
                path,
                method,
                headers,
                query,
            },
            order,
        ));
    }

    // The path matched by the first match, for ReplacePrefixMatch.
    let matched_prefix = match matches.first().and_then(|m| m.path.as_ref()) {
        Some(p)
            if p.r#type
                .as_ref()
                .is_none_or(|t| *t == HttpRouteRulesMatchesPathType::PathPrefix) =>
        {
            p.value.clone().unwrap_or_else(|| "/".into())
        }
        None => "/".into(),
        Some(_) => String::new(),
    };

    let mut problems: RuleProblems = Vec::new();
    let mut action = RuleAction {
        route_label: key.to_string(),
        ..RuleAction::default()
    };
    if let Some(t) = &rule.timeouts {
        let field = format!(".spec.rules[{ri}].timeouts");
        action.request_timeout = parse_duration(t.request.as_deref(), &format!("{field}.request"))?;
        action.backend_timeout = parse_duration(
            t.backend_request.as_deref(),
            &format!("{field}.backendRequest"),
        )?;
    }
    if let Some(r) = &rule.retry {
        let field = format!(".spec.rules[{ri}].retry");
        let codes = r
            .codes
            .iter()
            .flatten()
            .filter_map(|c| u16::try_from(*c).ok())
            .collect();
        action.retry = Some(crate::config::RetryPolicy {
            codes,
            attempts: r.attempts.and_then(|a| u32::try_from(a).ok()).unwrap_or(1),
            backoff: parse_duration(r.backoff.as_deref(), &format!("{field}.backoff"))?
                .unwrap_or_default(),
        });
    }
    for (fi, f) in rule.filters.iter().flatten().enumerate() {
        let field = format!(".spec.rules[{ri}].filters[{fi}]");
        apply_filter(
            store,
            key,
            f,
            &field,
            &matched_prefix,
            &mut action,
            &mut problems,
            clusters,
        )?;
    }
    let backend_refs = rule.backend_refs.as_deref().unwrap_or_default();
    if backend_refs.is_empty() && action.redirect.is_none() {
        action.no_backends = true;
    }
    for (bi, b) in backend_refs.iter().enumerate() {
        let field = format!(".spec.rules[{ri}].backendRefs[{bi}]");
        let weight = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
        let target = resolve_backend(
            store,
            key,
            b.group.as_deref(),
            b.kind.as_deref(),
            &b.name,
            b.namespace.as_deref(),
            b.port,
            clusters,
        );
        note_invalid(&target, field.clone(), &mut problems);
        let mut backend = WeightedBackend {
            weight,
            target,
            request_headers: None,
            response_headers: None,
        };
        for (fi, f) in b.filters.iter().flatten().enumerate() {
            let ffield = format!("{field}.filters[{fi}]");
            // Backend filters have the same schema as rule filters.
            let f: HttpRouteRulesFilters = serde_json::to_value(f)
                .and_then(serde_json::from_value)
                .map_err(|e| (ffield.clone(), e.to_string()))?;
            let mut sub = RuleAction::default();
            apply_filter(
                store,
                key,
                &f,
                &ffield,
                &matched_prefix,
                &mut sub,
                &mut problems,
                clusters,
            )?;
            if sub.rewrite.is_some()
                || sub.redirect.is_some()
                || !sub.mirrors.is_empty()
                || sub.cors.is_some()
            {
                return Err((
                    ffield,
                    "only RequestHeaderModifier and ResponseHeaderModifier are supported on a backendRef".into(),
                ));
            }
            backend.request_headers = sub.request_headers.or(backend.request_headers);
            backend.response_headers = sub.response_headers.or(backend.response_headers);
        }
        if weight > 0 {
            action.total_weight += u64::from(weight);
            action.backends.push(backend);
        }
    }
    Ok((
        CompiledRule {
            matches: compiled_matches,
            action: Arc::new(action),
        },
        problems,
    ))
}

/// Records why a backend reference did not resolve, with the spec's reason.
fn note_invalid(target: &BackendTarget, field: String, problems: &mut RuleProblems) {
    if let BackendTarget::Invalid { reason, .. } = target {
        let (r, msg) = reason
            .split_once(": ")
            .unwrap_or(("BackendNotFound", reason));
        problems.push((field, static_reason(r), msg.to_string()));
    }
}

fn static_reason(r: &str) -> &'static str {
    match r {
        "RefNotPermitted" => "RefNotPermitted",
        "InvalidKind" => "InvalidKind",
        _ => "BackendNotFound",
    }
}

#[allow(clippy::too_many_arguments)]
fn apply_filter(
    store: &Store,
    key: &NsName,
    f: &HttpRouteRulesFilters,
    field: &str,
    matched_prefix: &str,
    action: &mut RuleAction,
    problems: &mut RuleProblems,
    clusters: &mut Clusters,
) -> Result<(), (String, String)> {
    let missing = |what: &str| {
        (
            field.to_string(),
            format!("filter type {what} needs its {what} field"),
        )
    };
    match f.r#type {
        HttpRouteRulesFiltersType::RequestHeaderModifier => {
            let m = f
                .request_header_modifier
                .as_ref()
                .ok_or_else(|| missing("requestHeaderModifier"))?;
            action.request_headers = Some(header_modifier(
                m,
                &format!("{field}.requestHeaderModifier"),
            )?);
        }
        HttpRouteRulesFiltersType::ResponseHeaderModifier => {
            let m = f
                .response_header_modifier
                .as_ref()
                .ok_or_else(|| missing("responseHeaderModifier"))?;
            // Same schema as the request modifier.
            let m: HttpRouteRulesFiltersRequestHeaderModifier = serde_json::to_value(m)
                .and_then(serde_json::from_value)
                .map_err(|e| (field.to_string(), e.to_string()))?;
            action.response_headers = Some(header_modifier(
                &m,
                &format!("{field}.responseHeaderModifier"),
            )?);
        }
        HttpRouteRulesFiltersType::RequestRedirect => {
            let r = f
                .request_redirect
                .as_ref()
                .ok_or_else(|| missing("requestRedirect"))?;
            let path = match &r.path {
                None => None,
                Some(p) => Some(match p.r#type {
                    HttpRouteRulesFiltersRequestRedirectPathType::ReplaceFullPath => {
                        PathModifier::Full(
                            p.replace_full_path.clone().unwrap_or_else(|| "/".into()),
                        )
                    }
                    HttpRouteRulesFiltersRequestRedirectPathType::ReplacePrefixMatch => {
                        prefix_modifier(matched_prefix, p.replace_prefix_match.clone(), field)?
                    }
                }),
            };
            let status = match &r.status_code {
                None => 302,
                Some(code) => u16::try_from(*code).unwrap_or(302),
            };
            action.redirect = Some(Redirect {
                scheme: r.scheme.as_ref().map(|s| match s {
                    HttpRouteRulesFiltersRequestRedirectScheme::Http => "http".to_string(),
                    HttpRouteRulesFiltersRequestRedirectScheme::Https => "https".to_string(),
                }),
                hostname: r.hostname.clone(),
                port: r.port.and_then(|p| u16::try_from(p).ok()),
                path,
                status,
            });
        }
        HttpRouteRulesFiltersType::UrlRewrite => {
            let r = f
                .url_rewrite
                .as_ref()
                .ok_or_else(|| missing("urlRewrite"))?;
            let path = match &r.path {
                None => None,
                Some(p) => Some(match p.r#type {
                    HttpRouteRulesFiltersUrlRewritePathType::ReplaceFullPath => PathModifier::Full(
                        p.replace_full_path.clone().unwrap_or_else(|| "/".into()),
                    ),
                    HttpRouteRulesFiltersUrlRewritePathType::ReplacePrefixMatch => {
                        prefix_modifier(matched_prefix, p.replace_prefix_match.clone(), field)?
                    }
                }),
            };
            action.rewrite = Some(UrlRewrite {
                hostname: r.hostname.clone(),
                path,
            });
        }
        HttpRouteRulesFiltersType::RequestMirror => {
            let m = f
                .request_mirror
                .as_ref()
                .ok_or_else(|| missing("requestMirror"))?;
            let b = &m.backend_ref;
            let target = resolve_backend(
                store,
                key,
                b.group.as_deref(),
                b.kind.as_deref(),
                &b.name,
                b.namespace.as_deref(),
                b.port,
                clusters,
            );
            note_invalid(
                &target,
                format!("{field}.requestMirror.backendRef"),
                problems,
            );
            let fraction_ppm = match (&m.fraction, m.percent) {
                (Some(fr), _) => {
                    let den = fr.denominator.unwrap_or(100).max(1) as u64;
                    (fr.numerator.max(0) as u64 * 1_000_000 / den).min(1_000_000) as u32
                }
                (None, Some(p)) => (p.clamp(0, 100) as u32) * 10_000,
                (None, None) => 1_000_000,
            };
            action.mirrors.push(Mirror {
                target,
                fraction_ppm,
                spread: Default::default(),
            });
        }
        HttpRouteRulesFiltersType::ExtensionRef => {
            return Err((
                format!("{field}.extensionRef"),
                "ExtensionRef filters are not supported".into(),
            ));
        }
        HttpRouteRulesFiltersType::Cors => {
            let c = f.cors.as_ref().ok_or_else(|| missing("cors"))?;
            action.cors = Some(crate::config::Cors {
                allow_origins: c.allow_origins.clone().unwrap_or_default(),
                allow_methods: c.allow_methods.clone().unwrap_or_default(),
                allow_headers: c.allow_headers.clone().unwrap_or_default(),
                expose_headers: c.expose_headers.clone().unwrap_or_default(),
                max_age: c.max_age.and_then(|m| u32::try_from(m).ok()).unwrap_or(5),
                allow_credentials: c.allow_credentials.unwrap_or(false),
            });
        }
        HttpRouteRulesFiltersType::ExternalAuth => {
            return Err((
                field.to_string(),
                "the ExternalAuth filter is not supported".into(),
            ));
        }
    }
    Ok(())
}

fn prefix_modifier(
    matched_prefix: &str,
    replacement: Option<String>,
    field: &str,
) -> Result<PathModifier, (String, String)> {
    if matched_prefix.is_empty() {
        return Err((
            field.to_string(),
            "ReplacePrefixMatch needs the rule's first match to be a PathPrefix match".into(),
        ));
    }
    Ok(PathModifier::Prefix {
        matched: matched_prefix.trim_end_matches('/').to_string(),
        replacement: replacement.unwrap_or_else(|| "/".into()),
    })
}

fn header_modifier(
    m: &HttpRouteRulesFiltersRequestHeaderModifier,
    field: &str,
) -> Result<HeaderModifier, (String, String)> {
    let pair = |name: &str,
                value: &str,
                f: String|
     -> Result<(HeaderName, HeaderValue), (String, String)> {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| (f.clone(), format!("header name {name:?}: {e}")))?;
        let v = HeaderValue::from_str(value)
            .map_err(|e| (f, format!("header value {value:?}: {e}")))?;
        Ok((n, v))
    };
    let mut out = HeaderModifier::default();
    for (i, s) in m.set.iter().flatten().enumerate() {
        out.set
            .push(pair(&s.name, &s.value, format!("{field}.set[{i}]"))?);
    }
    for (i, s) in m.add.iter().flatten().enumerate() {
        out.add
            .push(pair(&s.name, &s.value, format!("{field}.add[{i}]"))?);
    }
    for (i, r) in m.remove.iter().flatten().enumerate() {
        out.remove.push(
            HeaderName::from_bytes(r.as_bytes())
                .map_err(|e| (format!("{field}.remove[{i}]"), e.to_string()))?,
        );
    }
    Ok(out)
}

/// Resolves a backendRef to a cluster, or to an invalid target whose reason is
/// `Reason: message` with the spec's reason.
#[allow(clippy::too_many_arguments)]
fn resolve_backend(
    store: &Store,
    route_key: &NsName,
    group: Option<&str>,
    kind: Option<&str>,
    name: &str,
    namespace: Option<&str>,
    port: Option<i32>,
    clusters: &mut Clusters,
) -> BackendTarget {
    let group = group.unwrap_or("");
    let kind = kind.unwrap_or("Service");
    let ns = namespace.unwrap_or(&route_key.namespace);
    let svc_key = NsName::new(ns, name);
    let label = format!("{svc_key}:{}", port.unwrap_or(0));
    let invalid = |reason: String| BackendTarget::Invalid {
        label: label.clone(),
        reason,
    };
    if !group.is_empty() || kind != "Service" {
        return invalid(format!(
            "InvalidKind: backend kind {}{kind} is not supported; use a Service",
            if group.is_empty() {
                String::new()
            } else {
                format!("{group}/")
            }
        ));
    }
    if ns != route_key.namespace
        && !reference_granted(
            store,
            GATEWAY_GROUP,
            "HTTPRoute",
            &route_key.namespace,
            "",
            "Service",
            &svc_key,
        )
    {
        return invalid(format!(
            "RefNotPermitted: no ReferenceGrant in namespace {ns} allows HTTPRoutes from {} to use Service {svc_key}",
            route_key.namespace
        ));
    }
    let Some(svc) = store.services.get(&svc_key) else {
        return invalid(format!("BackendNotFound: Service {svc_key} does not exist"));
    };
    let Some(port) = port else {
        return invalid(format!(
            "BackendNotFound: no port given for Service {svc_key}"
        ));
    };
    let svc_ports = svc
        .obj
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let Some(svc_port) = svc_ports.iter().find(|p| p.port == port) else {
        return invalid(format!(
            "BackendNotFound: Service {svc_key} has no port {port}"
        ));
    };
    if let Some(c) = clusters.map.get(&label) {
        return BackendTarget::Cluster(c.clone());
    }
    let eps = endpoints(store, &svc_key, svc_port);
    if eps.is_empty() {
        clusters.without_endpoints.push((svc_key.clone(), port));
    }
    let mut cluster = Cluster::new(label.clone(), eps);
    cluster.h2c = svc_port.app_protocol.as_deref() == Some("kubernetes.io/h2c");
    let port_name = svc_port.name.clone().unwrap_or_default();
    cluster.tls = clusters
        .tls
        .get(&(svc_key.clone(), port_name))
        .or_else(|| clusters.tls.get(&(svc_key.clone(), String::new())))
        .cloned();
    let cluster = Arc::new(cluster);
    clusters.map.insert(label, cluster.clone());
    BackendTarget::Cluster(cluster)
}

/// Ready endpoints of a Service port, from the EndpointSlices labelled with the Service name.
fn endpoints(
    store: &Store,
    svc: &NsName,
    port: &k8s_openapi::api::core::v1::ServicePort,
) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for (key, slice) in &store.endpoint_slices {
        if key.namespace != svc.namespace {
            continue;
        }
        let labels = slice.obj.metadata.labels.clone().unwrap_or_default();
        if labels.get("kubernetes.io/service-name").map(String::as_str) != Some(svc.name.as_str()) {
            continue;
        }
        let slice_port = slice
            .obj
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port.name.as_deref().unwrap_or(""));
        let Some(target) = slice_port.and_then(|p| p.port) else {
            continue;
        };
        let Ok(target) = u16::try_from(target) else {
            continue;
        };
        for ep in &slice.obj.endpoints {
            // A missing `ready` means ready, as in Kubernetes.
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for a in &ep.addresses {
                if let Ok(ip) = a.parse::<IpAddr>() {
                    out.push(SocketAddr::new(ip, target));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Builds the Gateway's status and adds its programmed listeners to the snapshot.
fn gateway_status(
    st: &GatewayState<'_>,
    config: &mut Config,
    now: k8s_openapi::jiff::Timestamp,
) -> Vec<ObjectStatus> {
    let generation = st.obj.obj.metadata.generation;
    let mut listener_status = Vec::new();
    let mut by_port: BTreeMap<u16, Vec<&ListenerState>> = BTreeMap::new();
    let mut port_unavailable = false;
    let mut ls_listener_status: HashMap<NsName, Vec<serde_json::Value>> = HashMap::new();
    for l in &st.listeners {
        let programmed = l.programmed() && st.address.is_ok();
        if l.accepted.1 == "PortUnavailable" {
            port_unavailable = true;
        }
        let mut conds = vec![
            condition(
                "Accepted",
                l.accepted.0,
                l.accepted.1,
                l.accepted.2.clone(),
                generation,
                now,
            ),
            condition(
                "ResolvedRefs",
                l.resolved_refs.0,
                l.resolved_refs.1,
                l.resolved_refs.2.clone(),
                generation,
                now,
            ),
        ];
        conds.push(match &l.conflicted {
            Some((reason, msg)) => {
                let mut c = condition("Conflicted", false, reason, msg.clone(), generation, now);
                c.status = "True".into();
                c
            }
            None => condition(
                "Conflicted",
                false,
                "NoConflicts",
                "No conflicts",
                generation,
                now,
            ),
        });
        conds.push(if programmed {
            condition(
                "Programmed",
                true,
                "Programmed",
                "Listener is serving",
                generation,
                now,
            )
        } else if let Some((reason, msg)) = &l.conflicted {
            condition("Programmed", false, reason, msg.clone(), generation, now)
        } else {
            condition(
                "Programmed",
                false,
                "Invalid",
                "Listener is not valid",
                generation,
                now,
            )
        });
        let target = match &l.owner {
            None => &mut listener_status,
            Some(o) => ls_listener_status.entry(o.clone()).or_default(),
        };
        target.push(serde_json::json!({
            "name": l.name,
            "attachedRoutes": l.attached,
            "supportedKinds": l.kinds.iter().map(|k| serde_json::json!({"group": GATEWAY_GROUP, "kind": k})).collect::<Vec<_>>(),
            "conditions": conds,
        }));
        if programmed {
            by_port.entry(l.port).or_default().push(l);
        }
    }
    let own: Vec<&ListenerState> = st.listeners.iter().filter(|l| l.owner.is_none()).collect();
    let valid = own.iter().filter(|l| l.programmed()).count();
    let (accepted, programmed, addresses) = match &st.address {
        Err((reason, msg)) => (
            condition("Accepted", false, reason, msg.clone(), generation, now),
            condition(
                "Programmed",
                false,
                "AddressNotAssigned",
                msg.clone(),
                generation,
                now,
            ),
            vec![],
        ),
        Ok(ip) => {
            let params = st
                .obj
                .obj
                .spec
                .infrastructure
                .as_ref()
                .and_then(|i| i.parameters_ref.as_ref());
            let accepted = if let Some(p) = params {
                condition(
                    "Accepted",
                    false,
                    "InvalidParameters",
                    format!(
                        "infrastructure.parametersRef {}/{} {} is not supported by this controller",
                        p.group, p.kind, p.name
                    ),
                    generation,
                    now,
                )
            } else if valid == own.len() {
                condition(
                    "Accepted",
                    true,
                    "Accepted",
                    "Gateway is accepted",
                    generation,
                    now,
                )
            } else {
                condition(
                    "Accepted",
                    valid > 0,
                    "ListenersNotValid",
                    format!(
                        "{} of {} listeners are not valid",
                        own.len() - valid,
                        own.len()
                    ),
                    generation,
                    now,
                )
            };
            let programmed = if !by_port.is_empty() {
                condition(
                    "Programmed",
                    true,
                    "Programmed",
                    format!("Serving on {ip}"),
                    generation,
                    now,
                )
            } else if port_unavailable {
                condition(
                    "Programmed",
                    false,
                    "AddressNotUsable",
                    format!("the ports of this Gateway on {ip} are used by an older Gateway"),
                    generation,
                    now,
                )
            } else {
                condition(
                    "Programmed",
                    false,
                    "Invalid",
                    "No listener can be served",
                    generation,
                    now,
                )
            };
            (
                accepted,
                programmed,
                vec![serde_json::json!({"type": "IPAddress", "value": ip.to_string()})],
            )
        }
    };

    if let Some(Ok(cert)) = &st.backend_cert {
        config
            .backend_client_certs
            .insert(st.key.clone(), cert.clone());
    }
    if let Ok(ip) = st.address {
        for (port, listeners) in by_port {
            let protocol = listeners[0].protocol.unwrap_or(Protocol::Http);
            let mut set = ListenerSet::default();
            let mut certs: Vec<(Option<String>, Arc<rustls::sign::CertifiedKey>)> = Vec::new();
            // Validation is configured per port, so every listener of the port has the same.
            let client_validation = listeners.iter().find_map(|l| l.client_validation.clone());
            for l in listeners {
                if let Some(c) = &l.cert {
                    certs.push((l.hostname.clone(), c.clone()));
                }
                set.insert(Arc::new(Listener {
                    gateway: st.key.clone(),
                    name: l.name.clone(),
                    port,
                    protocol,
                    hostname: l.hostname.clone(),
                    routes: route_table(&l.routes),
                    cert: l.cert.clone(),
                }));
            }
            let tls = (protocol == Protocol::Https)
                .then(|| crate::engine::tls::server_config(certs, client_validation.as_ref()));
            let addr = SocketAddr::new(ip, port);
            config.binds.insert(
                addr,
                Arc::new(Bind {
                    addr,
                    protocol,
                    gateway: st.key.clone(),
                    gateway_label: st.key.to_string(),
                    listeners: set,
                    tls,
                }),
            );
        }
    }

    let gateway_ok = accepted.status == "True" && programmed.status == "True";
    let mut gw_status = serde_json::json!({
        "addresses": addresses,
        "conditions": gateway_conditions(st, accepted, programmed, generation, now),
        "listeners": listener_status,
    });
    if !st.listener_sets.is_empty() {
        // Only ListenerSets that are Accepted count as attached.
        let accepted = if gateway_ok {
            st.listener_sets
                .iter()
                .filter(|(k, _, allowed)| {
                    let mut own = st.listeners.iter().filter(|l| l.owner.as_ref() == Some(k));
                    *allowed && (own.clone().next().is_none() || own.any(|l| l.programmed()))
                })
                .count()
        } else {
            0
        };
        gw_status["attachedListenerSets"] = accepted.into();
    }
    let mut out = vec![ObjectStatus {
        api_version: format!("{GATEWAY_GROUP}/v1"),
        kind: "Gateway".into(),
        metadata: StatusMeta {
            namespace: Some(st.key.namespace.clone()),
            name: st.key.name.clone(),
            generation,
        },
        status: gw_status,
    }];
    for (ls_key, ls, allowed) in &st.listener_sets {
        let g = ls.obj.metadata.generation;
        let listeners = ls_listener_status.remove(ls_key).unwrap_or_default();
        let conditions = if !allowed {
            let msg = format!(
                "Gateway {} does not allow ListenerSets from namespace {}",
                st.key, ls_key.namespace
            );
            vec![
                condition("Accepted", false, "NotAllowed", msg.clone(), g, now),
                condition("Programmed", false, "NotAllowed", msg, g, now),
            ]
        } else if !gateway_ok {
            let msg = format!("parent Gateway {} is not accepted and programmed", st.key);
            vec![
                condition("Accepted", false, "ParentNotAccepted", msg.clone(), g, now),
                condition("Programmed", false, "ParentNotProgrammed", msg, g, now),
            ]
        } else {
            let own: Vec<&ListenerState> = st
                .listeners
                .iter()
                .filter(|l| l.owner.as_ref() == Some(ls_key))
                .collect();
            let valid = own.iter().filter(|l| l.programmed()).count();
            if valid == own.len() {
                vec![
                    condition(
                        "Accepted",
                        true,
                        "Accepted",
                        "ListenerSet is accepted",
                        g,
                        now,
                    ),
                    condition(
                        "Programmed",
                        true,
                        "Programmed",
                        "ListenerSet is serving",
                        g,
                        now,
                    ),
                ]
            } else {
                let msg = format!(
                    "{} of {} listeners are not valid",
                    own.len() - valid,
                    own.len()
                );
                vec![
                    condition(
                        "Accepted",
                        valid > 0,
                        "ListenersNotValid",
                        msg.clone(),
                        g,
                        now,
                    ),
                    if valid > 0 {
                        condition(
                            "Programmed",
                            true,
                            "Programmed",
                            "ListenerSet is serving its valid listeners",
                            g,
                            now,
                        )
                    } else {
                        condition("Programmed", false, "ListenersNotValid", msg, g, now)
                    },
                ]
            }
        };
        out.push(ObjectStatus {
            api_version: format!("{GATEWAY_GROUP}/v1"),
            kind: "ListenerSet".into(),
            metadata: StatusMeta {
                namespace: Some(ls_key.namespace.clone()),
                name: ls_key.name.clone(),
                generation: g,
            },
            status: serde_json::json!({"conditions": conditions, "listeners": listeners}),
        });
    }
    out
}

/// Accepted and Programmed, and ResolvedRefs when the Gateway itself references something
/// (its backend client certificate).
fn gateway_conditions(
    st: &GatewayState<'_>,
    accepted: Condition,
    programmed: Condition,
    generation: Option<i64>,
    now: k8s_openapi::jiff::Timestamp,
) -> Vec<Condition> {
    let mut conds = vec![accepted, programmed];
    // GEP-91: a Gateway that lets clients without a valid certificate through says so.
    if insecure_frontend_validation(&st.obj.obj) {
        conds.push(condition(
            "InsecureFrontendValidationMode",
            true,
            "ConfigurationChanged",
            "client certificate validation uses AllowInsecureFallback: connections without a valid client certificate are accepted",
            generation,
            now,
        ));
    }
    match &st.backend_cert {
        None => {}
        Some(Ok(_)) => conds.push(condition(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "All references are resolved",
            generation,
            now,
        )),
        Some(Err((reason, msg))) => conds.push(condition(
            "ResolvedRefs",
            false,
            reason,
            msg.clone(),
            generation,
            now,
        )),
    }
    conds
}

/// Whether the default or any per-port frontend validation is AllowInsecureFallback.
fn insecure_frontend_validation(gw: &Gateway) -> bool {
    use gateway_api::experimental::gateways::{
        GatewayTlsFrontendDefaultValidationMode as DefaultMode,
        GatewayTlsFrontendPerPortTlsValidationMode as PortMode,
    };
    let Some(frontend) = gw.spec.tls.as_ref().and_then(|t| t.frontend.as_ref()) else {
        return false;
    };
    let default = frontend
        .default
        .validation
        .as_ref()
        .is_some_and(|v| matches!(v.mode, Some(DefaultMode::AllowInsecureFallback)));
    let per_port = frontend.per_port.iter().flatten().any(|p| {
        p.tls
            .validation
            .as_ref()
            .is_some_and(|v| matches!(v.mode, Some(PortMode::AllowInsecureFallback)))
    });
    default || per_port
}

/// Places route matches into hostname groups, each sorted by precedence.
fn route_table(pending: &[PendingRoute]) -> RouteTable {
    let mut exact: HashMap<String, Vec<(&RouteOrder, Arc<Route>)>> = HashMap::new();
    let mut wildcard: HashMap<String, Vec<(&RouteOrder, Arc<Route>)>> = HashMap::new();
    let mut any: Vec<(&RouteOrder, Arc<Route>)> = Vec::new();
    for p in pending {
        for h in &p.hostnames {
            let entry = (&p.order, p.route.clone());
            match h.as_deref() {
                None => any.push(entry),
                Some(h) => match h.strip_prefix('*') {
                    Some(suffix) => wildcard.entry(suffix.to_string()).or_default().push(entry),
                    None => exact.entry(h.to_string()).or_default().push(entry),
                },
            }
        }
    }
    let sorted = |mut v: Vec<(&RouteOrder, Arc<Route>)>| {
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.into_iter().map(|(_, r)| r).collect::<Vec<_>>()
    };
    let mut wild: Vec<(String, Vec<Arc<Route>>)> =
        wildcard.into_iter().map(|(k, v)| (k, sorted(v))).collect();
    wild.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    RouteTable {
        exact: exact.into_iter().map(|(k, v)| (k, sorted(v))).collect(),
        wildcard: wild,
        any: sorted(any),
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
