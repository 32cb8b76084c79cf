//! EgressPolicy decisions: which destinations which sources may reach. Default deny; the first rule that
//! matches decides, and every decision names the policy and rule that made it.
//!
//! Policies are evaluated in `namespace/name` order, rules in the order written. A rule matches
//! when the source is one of its policy's sources, and the destination matches its hosts (or
//! CIDRs), ports and protocols.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use serde::Serialize;

pub use sluice_api::egress::*;
use sluice_api::resources::NsName;

/// Finds the CA certificates of a ConfigMap.
pub type CaLookup<'a> =
    &'a dyn Fn(&NsName) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String>;

/// A destination as the client asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    pub fn parse(s: &str) -> Host {
        let s = s.trim_start_matches('[').trim_end_matches(']');
        match s.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(s.trim_end_matches('.').to_ascii_lowercase()),
        }
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// What evaluation decided, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    pub allowed: bool,
    pub audit: bool,
    /// `namespace/name` of the deciding policy, if a rule matched.
    pub policy: Option<String>,
    pub rule: Option<String>,
    pub reason: String,
    /// Where to connect instead of resolving the name (static endpoints of the rule).
    #[serde(skip)]
    pub static_endpoints: Vec<SocketAddr>,
    /// TLS to open towards the destination (TLS origination).
    #[serde(skip)]
    pub originate_tls: Option<Arc<rustls::ClientConfig>>,
}

/// A compiled rule.
#[derive(Debug)]
struct CompiledRule {
    name: String,
    action: Action,
    exact: Vec<String>,
    /// Suffixes with their leading dot.
    wildcards: Vec<String>,
    cidrs: Vec<IpNet>,
    ports: Vec<u16>,
    protocols: Vec<Protocol>,
    static_endpoints: Vec<SocketAddr>,
    originate_tls: Option<Arc<rustls::ClientConfig>>,
}

/// One policy, checked and ready to evaluate.
#[derive(Debug)]
pub struct CompiledPolicy {
    key: NsName,
    sources: Vec<IpNet>,
    any_source: bool,
    rules: Vec<CompiledRule>,
}

/// All policies, ready to evaluate.
#[derive(Debug, Default)]
pub struct EgressPolicies {
    policies: Vec<CompiledPolicy>,
}

/// A policy field that does not parse: (field path, message).
pub type FieldError = (String, String);

/// The trust anchors for TLS origination without CA references: the system's, which the caller
/// reads (this crate does no I/O).
pub type SystemRoots<'a> = &'a dyn Fn() -> Vec<rustls_pki_types::CertificateDer<'static>>;

/// The TLS client configuration of a rule's origination, or, when `system` is `None` (only
/// checking), nothing: the CA references are resolved either way.
fn origination(
    key: &NsName,
    t: &TlsOrigination,
    field: &str,
    ca: CaLookup<'_>,
    system: Option<SystemRoots<'_>>,
) -> Result<Option<Arc<rustls::ClientConfig>>, FieldError> {
    let mut anchors = Vec::new();
    for (i, r) in t.ca_certificate_refs.iter().enumerate() {
        let certs = ca(&NsName::new(key.namespace.clone(), r.name.clone()))
            .map_err(|e| (format!("{field}.caCertificateRefs[{i}]"), e))?;
        anchors.extend(certs);
    }
    let Some(system) = system else {
        return Ok(None);
    };
    if t.ca_certificate_refs.is_empty() {
        anchors = system();
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(anchors);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| (field.to_string(), e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Arc::new(cfg)))
}

