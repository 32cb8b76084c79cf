//! The one step from the configuration as data (`ir`) to the runtime snapshot the data path
//! reads (`config`): regexes compiled, header names parsed, TLS configurations built, clusters
//! given their round-robin counters and rules their pick sequences. What the data shares by
//! index stays shared: a rule's matches keep one action (one weighted-pick sequence), a Service
//! port one cluster (one round-robin position). Only what a listener reaches is built.
//!
//! Translation has checked everything here; should something still not compile (a bug, or data
//! from a peer that did not check), it is logged and fails closed: a regex that never matches, a
//! route that is left out, a TLS port without certificates.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method};
use regex::Regex;
use tracing::error;

use crate::config as rt;
use sluice_api::resources::NsName;
use sluice_config as ir;

/// Compiles a configuration for the engine.
pub fn compile(c: ir::Config) -> rt::Config {
    let mut backend_client_certs = HashMap::new();
    let mut client_auth = HashMap::new();
    for cc in &c.backend_client_certs {
        match (
            client_cert(&cc.pem),
            super::backend_tls::ClientAuth::from_pem(&cc.pem.cert, &cc.pem.key),
        ) {
            (Some(ck), Some(auth)) => {
                backend_client_certs.insert(cc.gateway.clone(), Arc::new(ck));
                client_auth.insert(cc.gateway.clone(), auth);
            }
            _ => error!(gateway = %cc.gateway, "backend client certificate does not parse"),
        }
    }
    let mut cx = Compiler {
        src: &c,
        actions: vec![None; c.actions.len()],
        routes: vec![None; c.routes.len()],
        clusters: vec![None; c.clusters.len()],
        backend_tls: vec![None; c.backend_tls.len()],
        client_auth,
    };
    let mut binds = HashMap::new();
    for b in &c.binds {
        binds.insert(b.addr, Arc::new(cx.bind(b)));
    }
    rt::Config {
        version: c.version,
        binds,
        backend_client_certs,
        egress: Arc::new(egress(&c.egress)),
    }
}

/// The runtime objects made so far, by the index of the data they come from.
struct Compiler<'a> {
    src: &'a ir::Config,
    actions: Vec<Option<Arc<rt::RuleAction>>>,
    routes: Vec<Option<Option<Arc<rt::Route>>>>,
    clusters: Vec<Option<Arc<rt::Cluster>>>,
    backend_tls: Vec<Option<Arc<rt::BackendTls>>>,
    /// The Gateways' backend client certificates, for the engine's own TLS connectors.
    client_auth: HashMap<NsName, super::backend_tls::ClientAuth>,
}

