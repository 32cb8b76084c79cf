//! The configuration snapshot: what the proxy does, built once by `translate` and read by every
//! request without locks.
//!
//! Names here say what the proxy does (Bind, Listener, RouteTable, Route, Cluster); the Gateway
//! API names survive only as labels for logs, metrics and `/config`. Everything a request needs
//! is precomputed: regexes compiled, routes sorted by precedence, TLS configs built.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method};
use regex::Regex;

use sluice_api::resources::NsName;

pub use sluice_config::{Cors, PathModifier, Protocol, Redirect, RetryPolicy, UrlRewrite};

/// RequestHeaderModifier / ResponseHeaderModifier with names and values parsed once.
#[derive(Clone, Debug, Default)]
pub struct HeaderModifier {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

/// One immutable, versioned configuration.
#[derive(Default)]
pub struct Config {
    pub version: u64,
    /// Every socket the engine listens on, with what it serves.
    pub binds: HashMap<SocketAddr, Arc<Bind>>,
    /// Egress allow-lists.
    pub egress: Arc<sluice_egress_policy::EgressPolicies>,
    /// The client certificate each Gateway presents to TLS backends (`spec.tls.backend`).
    pub backend_client_certs: HashMap<NsName, Arc<pingora::utils::tls::CertKey>>,
}

impl Config {
    /// The bind serving a connection accepted on `local`, including wildcard-address binds.
    pub fn bind_for(&self, local: SocketAddr) -> Option<&Arc<Bind>> {
        self.binds.get(&local).or_else(|| {
            let any = match local {
                SocketAddr::V4(_) => {
                    SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), local.port())
                }
                SocketAddr::V6(_) => {
                    SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), local.port())
                }
            };
            self.binds.get(&any)
        })
    }
}

/// A socket address with the Gateway listeners that share it.
pub struct Bind {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub gateway: NsName,
    /// `namespace/name` of the Gateway, formatted once for metrics and logs.
    pub gateway_label: String,
    pub listeners: ListenerSet,
    /// Present for HTTPS: certificates chosen by SNI among the listeners.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Listeners of one port, looked up by hostname: exact names first, then wildcards from the
/// longest suffix, then the listener without a hostname.
#[derive(Default)]
pub struct ListenerSet {
    pub exact: HashMap<String, Arc<Listener>>,
    /// (suffix with its leading dot, listener), longest suffix first.
    pub wildcard: Vec<(String, Arc<Listener>)>,
    pub any: Option<Arc<Listener>>,
}

impl ListenerSet {
    pub fn insert(&mut self, l: Arc<Listener>) {
        match l.hostname.as_deref() {
            None => self.any = Some(l),
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => {
                    self.wildcard.push((suffix.to_string(), l));
                    self.wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
                }
                None => {
                    self.exact.insert(h.to_string(), l);
                }
            },
        }
    }

    /// The most specific listener whose hostname matches `host` (lowercase, no port).
    pub fn select(&self, host: Option<&str>) -> Option<&Arc<Listener>> {
        if let Some(host) = host {
            if let Some(l) = self.exact.get(host) {
                return Some(l);
            }
            for (suffix, l) in &self.wildcard {
                if wildcard_matches(suffix, host) {
                    return Some(l);
                }
            }
        }
        self.any.as_ref()
    }

    /// More than one listener: a request could name another listener than its connection's SNI.
    pub fn is_shared(&self) -> bool {
        self.exact.len() + self.wildcard.len() + usize::from(self.any.is_some()) > 1
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Listener>> {
        self.exact
            .values()
            .chain(self.wildcard.iter().map(|(_, l)| l))
            .chain(self.any.iter())
    }
}

pub use sluice_api::names::wildcard_matches;

/// One Gateway listener as the proxy serves it.
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
#[derive(Default)]
pub struct RouteTable {
    pub exact: HashMap<String, Vec<Arc<Route>>>,
    /// (suffix with its leading dot, routes), longest suffix first.
    pub wildcard: Vec<(String, Vec<Arc<Route>>)>,
    pub any: Vec<Arc<Route>>,
}

impl RouteTable {
    /// The first route, in Gateway API precedence, that matches the request. Hostname
    /// specificity comes first: exact names, then wildcards from the longest, then routes
    /// without hostnames.
    pub fn find(&self, host: Option<&str>, req: &RequestParts<'_>) -> Option<&Arc<Route>> {
        if let Some(host) = host {
            if let Some(r) = self.exact.get(host).and_then(|rs| first_match(rs, req)) {
                return Some(r);
            }
            for (suffix, rs) in &self.wildcard {
                if wildcard_matches(suffix, host) {
                    if let Some(r) = first_match(rs, req) {
                        return Some(r);
                    }
                }
            }
        }
        first_match(&self.any, req)
    }