fn compile(
    key: &NsName,
    spec: &EgressPolicySpec,
    ca: CaLookup<'_>,
    system: Option<SystemRoots<'_>>,
) -> Result<CompiledPolicy, FieldError> {
    let mut sources = Vec::new();
    let any_source = spec.sources.is_empty();
    for (i, s) in spec.sources.iter().enumerate() {
        let workload = s.namespace.is_some() || s.service_account.is_some() || s.labels.is_some();
        match (&s.cidr, workload) {
            (Some(c), false) => sources.push(
                c.parse::<IpNet>()
                    .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|e| (format!(".spec.sources[{i}].cidr"), format!("{c:?}: {e}")))?,
            ),
            (None, true) => {
                // Workload identity is known only in cluster mode (the mesh). Standalone, such a
                // source matches nothing; it is not an error, the policy is shared with the mesh.
            }
            (None, false) => {
                return Err((
                    format!(".spec.sources[{i}]"),
                    "a source needs cidr, namespace, serviceAccount or labels".into(),
                ))
            }
            (Some(_), true) => {
                return Err((
                    format!(".spec.sources[{i}]"),
                    "cidr cannot be combined with namespace, serviceAccount or labels".into(),
                ))
            }
        }
    }
    let mut rules = Vec::new();
    for (i, r) in spec.rules.iter().enumerate() {
        let f = |s: &str| format!(".spec.rules[{i}].{s}");
        if r.name.is_empty() {
            return Err((f("name"), "every rule needs a name".into()));
        }
        if r.hosts.is_empty() && r.cidrs.is_empty() {
            return Err((f("hosts"), "a rule needs hosts or cidrs".into()));
        }
        let mut exact = Vec::new();
        let mut wildcards = Vec::new();
        for (j, h) in r.hosts.iter().enumerate() {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix('*') {
                Some(suffix)
                    if suffix.starts_with('.') && sluice_api::validate::is_hostname(&h, true) =>
                {
                    wildcards.push(suffix.to_string())
                }
                None if sluice_api::validate::is_hostname(&h, false) => exact.push(h),
                _ => {
                    return Err((
                        f(&format!("hosts[{j}]")),
                        format!(
                            "{h:?} is not a hostname or a `*.` wildcard (IP addresses go in cidrs)"
                        ),
                    ))
                }
            }
        }
        let mut cidrs = Vec::new();
        for (j, c) in r.cidrs.iter().enumerate() {
            cidrs.push(
                c.parse::<IpNet>()
                    .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|e| (f(&format!("cidrs[{j}]")), format!("{c:?}: {e}")))?,
            );
        }
        if r.ports.contains(&0) {
            return Err((f("ports"), "port 0 is not a port".into()));
        }
        let originate_tls = match &r.tls_origination {
            None => None,
            Some(t) => origination(key, t, &f("tlsOrigination"), ca, system)?,
        };
        rules.push(CompiledRule {
            originate_tls,
            name: r.name.clone(),
            action: r.action,
            exact,
            wildcards,
            cidrs,
            ports: r.ports.clone(),
            protocols: r.protocols.clone(),
            static_endpoints: r.static_endpoints.clone(),
        });
    }
    Ok(CompiledPolicy {
        key: key.clone(),
        sources,
        any_source,
        rules,
    })
}

impl EgressPolicies {
    /// Checks one policy without building anything for TLS origination (what translation
    /// does); the error names the field.
    pub fn check(
        key: &NsName,
        spec: &EgressPolicySpec,
        ca: CaLookup<'_>,
    ) -> Result<(), FieldError> {
        compile(key, spec, ca, None).map(|_| ())
    }

    /// Compiles one policy for enforcement, with the TLS client configurations of its
    /// originating rules; the error names the field.
    pub fn compile_one(
        key: &NsName,
        spec: &EgressPolicySpec,
        ca: CaLookup<'_>,
        system: SystemRoots<'_>,
    ) -> Result<CompiledPolicy, FieldError> {
        compile(key, spec, ca, Some(system))
    }