impl Compiler<'_> {
    fn bind(&mut self, b: &ir::Bind) -> rt::Bind {
        let mut listeners = rt::ListenerSet::default();
        for l in &b.listeners {
            listeners.insert(Arc::new(rt::Listener {
                gateway: l.gateway.clone(),
                name: l.name.clone(),
                port: l.port,
                protocol: l.protocol,
                hostname: l.hostname.clone(),
                routes: self.route_table(&l.routes),
                tls: l.tls,
            }));
        }
        let tls = b.tls.as_ref().map(|t| {
            let certs = t
                .certs
                .iter()
                .filter_map(|c| {
                    match sluice_api::pem::certified_key_from_pem(&c.pem.cert, &c.pem.key) {
                        Ok(ck) => Some((c.hostname.clone(), ck)),
                        Err(e) => {
                            error!(addr = %b.addr, error = %e, "listener certificate does not parse");
                            None
                        }
                    }
                })
                .collect();
            super::tls::server_config(certs, t.client_validation.as_ref(), b.protocol.is_http())
        });
        rt::Bind {
            addr: b.addr,
            protocol: b.protocol,
            gateway_label: b.gateway.to_string(),
            gateway: b.gateway.clone(),
            listeners,
            tls,
        }
    }

    fn route_table(&mut self, t: &ir::RouteTable) -> rt::RouteTable {
        let mut routes =
            |rs: &[ir::RouteId]| rs.iter().filter_map(|r| self.route(*r)).collect::<Vec<_>>();
        rt::RouteTable {
            exact: t
                .exact
                .iter()
                .map(|h| (h.host.clone(), routes(&h.routes)))
                .collect(),
            wildcard: t
                .wildcard
                .iter()
                .map(|h| (h.host.clone(), routes(&h.routes)))
                .collect(),
            any: routes(&t.any),
        }
    }

    /// A route, or `None` (logged) when its matcher or action does not compile.
    fn route(&mut self, id: ir::RouteId) -> Option<Arc<rt::Route>> {
        if let Some(done) = self.routes.get(id.index()).and_then(Option::as_ref) {
            return done.clone();
        }
        let src = self.src;
        let out = match src.route(id) {
            None => {
                error!(
                    route = id.0,
                    "the configuration has no such route; it is left out"
                );
                None
            }
            Some(r) => match (route_match(&r.matcher), self.action(r.action)) {
                (Ok(matcher), Some(action)) => Some(Arc::new(rt::Route {
                    route: r.route.clone(),
                    rule: r.rule,
                    matcher,
                    action,
                })),
                (Err(e), _) => {
                    error!(route = %r.route, rule = r.rule, error = %e, "route match does not compile; the route is left out");
                    None
                }
                (Ok(_), None) => {
                    error!(route = %r.route, rule = r.rule, "the configuration has no such action; the route is left out");
                    None
                }
            },
        };
        if let Some(slot) = self.routes.get_mut(id.index()) {
            *slot = Some(out.clone());
        }
        out
    }

    fn action(&mut self, id: ir::ActionId) -> Option<Arc<rt::RuleAction>> {
        if let Some(done) = self.actions.get(id.index()).and_then(Option::as_ref) {
            return Some(done.clone());
        }
        let a = self.src.action(id)?;
        let out = Arc::new(rt::RuleAction {
            route_label: a.route_label.clone(),
            request_headers: a.request_headers.as_ref().map(header_modifier),
            response_headers: a.response_headers.as_ref().map(header_modifier),
            rewrite: a.rewrite.clone(),
            redirect: a.redirect.clone(),
            mirrors: a
                .mirrors
                .iter()
                .map(|m| rt::Mirror {
                    target: self.target(&m.target),
                    fraction_ppm: m.fraction_ppm,
                    spread: rt::Spread::default(),
                })
                .collect(),
            backends: a
                .backends
                .iter()
                .map(|b| rt::WeightedBackend {
                    weight: b.weight,
                    target: self.target(&b.target),
                    request_headers: b.request_headers.as_ref().map(header_modifier),
                    response_headers: b.response_headers.as_ref().map(header_modifier),
                })
                .collect(),
            total_weight: a.total_weight,
            picks: rt::Spread::default(),
            no_backends: a.no_backends,
            request_timeout: a.request_timeout,
            backend_timeout: a.backend_timeout,
            retry: a.retry.clone(),
            cors: a.cors.clone(),
        });
        if let Some(slot) = self.actions.get_mut(id.index()) {
            *slot = Some(out.clone());
        }
        Some(out)
    }

    fn target(&mut self, t: &ir::BackendTarget) -> rt::BackendTarget {
        let invalid = |label: &str, reason: &str| rt::BackendTarget::Invalid {
            label: label.to_string(),
            reason: reason.to_string(),
        };
        match t {
            ir::BackendTarget::Invalid { label, reason } => invalid(label, reason),
            ir::BackendTarget::Cluster(id) => match self.cluster(*id) {
                Some(c) => rt::BackendTarget::Cluster(c),
                None => invalid(
                    &format!("cluster {}", id.0),
                    "BackendNotFound: the configuration has no such cluster",
                ),
            },
        }
    }

    fn cluster(&mut self, id: ir::ClusterId) -> Option<Arc<rt::Cluster>> {
        if let Some(done) = self.clusters.get(id.index()).and_then(Option::as_ref) {
            return Some(done.clone());
        }
        let c = self.src.cluster(id)?;
        let mut out = rt::Cluster::new(c.name.clone(), c.endpoints.clone());
        out.http2 = c.http2;
        out.tls = c.tls.and_then(|t| self.backend_tls(t));
        if c.tls.is_some() && out.tls.is_none() {
            error!(cluster = %c.name, "backend TLS settings are missing; the cluster is left out");
            return None;
        }
        let out = Arc::new(out);
        if let Some(slot) = self.clusters.get_mut(id.index()) {
            *slot = Some(out.clone());
        }
        Some(out)
    }

    fn backend_tls(&mut self, id: ir::BackendTlsId) -> Option<Arc<rt::BackendTls>> {
        if let Some(done) = self.backend_tls.get(id.index()).and_then(Option::as_ref) {
            return Some(done.clone());
        }
        let t = self.src.backend_tls(id)?;
        let ca = t.ca.as_ref().map(|roots| {
            let wrapped: Vec<pingora::utils::tls::WrappedX509> = roots
                .iter()
                .map(|der| {
                    pingora::utils::tls::WrappedX509::new(
                        der.clone(),
                        pingora::utils::tls::parse_x509,
                    )
                })
                .collect();
            Arc::<pingora::protocols::tls::CaType>::from(wrapped.into_boxed_slice())
        });
        let roots: Option<Vec<rustls_pki_types::CertificateDer<'static>>> =
            t.ca.as_ref().map(|r| {
                r.iter()
                    .map(|der| rustls_pki_types::CertificateDer::from(der.clone()))
                    .collect()
            });
        let sans = t
            .sans
            .as_ref()
            .map(|s| (s.dns.as_slice(), s.uris.as_slice()));
        use super::backend_tls::{ClientAuth, TlsOrigin, ALPN_H2, ALPN_HTTP1};
        let origins = |client: Option<(&NsName, &ClientAuth)>| {
            let pool_key = match client {
                None => t.pool_key,
                Some((gateway, _)) => {
                    use std::hash::{Hash, Hasher};
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    (t.pool_key, &gateway.namespace, &gateway.name).hash(&mut h);
                    h.finish()
                }
            };
            let client = client.map(|(_, auth)| auth);
            let origin = |sans, alpn| {
                let roots = roots.clone()?;
                TlsOrigin::new(roots, &t.hostname, sans, alpn, client).map(Arc::new)
            };
            let (san, san_h2) = match sans {
                Some(s) => (
                    origin(Some(s), Some(ALPN_HTTP1)),
                    origin(Some(s), Some(ALPN_H2)),
                ),
                None => (None, None),
            };
            rt::TlsOrigins {
                san,
                san_h2,
                layer4: origin(sans, None),
                pool_key,
            }
        };
        let out = Arc::new(rt::BackendTls {
            hostname: t.hostname.clone(),
            ca,
            policy: t.policy.clone(),
            origins: origins(None),
            gateway_origins: self
                .client_auth
                .iter()
                .map(|(gateway, auth)| (gateway.clone(), origins(Some((gateway, auth)))))
                .collect(),
        });
        if let Some(slot) = self.backend_tls.get_mut(id.index()) {
            *slot = Some(out.clone());
        }
        Some(out)
    }
}