    pub fn len(&self) -> usize {
        self.exact.values().map(Vec::len).sum::<usize>()
            + self.wildcard.iter().map(|(_, v)| v.len()).sum::<usize>()
            + self.any.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn first_match<'a>(routes: &'a [Arc<Route>], req: &RequestParts<'_>) -> Option<&'a Arc<Route>> {
    routes.iter().find(|r| r.matcher.matches(req))
}

/// What route matching looks at in a request.
pub struct RequestParts<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
}

impl RequestParts<'static> {
    /// What a TLS, TCP or UDP connection looks like to route matching: the routes of those
    /// listeners are one catch-all match per rule, so any request would do; this one is
    /// `GET /` with no headers.
    pub fn layer4() -> Self {
        static NO_HEADERS: std::sync::OnceLock<http::HeaderMap> = std::sync::OnceLock::new();
        RequestParts {
            method: &Method::GET,
            path: "/",
            query: None,
            headers: NO_HEADERS.get_or_init(http::HeaderMap::new),
        }
    }
}

/// One match of one rule of one HTTPRoute.
pub struct Route {
    pub route: NsName,
    pub rule: usize,
    pub matcher: RouteMatch,
    pub action: Arc<RuleAction>,
}

#[derive(Debug)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub method: Option<Method>,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
}

#[derive(Debug)]
pub enum PathMatch {
    Exact(String),
    /// Stored without a trailing slash; `/` is stored as the empty string and matches all.
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug)]
pub enum StringMatch {
    Exact(String),
    Regex(Regex),
}

impl StringMatch {
    fn matches(&self, v: &str) -> bool {
        match self {
            StringMatch::Exact(e) => e == v,
            StringMatch::Regex(r) => r.is_match(v),
        }
    }
}

#[derive(Debug)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: StringMatch,
}

#[derive(Debug)]
pub struct QueryMatch {
    pub name: String,
    pub value: StringMatch,
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => p == path,
            // Segment-aware: `/foo` matches `/foo` and `/foo/bar`, never `/foobar`.
            PathMatch::Prefix(p) => {
                path.starts_with(p.as_str())
                    && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
            }
            PathMatch::Regex(r) => r.is_match(path),
        }
    }
}

impl RouteMatch {
    pub fn matches(&self, req: &RequestParts<'_>) -> bool {
        if !self.path.matches(req.path) {
            return false;
        }
        if let Some(m) = &self.method {
            if m != req.method {
                return false;
            }
        }
        for h in &self.headers {
            // Several values of one header are matched as their comma-joined list.
            let mut values = req.headers.get_all(&h.name).iter();
            let Some(first) = values.next() else {
                return false;
            };
            let ok = match values.next() {
                None => first.to_str().is_ok_and(|v| h.value.matches(v)),
                Some(second) => {
                    let mut joined = String::from_utf8_lossy(first.as_bytes()).into_owned();
                    for v in std::iter::once(second).chain(values) {
                        joined.push(',');
                        joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
                    }
                    h.value.matches(&joined)
                }
            };
            if !ok {
                return false;
            }
        }
        for q in &self.query {
            // The first occurrence of a parameter is the one matched, as the spec recommends.
            let value = req.query.and_then(|qs| {
                qs.split('&').find_map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (k == q.name).then_some(v)
                })
            });
            match value {
                Some(v) if q.value.matches(v) => {}
                _ => return false,
            }
        }
        true
    }
}

/// What a matched rule does.
#[derive(Default)]
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
    /// The points `pick_backend` takes, one per request.
    pub picks: Spread,
    /// The rule names no backend at all: the spec asks for a 500.
    pub no_backends: bool,
    /// `timeouts.request`: the whole exchange with the backend, retries included.
    pub request_timeout: Option<std::time::Duration>,
    /// `timeouts.backendRequest`: one attempt at a backend.
    pub backend_timeout: Option<std::time::Duration>,
    pub retry: Option<RetryPolicy>,
    pub cors: Option<Cors>,
}

