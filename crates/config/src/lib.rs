//! The configuration as plain data: what `translate` produces and the engine compiles into the
//! runtime snapshot (`config`) it serves from. Nothing here is a runtime object: regexes are
//! strings, header names are checked strings, TLS material is PEM or DER, and there are no
//! counters. What several places share (a rule's action, a Service port's cluster, a
//! BackendTLSPolicy's settings) is stored once in a table of the `Config` and referred to by
//! index, so the data serializes (serde now; the gRPC messages of the controller follow the same
//! shape) and the engine can rebuild the sharing.
//!
//! Plain values the runtime snapshot uses unchanged (protocols, redirects, rewrites, retries,
//! CORS) are defined here and re-exported by the engine's `config`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use sluice_api::resources::NsName;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u32);

        impl $name {
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }
    };
}

id!(
    /// An index into `Config::routes`.
    RouteId
);
id!(
    /// An index into `Config::actions`.
    ActionId
);
id!(
    /// An index into `Config::clusters`.
    ClusterId
);
id!(
    /// An index into `Config::backend_tls`.
    BackendTlsId
);

/// Appends to a table and returns the new entry's index.
fn push<T>(table: &mut Vec<T>, value: T) -> u32 {
    table.push(value);
    u32::try_from(table.len() - 1).unwrap_or(u32::MAX)
}

/// One versioned configuration, as data.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Config {
    pub version: u64,
    /// Every socket to listen on, with what it serves, by address.
    pub binds: Vec<Bind>,
    /// One match of one rule, as placed on a listener; route tables refer to these.
    pub routes: Vec<Route>,
    /// What a rule does; the routes of one rule share one.
    pub actions: Vec<RuleAction>,
    /// Service ports with their endpoints; the rules using one share it.
    pub clusters: Vec<Cluster>,
    /// How to connect to a backend with TLS, one per BackendTLSPolicy.
    pub backend_tls: Vec<BackendTls>,
    /// The client certificate each Gateway presents to TLS backends (`spec.tls.backend`).
    pub backend_client_certs: Vec<GatewayClientCert>,
    /// The EgressPolicies to enforce, each valid.
    pub egress: Vec<EgressPolicy>,
}

impl Config {
    pub fn add_route(&mut self, r: Route) -> RouteId {
        RouteId(push(&mut self.routes, r))
    }
    pub fn add_action(&mut self, a: RuleAction) -> ActionId {
        ActionId(push(&mut self.actions, a))
    }
    pub fn add_cluster(&mut self, c: Cluster) -> ClusterId {
        ClusterId(push(&mut self.clusters, c))
    }
    pub fn add_backend_tls(&mut self, t: BackendTls) -> BackendTlsId {
        BackendTlsId(push(&mut self.backend_tls, t))
    }
    pub fn route(&self, id: RouteId) -> Option<&Route> {
        self.routes.get(id.index())
    }
    pub fn action(&self, id: ActionId) -> Option<&RuleAction> {
        self.actions.get(id.index())
    }
    pub fn cluster(&self, id: ClusterId) -> Option<&Cluster> {
        self.clusters.get(id.index())
    }
    pub fn backend_tls(&self, id: BackendTlsId) -> Option<&BackendTls> {
        self.backend_tls.get(id.index())
    }

    /// What one Gateway serves: its binds and client certificate, with only the routes,
    /// actions, clusters and TLS settings they reach (renumbered), and the EgressPolicies. This
    /// is what a gateway deployment running that Gateway receives.
    pub fn for_gateway(&self, gateway: &NsName) -> Config {
        let mut out = Config {
            version: self.version,
            egress: self.egress.clone(),
            backend_client_certs: self
                .backend_client_certs
                .iter()
                .filter(|c| &c.gateway == gateway)
                .cloned()
                .collect(),
            ..Config::default()
        };
        let mut slice = Slicer::default();
        for b in self.binds.iter().filter(|b| &b.gateway == gateway) {
            let mut b = b.clone();
            for l in &mut b.listeners {
                l.routes = slice.table(self, &mut out, &l.routes);
            }
            out.binds.push(b);
        }
        out
    }
}