/// Header names and values parsed; one that does not parse (translation checks them) is
/// logged and left out.
fn header_modifier(m: &ir::HeaderModifier) -> rt::HeaderModifier {
    let pairs = |hs: &[ir::Header]| {
        hs.iter()
            .filter_map(|h| {
                match (
                    HeaderName::from_bytes(h.name.as_bytes()),
                    HeaderValue::from_str(&h.value),
                ) {
                    (Ok(n), Ok(v)) => Some((n, v)),
                    _ => {
                        error!(header = %h.name, "header modifier entry does not parse; left out");
                        None
                    }
                }
            })
            .collect()
    };
    rt::HeaderModifier {
        set: pairs(&m.set),
        add: pairs(&m.add),
        remove: m
            .remove
            .iter()
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect(),
    }
}

/// A regex translation checked; one that still fails never matches.
fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| {
        error!(%pattern, error = %e, "regular expression does not compile; it matches nothing");
        #[allow(clippy::unwrap_used)] // a fixed, valid expression
        Regex::new("[^\\s\\S]").unwrap()
    })
}

fn string_match(m: &ir::StringMatch) -> rt::StringMatch {
    match m {
        ir::StringMatch::Exact(s) => rt::StringMatch::Exact(s.clone()),
        ir::StringMatch::Regex(r) => rt::StringMatch::Regex(regex(r)),
    }
}