impl RuleAction {
    /// Picks a backend by weight: the one whose share of the total weight holds the next point
    /// of `picks`.
    pub fn pick_backend(&self) -> Option<&WeightedBackend> {
        match self.backends.len() {
            0 => None,
            1 => self.backends.first(),
            _ => {
                let mut left = self.picks.next_below(self.total_weight);
                for b in &self.backends {
                    if left < u64::from(b.weight) {
                        return Some(b);
                    }
                    left -= u64::from(b.weight);
                }
                self.backends.last()
            }
        }
    }
}

/// Points of [0, 1) handed out one per request: the n-th is frac(n/φ), a Weyl sequence. Sharing
/// requests out by them keeps every share within a few requests of its target at any volume,
/// well mixed; independent random draws stray by about √n (one standard deviation is ±7 at 200
/// requests split 50/50).
/// One atomic add per point.
#[derive(Debug)]
pub struct Spread(std::sync::atomic::AtomicU64);

impl Default for Spread {
    /// Starts at a random place in the sequence: a rule rebuilt by every reload would otherwise
    /// send its first request to its first backend each time.
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let start = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Spread(std::sync::atomic::AtomicU64::new(start))
    }
}

impl Spread {
    /// The next point, scaled to [0, total).
    pub fn next_below(&self, total: u64) -> u64 {
        // 2^64/φ: multiplying by it keeps frac(n/φ) in 64-bit fixed point.
        const INV_GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let point = n.wrapping_mul(INV_GOLDEN);
        ((u128::from(point) * u128::from(total)) >> 64) as u64
    }
}

pub struct WeightedBackend {
    pub weight: u32,
    pub target: BackendTarget,
    pub request_headers: Option<HeaderModifier>,
    pub response_headers: Option<HeaderModifier>,
}

pub enum BackendTarget {
    Cluster(Arc<Cluster>),
    /// A reference that did not resolve; requests sent here get a 500.
    Invalid {
        label: String,
        reason: String,
    },
}

impl BackendTarget {
    pub fn label(&self) -> &str {
        match self {
            BackendTarget::Cluster(c) => &c.name,
            BackendTarget::Invalid { label, .. } => label,
        }
    }
}

/// A Service port and its ready endpoints.
pub struct Cluster {
    /// `namespace/service:port`.
    pub name: String,
    pub endpoints: Vec<SocketAddr>,
    /// Round-robin position. Shared by the workers: one atomic add per request. pingora's
    /// `LoadBalancer` did the same selection with a set and a boxed iterator allocated per
    /// pick, and Service endpoints have neither weights nor health checks of ours to use.
    next: std::sync::atomic::AtomicUsize,
    /// HTTP/2 to the endpoints: h2c without TLS, ALPN `h2` with it.
    pub http2: bool,
    /// TLS to the endpoints, from the BackendTLSPolicy that targets the Service.
    pub tls: Option<Arc<BackendTls>>,
}

/// How the gateway connects to a backend with TLS (BackendTLSPolicy).
pub struct BackendTls {
    /// The SNI sent, and the name the certificate must be valid for.
    pub hostname: String,
    /// Trust anchors, in pingora's form; `None` when the policy's CA references are all invalid
    /// and connections must fail.
    pub ca: Option<Arc<pingora::protocols::tls::CaType>>,
    /// `namespace/name` of the policy.
    pub policy: String,
    /// The engine's own TLS connectors, presenting no client certificate.
    pub origins: TlsOrigins,
    /// The same connectors presenting the backend client certificate of a Gateway
    /// (`spec.tls.backend.clientCertificateRef`), for each Gateway that has one.
    pub gateway_origins: HashMap<NsName, TlsOrigins>,
}

impl BackendTls {
    /// The connectors for a connection made on behalf of `gateway`: with its backend client
    /// certificate when it has one.
    pub fn origins(&self, gateway: Option<&NsName>) -> &TlsOrigins {
        gateway
            .and_then(|g| self.gateway_origins.get(g))
            .unwrap_or(&self.origins)
    }
}