/// Renumbering for `Config::for_gateway`: each entry of the source copied once.
#[derive(Default)]
struct Slicer {
    routes: std::collections::HashMap<RouteId, RouteId>,
    actions: std::collections::HashMap<ActionId, ActionId>,
    clusters: std::collections::HashMap<ClusterId, ClusterId>,
    tls: std::collections::HashMap<BackendTlsId, BackendTlsId>,
}

impl Slicer {
    fn table(&mut self, src: &Config, out: &mut Config, t: &RouteTable) -> RouteTable {
        let mut ids = |rs: &[RouteId]| -> Vec<RouteId> {
            rs.iter().filter_map(|r| self.route(src, out, *r)).collect()
        };
        RouteTable {
            exact: t
                .exact
                .iter()
                .map(|h| HostRoutes {
                    host: h.host.clone(),
                    routes: ids(&h.routes),
                })
                .collect(),
            wildcard: t
                .wildcard
                .iter()
                .map(|h| HostRoutes {
                    host: h.host.clone(),
                    routes: ids(&h.routes),
                })
                .collect(),
            any: ids(&t.any),
        }
    }

    fn route(&mut self, src: &Config, out: &mut Config, id: RouteId) -> Option<RouteId> {
        if let Some(done) = self.routes.get(&id) {
            return Some(*done);
        }
        let mut r = src.route(id)?.clone();
        r.action = self.action(src, out, r.action)?;
        let new = out.add_route(r);
        self.routes.insert(id, new);
        Some(new)
    }

    fn action(&mut self, src: &Config, out: &mut Config, id: ActionId) -> Option<ActionId> {
        if let Some(done) = self.actions.get(&id) {
            return Some(*done);
        }
        let mut a = src.action(id)?.clone();
        for m in &mut a.mirrors {
            m.target = self.target(src, out, &m.target);
        }
        for b in &mut a.backends {
            b.target = self.target(src, out, &b.target);
        }
        let new = out.add_action(a);
        self.actions.insert(id, new);
        Some(new)
    }

    fn target(&mut self, src: &Config, out: &mut Config, t: &BackendTarget) -> BackendTarget {
        let BackendTarget::Cluster(id) = t else {
            return t.clone();
        };
        if let Some(done) = self.clusters.get(id) {
            return BackendTarget::Cluster(*done);
        }
        let Some(c) = src.cluster(*id) else {
            return t.clone();
        };
        let mut c = c.clone();
        c.tls = c.tls.and_then(|tid| {
            if let Some(done) = self.tls.get(&tid) {
                return Some(*done);
            }
            let new = out.add_backend_tls(src.backend_tls(tid)?.clone());
            self.tls.insert(tid, new);
            Some(new)
        });
        let new = out.add_cluster(c);
        self.clusters.insert(*id, new);
        BackendTarget::Cluster(new)
    }
}

/// A certificate chain and private key, as PEM, from a Secret's `tls.crt` and `tls.key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

/// The certificate a Gateway presents to backends that ask for one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GatewayClientCert {
    pub gateway: NsName,
    pub pem: TlsPem,
}

/// A socket address with the Gateway listeners that share it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bind {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub gateway: NsName,
    pub listeners: Vec<Listener>,
    /// Present for HTTPS.
    pub tls: Option<ServerTls>,
}

/// TLS termination of one port: the certificate of each listener by hostname, and client
/// certificate validation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerTls {
    pub certs: Vec<ListenerCert>,
    pub client_validation: Option<ClientValidation>,
}

/// The certificate served for a hostname (`None`: the listener has no hostname).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListenerCert {
    pub hostname: Option<String>,
    pub pem: TlsPem,
}