fn route_match(m: &ir::RouteMatch) -> Result<rt::RouteMatch, String> {
    let method = match &m.method {
        Some(s) => {
            Some(Method::from_bytes(s.as_bytes()).map_err(|e| format!("method {s:?}: {e}"))?)
        }
        None => None,
    };
    let mut headers = Vec::new();
    for h in &m.headers {
        headers.push(rt::HeaderMatch {
            name: HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|e| format!("header name {:?}: {e}", h.name))?,
            value: string_match(&h.value),
        });
    }
    Ok(rt::RouteMatch {
        path: match &m.path {
            ir::PathMatch::Exact(p) => rt::PathMatch::Exact(p.clone()),
            ir::PathMatch::Prefix(p) => rt::PathMatch::Prefix(p.clone()),
            ir::PathMatch::Regex(r) => rt::PathMatch::Regex(regex(r)),
        },
        method,
        headers,
        query: m
            .query
            .iter()
            .map(|q| rt::QueryMatch {
                name: q.name.clone(),
                value: string_match(&q.value),
            })
            .collect(),
    })
}

/// The client certificate a Gateway presents to TLS backends, in pingora's form.
fn client_cert(pem: &ir::TlsPem) -> Option<pingora::utils::tls::CertKey> {
    let certs: Vec<Vec<u8>> = rustls_pemfile::certs(&mut &pem.cert[..])
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect();
    let key = rustls_pemfile::private_key(&mut &pem.key[..])
        .ok()
        .flatten()?
        .secret_der()
        .to_vec();
    (!certs.is_empty()).then(|| pingora::utils::tls::CertKey::new(certs, key))
}

/// The system's trust anchors, read once (for TLS origination without CA references).
fn system_roots() -> Vec<rustls_pki_types::CertificateDer<'static>> {
    static ROOTS: std::sync::OnceLock<Vec<rustls_pki_types::CertificateDer<'static>>> =
        std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                error!(error = %e, "reading the system trust store");
            }
            found.certs
        })
        .clone()
}

/// The EgressPolicies, compiled with the CA certificates translation resolved for them.
pub fn egress(policies: &[ir::EgressPolicy]) -> sluice_egress_policy::EgressPolicies {
    use sluice_egress_policy::EgressPolicies;
    let mut compiled = Vec::new();
    for p in policies {
        let ca = |k: &sluice_api::resources::NsName| {
            p.cas
                .iter()
                .find(|c| &c.config_map == k)
                .map(|c| {
                    c.certs
                        .iter()
                        .map(|c| rustls_pki_types::CertificateDer::from(c.clone()))
                        .collect()
                })
                .ok_or_else(|| format!("ConfigMap {k} was not resolved"))
        };
        match EgressPolicies::compile_one(&p.key, &p.spec, &ca, &system_roots) {
            Ok(c) => compiled.push(c),
            Err((field, e)) => {
                error!(policy = %p.key, %field, error = %e, "EgressPolicy does not compile")
            }
        }
    }
    EgressPolicies::from_compiled(compiled)
}