/// The TLS connectors of the engine's own for one BackendTLSPolicy (pingora's TLS covers the
/// other cases: HTTP without subjectAltNames).
#[derive(Default)]
pub struct TlsOrigins {
    /// With subjectAltNames: connectors that check the SANs, for HTTP/1.1 (`san`) and HTTP/2
    /// (`san_h2`, ALPN h2) connections.
    pub san: Option<Arc<crate::backend_tls::TlsOrigin>>,
    pub san_h2: Option<Arc<crate::backend_tls::TlsOrigin>>,
    /// For layer-4 forwarding that re-encrypts (TLSRoutes on Terminate listeners): no ALPN,
    /// the SANs checked when the policy lists them, the hostname otherwise. `None` without a
    /// usable CA: those connections fail.
    pub layer4: Option<Arc<crate::backend_tls::TlsOrigin>>,
    /// Pooled connections are shared only among requests with the same key: a hash of the
    /// policy, hostname, trust anchors and subjectAltNames, and, for a Gateway's connectors,
    /// of the Gateway. (pingora's pool key leaves out the CA, so without it a connection
    /// verified against one policy's CA would serve another's, or outlive a CA change; it
    /// counts a client certificate by serial numbers alone, which two CAs may repeat.)
    pub pool_key: u64,
}

impl Cluster {
    pub fn new(name: String, endpoints: Vec<SocketAddr>) -> Self {
        Cluster {
            name,
            endpoints,
            next: std::sync::atomic::AtomicUsize::new(0),
            http2: false,
            tls: None,
        }
    }

    /// The next endpoint in round-robin order, or `None` when the Service has no ready endpoint.
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.endpoints.get(n % self.endpoints.len()).copied()
    }
}

pub struct Mirror {
    pub target: BackendTarget,
    /// Share of requests mirrored, in millionths.
    pub fraction_ppm: u32,
    /// The points that decide, one per request, whether it is mirrored.
    pub spread: Spread,
}

impl Mirror {
    /// Whether this request is mirrored: `fraction_ppm` of all requests, evenly spread.
    pub fn this_one(&self) -> bool {
        self.fraction_ppm >= 1_000_000
            || self.spread.next_below(1_000_000) < u64::from(self.fraction_ppm)
    }
}

/// The effective routing table, as `/config` shows it.
impl Config {
    pub fn dump(&self) -> serde_json::Value {
        let mut binds: Vec<&Arc<Bind>> = self.binds.values().collect();
        binds.sort_by_key(|b| b.addr);
        serde_json::json!({
            "version": self.version,
            "binds": binds.iter().map(|b| b.dump()).collect::<Vec<_>>(),
        })
    }
}

impl Bind {
    fn dump(&self) -> serde_json::Value {
        let mut listeners: Vec<&Arc<Listener>> = self.listeners.iter().collect();
        listeners.sort_by(|a, b| a.name.cmp(&b.name));
        serde_json::json!({
            "address": self.addr.to_string(),
            "protocol": self.protocol,
            "gateway": self.gateway.to_string(),
            "listeners": listeners.iter().map(|l| l.dump()).collect::<Vec<_>>(),
        })
    }
}

impl Listener {
    fn dump(&self) -> serde_json::Value {
        let mut hosts: Vec<serde_json::Value> = Vec::new();
        let mut exact: Vec<_> = self.routes.exact.iter().collect();
        exact.sort_by(|a, b| a.0.cmp(b.0));
        for (h, rs) in exact {
            hosts.push(serde_json::json!({"hostname": h, "routes": rs.iter().map(|r| r.dump()).collect::<Vec<_>>()}));
        }
        for (suffix, rs) in &self.routes.wildcard {
            hosts.push(serde_json::json!({"hostname": format!("*{suffix}"), "routes": rs.iter().map(|r| r.dump()).collect::<Vec<_>>()}));
        }
        if !self.routes.any.is_empty() {
            hosts.push(serde_json::json!({"hostname": "*", "routes": self.routes.any.iter().map(|r| r.dump()).collect::<Vec<_>>()}));
        }
        serde_json::json!({
            "name": self.name,
            "hostname": self.hostname,
            "port": self.port,
            "tls": self.tls,
            "virtualHosts": hosts,
        })
    }
}