/// Frontend client certificate validation of an HTTPS port.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientValidation {
    /// Trust anchors, DER.
    pub roots: Vec<Vec<u8>>,
    /// AllowInsecureFallback: ask for a certificate, accept the connection without a valid one.
    pub insecure_fallback: bool,
}

/// One Gateway listener.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Listener {
    pub gateway: NsName,
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
    pub hostname: Option<String>,
    pub routes: RouteTable,
    /// Whether it terminates TLS with a certificate of its own.
    pub tls: bool,
}

/// Routes of a listener, grouped by the hostname they serve, each group in precedence order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RouteTable {
    /// Exact hostnames, sorted by name.
    pub exact: Vec<HostRoutes>,
    /// Wildcards by suffix with its leading dot (`.example.com`), longest suffix first.
    pub wildcard: Vec<HostRoutes>,
    /// Routes for any hostname.
    pub any: Vec<RouteId>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostRoutes {
    pub host: String,
    pub routes: Vec<RouteId>,
}

/// One match of one rule of one HTTPRoute. Routes of one rule share its action.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Route {
    pub route: NsName,
    pub rule: usize,
    pub matcher: RouteMatch,
    pub action: ActionId,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RouteMatch {
    pub path: PathMatch,
    /// An HTTP method, checked by translation.
    pub method: Option<String>,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PathMatch {
    Exact(String),
    /// Stored without a trailing slash; `/` is stored as the empty string and matches all.
    Prefix(String),
    /// A regular expression, checked by translation.
    Regex(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum StringMatch {
    Exact(String),
    /// A regular expression, checked by translation.
    Regex(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// A header name, checked and lowercased by translation.
    pub name: String,
    pub value: StringMatch,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueryMatch {
    pub name: String,
    pub value: StringMatch,
}

/// What a matched rule does.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RuleAction {
    /// `namespace/name` of the HTTPRoute, for logs and metrics.
    pub route_label: String,
    pub request_headers: Option<HeaderModifier>,
    pub response_headers: Option<HeaderModifier>,
    pub rewrite: Option<UrlRewrite>,
    pub redirect: Option<Redirect>,
    pub mirrors: Vec<Mirror>,
    /// Backends with a weight above zero.
    pub backends: Vec<WeightedBackend>,
    pub total_weight: u64,
    /// The rule names no backend at all: the spec asks for a 500.
    pub no_backends: bool,
    /// `timeouts.request`: the whole exchange with the backend, retries included.
    pub request_timeout: Option<Duration>,
    /// `timeouts.backendRequest`: one attempt at a backend.
    pub backend_timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub cors: Option<Cors>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Mirror {
    pub target: BackendTarget,
    /// Share of requests mirrored, in millionths.
    pub fraction_ppm: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WeightedBackend {
    pub weight: u32,
    pub target: BackendTarget,
    pub request_headers: Option<HeaderModifier>,
    pub response_headers: Option<HeaderModifier>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum BackendTarget {
    Cluster(ClusterId),
    /// A reference that did not resolve; requests sent here get a 500.
    Invalid {
        label: String,
        reason: String,
    },
}

/// A Service port and its ready endpoints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cluster {
    /// `namespace/service:port`.
    pub name: String,
    pub endpoints: Vec<SocketAddr>,
    /// HTTP/2 to the endpoints (a GRPCRoute's backends, or a Service port whose appProtocol is
    /// `kubernetes.io/h2c`): with prior knowledge (h2c) without TLS, by ALPN with it.
    pub http2: bool,
    /// TLS to the endpoints, from the BackendTLSPolicy that targets the Service.
    pub tls: Option<BackendTlsId>,
}

impl Cluster {
    pub fn new(name: String, endpoints: Vec<SocketAddr>) -> Self {
        Cluster {
            name,
            endpoints,
            http2: false,
            tls: None,
        }
    }
}

/// How the gateway connects to a backend with TLS (BackendTLSPolicy).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackendTls {
    /// The SNI sent, and the name the certificate must be valid for.
    pub hostname: String,
    /// Trust anchors, DER; `None` when the policy's CA references are all invalid and
    /// connections must fail.
    pub ca: Option<Vec<Vec<u8>>>,
    /// `namespace/name` of the policy.
    pub policy: String,
    /// subjectAltNames the certificate must carry one of, when the policy names any.
    pub sans: Option<SubjectAltNames>,
    /// Pooled connections are shared only among requests with the same key: a hash of the
    /// policy, hostname, trust anchors and subjectAltNames. (pingora's pool key leaves out the
    /// CA, so without it a connection verified against one policy's CA would serve another's,
    /// or outlive a CA change.)
    pub pool_key: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubjectAltNames {
    pub dns: Vec<String>,
    pub uris: Vec<String>,
}

/// A valid EgressPolicy and the CA certificates its rules reference (by ConfigMap).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EgressPolicy {
    pub key: NsName,
    pub spec: sluice_api::egress::EgressPolicySpec,
    pub cas: Vec<ConfigMapCas>,
}

/// The CA certificates (DER) of one ConfigMap.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConfigMapCas {
    pub config_map: NsName,
    pub certs: Vec<Vec<u8>>,
}

/// RequestHeaderModifier / ResponseHeaderModifier, with names checked and lowercased and values
/// checked by translation.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HeaderModifier {
    pub set: Vec<Header>,
    pub add: Vec<Header>,
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    Http,
    Https,
    /// TLS listeners of TLSRoutes: passthrough (routed by the ClientHello's SNI) when the bind
    /// has no certificates, terminated by the gateway when it has.
    Tls,
    /// TCP listeners of TCPRoutes.
    Tcp,
    /// UDP listeners of UDPRoutes.
    Udp,
}

impl Protocol {
    pub fn scheme(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Tls => "tls",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// Served by the HTTP proxy (the others are forwarded at layer 4).
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Https)
    }
}

/// GEP-1731 retries: which answers are retried, how often, and the pause between attempts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub codes: Vec<u16>,
    /// Retries after the first attempt.
    pub attempts: u32,
    pub backoff: Duration,
}

/// The CORS filter (GEP-1767).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Cors {
    /// `*`, exact origins, or origins with a `*` host label (`https://*.example.com`).
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: u32,
    pub allow_credentials: bool,
}

