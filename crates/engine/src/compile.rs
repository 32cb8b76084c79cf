//! The one step from the configuration as data (`ir`) to the runtime snapshot the data path
//! reads (`config`): regexes compiled, TLS configurations built, clusters given their
//! round-robin counters and rules their pick sequences. What the data shares stays shared: a
//! rule's matches keep one action (one weighted-pick sequence), a Service port one cluster (one
//! round-robin position).
//!
//! Translation has checked everything here; should something still not compile (a bug), it is
//! logged and fails closed: a regex that never matches, a TLS port without certificates.

use std::collections::HashMap;
use std::sync::Arc;

use regex::Regex;
use tracing::error;

use crate::config as rt;
use sluice_config as ir;

/// Compiles a configuration for the engine.
pub fn compile(c: ir::Config) -> rt::Config {
    let mut cx = Compiler::default();
    let mut binds = HashMap::new();
    for (addr, b) in c.binds {
        binds.insert(addr, Arc::new(cx.bind(b)));
    }
    let mut backend_client_certs = HashMap::new();
    for (gw, pem) in c.backend_client_certs {
        match client_cert(&pem) {
            Some(ck) => {
                backend_client_certs.insert(gw, Arc::new(ck));
            }
            None => error!(gateway = %gw, "backend client certificate does not parse"),
        }
    }
    rt::Config {
        version: c.version,
        binds,
        backend_client_certs,
        egress: Arc::new(egress(&c.egress)),
    }
}

/// The runtime objects made so far, by the address of the data they come from.
#[derive(Default)]
struct Compiler {
    actions: HashMap<*const ir::RuleAction, Arc<rt::RuleAction>>,
    routes: HashMap<*const ir::Route, Arc<rt::Route>>,
    clusters: HashMap<*const ir::Cluster, Arc<rt::Cluster>>,
    backend_tls: HashMap<*const ir::BackendTls, Arc<rt::BackendTls>>,
}

impl Compiler {
    fn bind(&mut self, b: ir::Bind) -> rt::Bind {
        let mut listeners = rt::ListenerSet::default();
        for l in b.listeners {
            listeners.insert(Arc::new(rt::Listener {
                gateway: l.gateway,
                name: l.name,
                port: l.port,
                protocol: l.protocol,
                hostname: l.hostname,
                routes: self.route_table(&l.routes),
                tls: l.tls,
            }));
        }
        let tls = b.tls.map(|t| {
            let certs = t
                .certs
                .iter()
                .filter_map(|(host, pem)| match sluice_api::pem::certified_key_from_pem(&pem.cert, &pem.key) {
                    Ok(ck) => Some((host.clone(), ck)),
                    Err(e) => {
                        error!(addr = %b.addr, error = %e, "listener certificate does not parse");
                        None
                    }
                })
                .collect();
            super::tls::server_config(certs, t.client_validation.as_ref())
        });
        rt::Bind {
            addr: b.addr,
            protocol: b.protocol,
            gateway_label: b.gateway.to_string(),
            gateway: b.gateway,
            listeners,
            tls,
        }
    }

    fn route_table(&mut self, t: &ir::RouteTable) -> rt::RouteTable {
        let mut routes =
            |rs: &[Arc<ir::Route>]| rs.iter().map(|r| self.route(r)).collect::<Vec<_>>();
        rt::RouteTable {
            exact: t
                .exact
                .iter()
                .map(|(h, rs)| (h.clone(), routes(rs)))
                .collect(),
            wildcard: t
                .wildcard
                .iter()
                .map(|(s, rs)| (s.clone(), routes(rs)))
                .collect(),
            any: routes(&t.any),
        }
    }

    fn route(&mut self, r: &Arc<ir::Route>) -> Arc<rt::Route> {
        if let Some(done) = self.routes.get(&Arc::as_ptr(r)) {
            return done.clone();
        }
        let out = Arc::new(rt::Route {
            route: r.route.clone(),
            rule: r.rule,
            matcher: route_match(&r.matcher),
            action: self.action(&r.action),
        });
        self.routes.insert(Arc::as_ptr(r), out.clone());
        out
    }