    /// The policies to evaluate, in `namespace/name` order.
    pub fn from_compiled(mut policies: Vec<CompiledPolicy>) -> Self {
        policies.sort_by(|a, b| a.key.cmp(&b.key));
        EgressPolicies { policies }
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Decides whether `source` may reach `host:port` with `protocol`.
    pub fn decide(&self, source: IpAddr, host: &Host, port: u16, protocol: Protocol) -> Decision {
        self.decide_any(source, host, port, &[protocol])
    }

    /// Like `decide`, for a connection that may carry any of `protocols` (a CONNECT tunnel
    /// carries TLS or plain TCP).
    pub fn decide_any(
        &self,
        source: IpAddr,
        host: &Host,
        port: u16,
        protocols: &[Protocol],
    ) -> Decision {
        for p in &self.policies {
            if !p.any_source && !p.sources.iter().any(|n| n.contains(&source)) {
                continue;
            }
            for r in &p.rules {
                if !r.ports.is_empty() && !r.ports.contains(&port) {
                    continue;
                }
                if !r.protocols.is_empty() && !r.protocols.iter().any(|p| protocols.contains(p)) {
                    continue;
                }
                let matched = match host {
                    Host::Name(n) => {
                        r.exact.iter().any(|e| e == n)
                            || r.wildcards
                                .iter()
                                .any(|w| sluice_api::names::wildcard_matches(w, n))
                    }
                    // An IP literal is allowed only by a CIDR, never by a hostname rule.
                    Host::Ip(ip) => r.cidrs.iter().any(|c| c.contains(ip)),
                };
                if matched {
                    return Decision {
                        allowed: true,
                        audit: r.action == Action::Audit,
                        policy: Some(p.key.to_string()),
                        rule: Some(r.name.clone()),
                        reason: match r.action {
                            Action::Allow => "allowed".into(),
                            Action::Audit => "allowed (audit)".into(),
                        },
                        static_endpoints: r.static_endpoints.clone(),
                        originate_tls: r.originate_tls.clone(),
                    };
                }
            }
        }
        Decision {
            allowed: false,
            audit: false,
            policy: None,
            rule: None,
            reason: match host {
                Host::Ip(_) => {
                    "denied: no rule allows this IP address (IP destinations need a cidrs rule)"
                        .into()
                }
                Host::Name(_) => "denied: no rule allows this destination".into(),
            },
            static_endpoints: Vec::new(),
            originate_tls: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(yaml: &str) -> EgressPolicies {
        let spec: EgressPolicySpec = serde_yaml::from_str(yaml).unwrap();
        let key = NsName::new("default", "p");
        let p = EgressPolicies::compile_one(
            &key,
            &spec,
            &|_| Err("no ConfigMaps in unit tests".to_string()),
            &Vec::new,
        )
        .unwrap();
        EgressPolicies::from_compiled(vec![p])
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn wildcards_need_a_label() {
        let p = policies("rules: [{name: r, hosts: ['*.example.com']}]");
        assert!(
            p.decide(LOCAL, &Host::parse("api.example.com"), 443, Protocol::HTTPS)
                .allowed
        );
        assert!(
            p.decide(LOCAL, &Host::parse("a.b.example.com"), 443, Protocol::HTTPS)
                .allowed
        );
        assert!(
            !p.decide(LOCAL, &Host::parse("example.com"), 443, Protocol::HTTPS)
                .allowed
        );
        assert!(
            !p.decide(LOCAL, &Host::parse("badexample.com"), 443, Protocol::HTTPS)
                .allowed
        );
    }

    #[test]
    fn default_deny_and_explanations() {
        let p = policies(
            "rules: [{name: github, hosts: [api.github.com], ports: [443], protocols: [HTTPS]}]",
        );
        let d = p.decide(LOCAL, &Host::parse("api.github.com"), 443, Protocol::HTTPS);
        assert_eq!(
            (d.allowed, d.policy.as_deref(), d.rule.as_deref()),
            (true, Some("default/p"), Some("github"))
        );
        assert!(
            !p.decide(LOCAL, &Host::parse("api.github.com"), 80, Protocol::HTTP)
                .allowed
        );
        assert!(
            !p.decide(LOCAL, &Host::parse("evil.example"), 443, Protocol::HTTPS)
                .allowed
        );
    }

    #[test]
    fn ip_literals_only_by_cidr() {
        let p = policies(
            "rules: [{name: n, hosts: [localhost.example]}, {name: c, cidrs: [10.0.0.0/8]}]",
        );
        assert!(
            !p.decide(LOCAL, &Host::parse("127.0.0.1"), 80, Protocol::HTTP)
                .allowed
        );
        let d = p.decide(LOCAL, &Host::parse("10.1.2.3"), 80, Protocol::HTTP);
        assert_eq!(d.rule.as_deref(), Some("c"));
        assert!(d.allowed);
    }

    #[test]
    fn sources_and_audit() {
        let p = policies(
            "sources: [{cidr: 127.0.0.0/8}]\nrules: [{name: a, action: Audit, hosts: [x.example]}]",
        );
        let d = p.decide(LOCAL, &Host::parse("x.example"), 80, Protocol::HTTP);
        assert!(d.allowed && d.audit);
        assert!(
            !p.decide(
                "192.0.2.1".parse().unwrap(),
                &Host::parse("x.example"),
                80,
                Protocol::HTTP
            )
            .allowed
        );
    }

    /// The CRD's schema (deploy/crds) and the types the file provider reads describe the same
    /// fields, so the cluster and the files accept the same policies.
    #[test]
    fn crd_schema_matches_the_types() {
        fn resolve<'a>(
            schema: &'a serde_json::Value,
            defs: &'a serde_json::Value,
        ) -> &'a serde_json::Value {
            let schema = match schema.get("$ref").and_then(|r| r.as_str()) {
                Some(r) => &defs[r.trim_start_matches("#/$defs/")],
                None => schema,
            };
            let schema = schema
                .get("anyOf")
                .and_then(|a| a.as_array())
                .and_then(|a| a.iter().find(|s| s.get("type") != Some(&"null".into())))
                .unwrap_or(schema);
            match schema.get("$ref").and_then(|r| r.as_str()) {
                Some(r) => &defs[r.trim_start_matches("#/$defs/")],
                None => schema,
            }
        }
        fn props(
            schema: &serde_json::Value,
            defs: &serde_json::Value,
            path: &str,
            out: &mut Vec<String>,
        ) {
            let schema = resolve(schema, defs);
            if let Some(p) = schema.get("properties").and_then(|p| p.as_object()) {
                for (k, v) in p {
                    let here = format!("{path}.{k}");
                    out.push(here.clone());
                    props(v, defs, &here, out);
                }
            }
            if let Some(items) = schema.get("items") {
                props(items, defs, &format!("{path}[]"), out);
            }
        }
        let generated = serde_json::to_value(schemars::schema_for!(EgressPolicySpec)).unwrap();
        let mut from_types = Vec::new();
        props(&generated, &generated["$defs"], "spec", &mut from_types);
        let crd: serde_json::Value = serde_yaml::from_str(include_str!(
            "../../../deploy/crds/policy.sluice.dev_egresspolicies.yaml"
        ))
        .unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let mut from_crd = Vec::new();
        props(schema, &serde_json::Value::Null, "spec", &mut from_crd);
        from_types.sort();
        from_crd.sort();
        assert!(from_types
            .contains(&"spec.rules[].tlsOrigination.caCertificateRefs[].name".to_string()));
        assert_eq!(from_types, from_crd);
    }

    #[test]
    fn invalid_rules_name_the_field() {
        let spec: EgressPolicySpec =
            serde_yaml::from_str("rules: [{name: r, hosts: ['exa mple.com']}]").unwrap();
        let key = NsName::new("default", "p");
        let err = EgressPolicies::check(&key, &spec, &|_| {
            Err("no ConfigMaps in unit tests".to_string())
        })
        .unwrap_err();
        assert_eq!(err.0, ".spec.rules[0].hosts[0]");
    }
}
