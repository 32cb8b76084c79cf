//! The configuration as plain data: what `translate` produces and the engine compiles into the
//! runtime snapshot (`config`) it serves from. Nothing here is a runtime object: regexes are
//! strings, TLS material is PEM or DER, backends are named, and there are no counters. So the
//! same data can come from the file provider or, next, from the controller over gRPC.
//!
//! Values shared with the runtime snapshot unchanged (filters, protocols) are defined here and
//! re-exported by `config`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method};
use serde::Serialize;

use sluice_api::resources::NsName;

/// One versioned configuration, as data.
#[derive(Debug, Default)]
pub struct Config {
    pub version: u64,
    /// Every socket to listen on, with what it serves.
    pub binds: HashMap<SocketAddr, Bind>,
    /// The client certificate each Gateway presents to TLS backends (`spec.tls.backend`).
    pub backend_client_certs: HashMap<NsName, TlsPem>,
    /// The EgressPolicies to enforce, each valid.
    pub egress: Vec<EgressPolicy>,
}

/// A certificate chain and private key, as PEM, from a Secret's `tls.crt` and `tls.key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

/// A socket address with the Gateway listeners that share it.
#[derive(Debug)]
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
#[derive(Debug)]
pub struct ServerTls {
    pub certs: Vec<(Option<String>, TlsPem)>,
    pub client_validation: Option<ClientValidation>,
}

/// Frontend client certificate validation of an HTTPS port.
#[derive(Clone, Debug)]
pub struct ClientValidation {
    /// Trust anchors, DER.
    pub roots: Vec<Vec<u8>>,
    /// AllowInsecureFallback: ask for a certificate, accept the connection without a valid one.
    pub insecure_fallback: bool,
}

/// One Gateway listener.
#[derive(Debug)]
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
#[derive(Debug, Default)]
pub struct RouteTable {
    pub exact: HashMap<String, Vec<Arc<Route>>>,
    /// (suffix with its leading dot, routes), longest suffix first.
    pub wildcard: Vec<(String, Vec<Arc<Route>>)>,
    pub any: Vec<Arc<Route>>,
}

/// One match of one rule of one HTTPRoute. Routes of one rule share its action.
#[derive(Debug)]
pub struct Route {
    pub route: NsName,
    pub rule: usize,
    pub matcher: RouteMatch,
    pub action: Arc<RuleAction>,
}

#[derive(Clone, Debug)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub method: Option<Method>,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
}

#[derive(Clone, Debug)]
pub enum PathMatch {
    Exact(String),
    /// Stored without a trailing slash; `/` is stored as the empty string and matches all.
    Prefix(String),
    /// A regular expression, checked by translation.
    Regex(String),
}

#[derive(Clone, Debug)]
pub enum StringMatch {
    Exact(String),
    /// A regular expression, checked by translation.
    Regex(String),
}

#[derive(Clone, Debug)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: StringMatch,
}

#[derive(Clone, Debug)]
pub struct QueryMatch {
    pub name: String,
    pub value: StringMatch,
}

/// What a matched rule does.
#[derive(Debug, Default)]
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
    pub request_timeout: Option<std::time::Duration>,
    /// `timeouts.backendRequest`: one attempt at a backend.
    pub backend_timeout: Option<std::time::Duration>,
    pub retry: Option<RetryPolicy>,
    pub cors: Option<Cors>,
}

#[derive(Debug)]
pub struct Mirror {
    pub target: BackendTarget,
    /// Share of requests mirrored, in millionths.
    pub fraction_ppm: u32,
}

#[derive(Debug)]
pub struct WeightedBackend {
    pub weight: u32,
    pub target: BackendTarget,
    pub request_headers: Option<HeaderModifier>,
    pub response_headers: Option<HeaderModifier>,
}

#[derive(Clone, Debug)]
pub enum BackendTarget {
    Cluster(Arc<Cluster>),
    /// A reference that did not resolve; requests sent here get a 500.
    Invalid {
        label: String,
        reason: String,
    },
}

/// A Service port and its ready endpoints.
#[derive(Debug)]
pub struct Cluster {
    /// `namespace/service:port`.
    pub name: String,
    pub endpoints: Vec<SocketAddr>,
    /// The Service port's appProtocol is `kubernetes.io/h2c`: HTTP/2 without TLS.
    pub h2c: bool,
    /// TLS to the endpoints, from the BackendTLSPolicy that targets the Service.
    pub tls: Option<Arc<BackendTls>>,
}

impl Cluster {
    pub fn new(name: String, endpoints: Vec<SocketAddr>) -> Self {
        Cluster {
            name,
            endpoints,
            h2c: false,
            tls: None,
        }
    }
}

/// How the gateway connects to a backend with TLS (BackendTLSPolicy).
#[derive(Debug)]
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

#[derive(Clone, Debug)]
pub struct SubjectAltNames {
    pub dns: Vec<String>,
    pub uris: Vec<String>,
}

/// A valid EgressPolicy and the CA certificates its rules reference (by ConfigMap).
#[derive(Clone, Debug)]
pub struct EgressPolicy {
    pub key: NsName,
    pub spec: sluice_api::egress::EgressPolicySpec,
    pub cas: BTreeMap<NsName, Vec<Vec<u8>>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Protocol {
    Http,
    Https,
}

impl Protocol {
    pub fn scheme(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }
}

/// GEP-1731 retries: which answers are retried, how often, and the pause between attempts.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub codes: Vec<u16>,
    /// Retries after the first attempt.
    pub attempts: u32,
    pub backoff: std::time::Duration,
}

/// The CORS filter (GEP-1767).
#[derive(Clone, Debug, Default)]
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

/// RequestHeaderModifier / ResponseHeaderModifier.
#[derive(Clone, Debug, Default)]
pub struct HeaderModifier {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

#[derive(Clone, Debug)]
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

#[derive(Clone, Debug)]
pub struct UrlRewrite {
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

#[derive(Clone, Debug)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub path: Option<PathModifier>,
    pub status: u16,
}