impl Route {
    fn dump(&self) -> serde_json::Value {
        let m = &self.matcher;
        let path = match &m.path {
            PathMatch::Exact(p) => serde_json::json!({"type": "Exact", "value": p}),
            PathMatch::Prefix(p) => {
                serde_json::json!({"type": "PathPrefix", "value": if p.is_empty() { "/" } else { p.as_str() }})
            }
            PathMatch::Regex(r) => {
                serde_json::json!({"type": "RegularExpression", "value": r.as_str()})
            }
        };
        let sm = |v: &StringMatch| match v {
            StringMatch::Exact(e) => serde_json::json!({"type": "Exact", "value": e}),
            StringMatch::Regex(r) => {
                serde_json::json!({"type": "RegularExpression", "value": r.as_str()})
            }
        };
        let a = &self.action;
        serde_json::json!({
            "route": self.route.to_string(),
            "rule": self.rule,
            "match": {
                "path": path,
                "method": m.method.as_ref().map(|x| x.as_str()),
                "headers": m.headers.iter().map(|h| serde_json::json!({"name": h.name.as_str(), "match": sm(&h.value)})).collect::<Vec<_>>(),
                "queryParams": m.query.iter().map(|q| serde_json::json!({"name": q.name, "match": sm(&q.value)})).collect::<Vec<_>>(),
            },
            "redirect": a.redirect.as_ref().map(dump_redirect),
            "rewrite": a.rewrite.as_ref().map(dump_url_rewrite),
            "requestHeaders": a.request_headers.as_ref().map(dump_header_modifier),
            "responseHeaders": a.response_headers.as_ref().map(dump_header_modifier),
            "mirrors": a.mirrors.iter().map(|m| serde_json::json!({
                "backend": m.target.label(),
                "percent": f64::from(m.fraction_ppm) / 10_000.0,
            })).collect::<Vec<_>>(),
            "cors": a.cors.as_ref().map(|c| serde_json::json!({
                "allowOrigins": c.allow_origins,
                "allowMethods": c.allow_methods,
                "allowHeaders": c.allow_headers,
                "exposeHeaders": c.expose_headers,
                "maxAge": c.max_age,
                "allowCredentials": c.allow_credentials,
            })),
            "timeouts": {
                "request": a.request_timeout.map(|d| format!("{}ms", d.as_millis())),
                "backendRequest": a.backend_timeout.map(|d| format!("{}ms", d.as_millis())),
            },
            "retry": a.retry.as_ref().map(|r| serde_json::json!({
                "codes": r.codes,
                "attempts": r.attempts,
                "backoff": format!("{}ms", r.backoff.as_millis()),
            })),
            "noBackends": a.no_backends,
            "backends": a.backends.iter().map(|b| {
                let mut v = serde_json::json!({
                    "backend": b.target.label(),
                    "weight": b.weight,
                    "requestHeaders": b.request_headers.as_ref().map(dump_header_modifier),
                    "responseHeaders": b.response_headers.as_ref().map(dump_header_modifier),
                });
                match &b.target {
                    BackendTarget::Cluster(c) => {
                        v["endpoints"] = c.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>().into();
                        if c.http2 {
                            v["protocol"] = "HTTP/2".into();
                        }
                    }
                    BackendTarget::Invalid { reason, .. } => {
                        v["endpoints"] = serde_json::json!([]);
                        v["invalid"] = reason.as_str().into();
                    }
                }
                v
            }).collect::<Vec<_>>(),
        })
    }
}

// The `/config` forms of filters: the Gateway API's field names, plain values.

fn dump_header_modifier(m: &HeaderModifier) -> serde_json::Value {
    let pairs = |v: &[(HeaderName, HeaderValue)]| {
        v.iter()
            .map(|(n, v)| {
                serde_json::json!({"name": n.as_str(), "value": String::from_utf8_lossy(v.as_bytes())})
            })
            .collect::<Vec<_>>()
    };
    serde_json::json!({
        "set": pairs(&m.set),
        "add": pairs(&m.add),
        "remove": m.remove.iter().map(HeaderName::as_str).collect::<Vec<_>>(),
    })
}

fn dump_path_modifier(m: &PathModifier) -> serde_json::Value {
    match m {
        PathModifier::Full(p) => {
            serde_json::json!({"type": "ReplaceFullPath", "replaceFullPath": p})
        }
        PathModifier::Prefix {
            matched,
            replacement,
        } => serde_json::json!({
            "type": "ReplacePrefixMatch",
            "matchedPrefix": if matched.is_empty() { "/" } else { matched.as_str() },
            "replacePrefixMatch": replacement,
        }),
    }
}

fn dump_url_rewrite(m: &UrlRewrite) -> serde_json::Value {
    serde_json::json!({
        "hostname": m.hostname,
        "path": m.path.as_ref().map(dump_path_modifier),
    })
}