    fn action(&mut self, a: &Arc<ir::RuleAction>) -> Arc<rt::RuleAction> {
        if let Some(done) = self.actions.get(&Arc::as_ptr(a)) {
            return done.clone();
        }
        let out = Arc::new(rt::RuleAction {
            route_label: a.route_label.clone(),
            request_headers: a.request_headers.clone(),
            response_headers: a.response_headers.clone(),
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
                    request_headers: b.request_headers.clone(),
                    response_headers: b.response_headers.clone(),
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
        self.actions.insert(Arc::as_ptr(a), out.clone());
        out
    }

    fn target(&mut self, t: &ir::BackendTarget) -> rt::BackendTarget {
        match t {
            ir::BackendTarget::Invalid { label, reason } => rt::BackendTarget::Invalid {
                label: label.clone(),
                reason: reason.clone(),
            },
            ir::BackendTarget::Cluster(c) => rt::BackendTarget::Cluster(self.cluster(c)),
        }
    }

    fn cluster(&mut self, c: &Arc<ir::Cluster>) -> Arc<rt::Cluster> {
        if let Some(done) = self.clusters.get(&Arc::as_ptr(c)) {
            return done.clone();
        }
        let mut out = rt::Cluster::new(c.name.clone(), c.endpoints.clone());
        out.h2c = c.h2c;
        out.tls = c.tls.as_ref().map(|t| self.backend_tls(t));
        let out = Arc::new(out);
        self.clusters.insert(Arc::as_ptr(c), out.clone());
        out
    }

    fn backend_tls(&mut self, t: &Arc<ir::BackendTls>) -> Arc<rt::BackendTls> {
        if let Some(done) = self.backend_tls.get(&Arc::as_ptr(t)) {
            return done.clone();
        }
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
        let san = match (&t.sans, &t.ca) {
            (Some(sans), Some(roots)) => super::backend_tls::SanTlsConnector::new(
                roots
                    .iter()
                    .map(|der| rustls_pki_types::CertificateDer::from(der.clone()))
                    .collect(),
                &t.hostname,
                &sans.dns,
                &sans.uris,
            )
            .map(Arc::new),
            _ => None,
        };
        let out = Arc::new(rt::BackendTls {
            hostname: t.hostname.clone(),
            ca,
            policy: t.policy.clone(),
            san,
            pool_key: t.pool_key,
        });
        self.backend_tls.insert(Arc::as_ptr(t), out.clone());
        out
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

fn route_match(m: &ir::RouteMatch) -> rt::RouteMatch {
    rt::RouteMatch {
        path: match &m.path {
            ir::PathMatch::Exact(p) => rt::PathMatch::Exact(p.clone()),
            ir::PathMatch::Prefix(p) => rt::PathMatch::Prefix(p.clone()),
            ir::PathMatch::Regex(r) => rt::PathMatch::Regex(regex(r)),
        },
        method: m.method.clone(),
        headers: m
            .headers
            .iter()
            .map(|h| rt::HeaderMatch {
                name: h.name.clone(),
                value: string_match(&h.value),
            })
            .collect(),
        query: m
            .query
            .iter()
            .map(|q| rt::QueryMatch {
                name: q.name.clone(),
                value: string_match(&q.value),
            })
            .collect(),
    }
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

/// The EgressPolicies, compiled with the CA certificates translation resolved for them.
pub fn egress(policies: &[ir::EgressPolicy]) -> sluice_egress_policy::EgressPolicies {
    use sluice_egress_policy::EgressPolicies;
    let mut compiled = Vec::new();
    for p in policies {
        let ca = |k: &sluice_api::resources::NsName| {
            p.cas
                .get(k)
                .map(|certs| {
                    certs
                        .iter()
                        .map(|c| rustls_pki_types::CertificateDer::from(c.clone()))
                        .collect()
                })
                .ok_or_else(|| format!("ConfigMap {k} was not resolved"))
        };
        match EgressPolicies::compile_one(&p.key, &p.spec, &ca) {
            Ok(c) => compiled.push(c),
            Err((field, e)) => {
                error!(policy = %p.key, %field, error = %e, "EgressPolicy does not compile")
            }
        }
    }
    EgressPolicies::from_compiled(compiled)
}