impl Cors {
    /// Does the policy allow this `Origin` value?
    pub fn allows(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|o| {
            if o == "*" {
                return true;
            }
            match o.split_once("://*") {
                // `https://*.example.com` matches `https://a.example.com` and deeper names.
                Some((scheme, suffix)) => origin
                    .strip_prefix(scheme)
                    .and_then(|r| r.strip_prefix("://"))
                    .is_some_and(|host| host.len() > suffix.len() && host.ends_with(suffix)),
                None => o.eq_ignore_ascii_case(origin),
            }
        })
    }

    /// The Access-Control-Allow-Origin value for an allowed origin.
    pub fn allow_origin_value<'a>(&self, origin: &'a str) -> &'a str {
        if self.allow_origins.iter().any(|o| o == "*") && !self.allow_credentials {
            "*"
        } else {
            origin
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PathModifier {
    Full(String),
    /// Replaces the matched prefix (stored without its trailing slash).
    Prefix {
        matched: String,
        replacement: String,
    },
}

impl PathModifier {
    /// Applies the spec's rules, including the trailing-slash cases of ReplacePrefixMatch.
    pub fn apply(&self, path: &str) -> String {
        match self {
            PathModifier::Full(p) => p.clone(),
            PathModifier::Prefix {
                matched,
                replacement,
            } => {
                let rest = path.get(matched.len()..).unwrap_or("");
                let repl = replacement.trim_end_matches('/');
                let out = format!("{repl}{rest}");
                if out.is_empty() {
                    "/".to_string()
                } else {
                    out
                }
            }
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UrlRewrite {
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub path: Option<PathModifier>,
    pub status: u16,
}