fn dump_redirect(m: &Redirect) -> serde_json::Value {
    serde_json::json!({
        "scheme": m.scheme,
        "hostname": m.hostname,
        "port": m.port,
        "path": m.path.as_ref().map(dump_path_modifier),
        "statusCode": m.status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(weights: &[u32]) -> RuleAction {
        RuleAction {
            backends: weights
                .iter()
                .enumerate()
                .map(|(i, w)| WeightedBackend {
                    weight: *w,
                    target: BackendTarget::Invalid {
                        label: i.to_string(),
                        reason: String::new(),
                    },
                    request_headers: None,
                    response_headers: None,
                })
                .collect(),
            total_weight: weights.iter().map(|w| u64::from(*w)).sum(),
            ..RuleAction::default()
        }
    }

    fn picks(action: &RuleAction, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| action.pick_backend().unwrap().target.label().to_string())
            .collect()
    }

    #[test]
    fn weighted_picks_keep_to_the_weights_and_mix() {
        let count = |v: &[String], l: &str| v.iter().filter(|x| *x == l).count();
        // The sequence starts at a random place; from any of them a share stays within two
        // picks of its target over these runs (random draws: ±9 at two standard deviations).
        // 3:1 over 100 picks.
        let v = picks(&split(&[3, 1]), 100);
        assert!((73..=77).contains(&count(&v, "0")), "{v:?}");
        // 1:1 over 200 picks, and every run of 10 has both.
        let v = picks(&split(&[1, 1]), 200);
        assert!((98..=102).contains(&count(&v, "0")), "{v:?}");
        assert!(v
            .windows(10)
            .all(|w| count(w, "0") >= 3 && count(w, "1") >= 3));
        // A 10% canary gets its share within the first 50 requests already.
        let v = picks(&split(&[90, 10]), 50);
        assert!((4..=6).contains(&count(&v, "1")), "{v:?}");
    }

    #[test]
    fn mirrors_take_their_fraction() {
        let mirror = |ppm| Mirror {
            target: BackendTarget::Invalid {
                label: String::new(),
                reason: String::new(),
            },
            fraction_ppm: ppm,
            spread: Spread::default(),
        };
        let taken = |m: &Mirror, n| (0..n).filter(|_| m.this_one()).count();
        assert_eq!(taken(&mirror(1_000_000), 100), 100);
        assert_eq!(taken(&mirror(0), 100), 0);
        // Within two of the share, from any starting point of the sequence.
        assert!((18..=22).contains(&taken(&mirror(200_000), 100)));
        assert!((331..=335).contains(&taken(&mirror(333_333), 1000)));
    }

    #[test]
    fn clusters_pick_endpoints_in_turn() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let c = Cluster::new("default/app:80".into(), vec![a, b]);
        let picks: Vec<_> = (0..5).map(|_| c.pick()).collect();
        assert_eq!(picks, [Some(a), Some(b), Some(a), Some(b), Some(a)]);
        assert_eq!(Cluster::new("default/none:80".into(), vec![]).pick(), None);
    }

    #[test]
    fn prefix_is_segment_aware() {
        let p = PathMatch::Prefix("/foo".into());
        assert!(p.matches("/foo"));
        assert!(p.matches("/foo/"));
        assert!(p.matches("/foo/bar"));
        assert!(!p.matches("/foobar"));
        assert!(PathMatch::Prefix(String::new()).matches("/anything"));
    }

    #[test]
    fn replace_prefix_match_follows_the_spec_table() {
        let m = |matched: &str, repl: &str, path: &str| {
            PathModifier::Prefix {
                matched: matched.trim_end_matches('/').to_string(),
                replacement: repl.to_string(),
            }
            .apply(path)
        };
        assert_eq!(m("/foo", "/xyz", "/foo/bar"), "/xyz/bar");
        assert_eq!(m("/foo", "/xyz/", "/foo/bar"), "/xyz/bar");
        assert_eq!(m("/foo/", "/xyz", "/foo/bar"), "/xyz/bar");
        assert_eq!(m("/foo/", "/xyz/", "/foo/bar"), "/xyz/bar");
        assert_eq!(m("/foo", "/xyz", "/foo"), "/xyz");
        assert_eq!(m("/foo", "/xyz", "/foo/"), "/xyz/");
        assert_eq!(m("/foo/", "/xyz", "/foo/"), "/xyz/");
        assert_eq!(m("/foo", "/", "/foo"), "/");
        assert_eq!(m("/foo", "/", "/foo/bar"), "/bar");
        assert_eq!(m("/", "/xyz", "/bar"), "/xyz/bar");
    }

    #[test]
    fn wildcards_need_at_least_one_label() {
        assert!(wildcard_matches(".example.com", "a.example.com"));
        assert!(wildcard_matches(".example.com", "a.b.example.com"));
        assert!(!wildcard_matches(".example.com", "example.com"));
        assert!(!wildcard_matches(".example.com", "aexample.com"));
    }
}
