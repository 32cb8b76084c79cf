//! Certificates and CA references: listener certificates from Secrets, frontend client
//! certificate validation, CA ConfigMaps, and the Gateway's backend client certificate.

use super::*;

/// Client certificate validation for an HTTPS listener: the per-port configuration of its port,
/// else the default one (`spec.tls.frontend`, GEP-91).
pub(super) fn frontend_validation(
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
    let (roots, problem) = ca_roots(
        store,
        "Gateway",
        &gw_key.namespace,
        v.ca_certificate_refs.iter().map(|r| CaRef {
            group: &r.group,
            kind: &r.kind,
            name: &r.name,
            namespace: r.namespace.as_deref(),
        }),
        "InvalidCACertificateKind",
    );
    if let Some((reason, msg)) = problem {
        st.resolved_refs = (false, reason, msg.clone());
        if roots.is_empty() {
            st.accepted = (false, "NoValidCACertificate", msg);
            return;
        }
    }
    st.client_validation = Some(ClientValidation {
        roots: roots.iter().map(|der| der.to_vec()).collect(),
        insecure_fallback: insecure,
    });
}

/// A reference to CA certificates (frontend validation, BackendTLSPolicy).
pub(super) struct CaRef<'a> {
    pub(super) group: &'a str,
    pub(super) kind: &'a str,
    pub(super) name: &'a str,
    /// `None`: the referring object's namespace.
    pub(super) namespace: Option<&'a str>,
}

/// The trust anchors of CA references made by a `from_kind` in `from_ns`, and the first
/// problem with them: a kind other than ConfigMap (`wrong_kind` is the reason the referring
/// object's API gives it), a cross-namespace reference no ReferenceGrant allows, or a ConfigMap
/// that is missing or holds no usable certificate.
pub(super) fn ca_roots<'a>(
    store: &Store,
    from_kind: &str,
    from_ns: &str,
    refs: impl IntoIterator<Item = CaRef<'a>>,
    wrong_kind: &'static str,
) -> (
    Vec<rustls_pki_types::CertificateDer<'static>>,
    Option<(&'static str, String)>,
) {
    let mut roots = Vec::new();
    let mut problem: Option<(&'static str, String)> = None;
    for r in refs {
        let key = NsName::new(r.namespace.unwrap_or(from_ns), r.name.to_string());
        if !r.group.is_empty() || r.kind != "ConfigMap" {
            problem.get_or_insert((
                wrong_kind,
                format!(
                    "CA certificate kind {}/{} is not supported; use a ConfigMap",
                    r.group, r.kind
                ),
            ));
            continue;
        }
        if let Some(why) = cross_namespace_denial(store, from_kind, from_ns, "ConfigMap", &key) {
            problem.get_or_insert(("RefNotPermitted", why));
            continue;
        }
        match config_map_ca(store, &key) {
            Ok(mut certs) => roots.append(&mut certs),
            Err(e) => {
                problem.get_or_insert(("InvalidCACertificateRef", e));
            }
        }
    }
    (roots, problem)
}

/// The CA certificates of the ConfigMap `key`, or why there are none to use.
pub(super) fn config_map_ca(
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
pub(super) fn x509_der_ok(der: &[u8]) -> bool {
    use x509_parser::prelude::{FromDer, X509Certificate};
    X509Certificate::from_der(der).is_ok()
}

/// The client certificate a Gateway presents to TLS backends, if it names one.
pub(super) fn backend_client_cert(
    store: &Store,
    gw_key: &NsName,
    gw: &Object<Gateway>,
) -> Option<Result<TlsPem, (&'static str, String)>> {
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
    if let Some(why) = cross_namespace_denial(store, "Gateway", &gw_key.namespace, "Secret", &key) {
        return Some(Err(("RefNotPermitted", why)));
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
    if key_der.is_empty() {
        return Some(Err((
            "InvalidClientCertificateRef",
            format!("Secret {key}: tls.key holds no private key"),
        )));
    }
    Some(Ok(TlsPem {
        cert: data.get("tls.crt")?.clone(),
        key: data.get("tls.key")?.clone(),
    }))
}

/// Parses a `kubernetes.io/tls` Secret into a rustls certified key.
pub fn certified_key(
    secret: &k8s_openapi::api::core::v1::Secret,
) -> Result<std::sync::Arc<rustls::sign::CertifiedKey>, String> {
    let data = secret_data(secret);
    let cert_pem = data.get("tls.crt").ok_or("missing tls.crt")?;
    let key_pem = data.get("tls.key").ok_or("missing tls.key")?;
    certified_key_from_pem(cert_pem, key_pem)
}

/// The Secrets translation reads: every listener's `tls.certificateRefs` (Gateways and
/// ListenerSets) and each Gateway's backend client certificate, where the reference is a Secret
/// the referrer may use (its own namespace, or granted by a ReferenceGrant). The controller
/// fetches these and no other Secret.
pub fn referenced_secrets(store: &Store) -> std::collections::BTreeSet<NsName> {
    let mut out = std::collections::BTreeSet::new();
    let mut add = |from_kind: &str, from_ns: &str, r: &serde_json::Value| {
        let Some(name) = r["name"].as_str() else {
            return;
        };
        let group = r["group"].as_str().unwrap_or("");
        let kind = r["kind"].as_str().unwrap_or("Secret");
        if !group.is_empty() || kind != "Secret" {
            return;
        }
        let key = NsName::new(r["namespace"].as_str().unwrap_or(from_ns), name.to_string());
        if cross_namespace_denial(store, from_kind, from_ns, "Secret", &key).is_none() {
            out.insert(key);
        }
    };
    let listener_refs = |spec: &serde_json::Value| -> Vec<serde_json::Value> {
        spec["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| {
                l["tls"]["certificateRefs"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    };
    for (key, gw) in &store.gateways {
        let spec = serde_json::to_value(&gw.obj.spec).unwrap_or_default();
        for r in listener_refs(&spec) {
            add("Gateway", &key.namespace, &r);
        }
        add(
            "Gateway",
            &key.namespace,
            &spec["tls"]["backend"]["clientCertificateRef"],
        );
    }
    for (key, ls) in &store.listener_sets {
        let spec = serde_json::to_value(&ls.obj.spec).unwrap_or_default();
        for r in listener_refs(&spec) {
            add("ListenerSet", &key.namespace, &r);
        }
    }
    out
}

/// The ConfigMaps translation reads: the CA bundles of `caCertificateRefs` in Gateways
/// (frontend validation), BackendTLSPolicies and EgressPolicies (TLS origination, where the
/// kind is implied). CA certificates are public, so references count as written, permitted or
/// not (translation reports the ones that are not). The controller fetches these and no other
/// ConfigMap.
pub fn referenced_config_maps(store: &Store) -> std::collections::BTreeSet<NsName> {
    fn scan(
        v: &serde_json::Value,
        ns: &str,
        implied_kind: &str,
        out: &mut std::collections::BTreeSet<NsName>,
    ) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    if k != "caCertificateRefs" {
                        scan(v, ns, implied_kind, out);
                        continue;
                    }
                    for r in v.as_array().into_iter().flatten() {
                        let kind = r["kind"].as_str().unwrap_or(implied_kind);
                        let group = r["group"].as_str().unwrap_or("");
                        if let (Some(name), "ConfigMap", "") = (r["name"].as_str(), kind, group) {
                            let namespace = r["namespace"].as_str().unwrap_or(ns);
                            out.insert(NsName::new(namespace, name.to_string()));
                        }
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| scan(v, ns, implied_kind, out)),
            _ => {}
        }
    }
    let mut out = std::collections::BTreeSet::new();
    let spec = |v: Result<serde_json::Value, _>| v.unwrap_or_default();
    for (key, gw) in &store.gateways {
        scan(
            &spec(serde_json::to_value(&gw.obj.spec)),
            &key.namespace,
            "",
            &mut out,
        );
    }
    for (key, p) in &store.backend_tls_policies {
        scan(
            &spec(serde_json::to_value(&p.obj.spec)),
            &key.namespace,
            "",
            &mut out,
        );
    }
    for (key, p) in &store.egress_policies {
        let v = spec(serde_json::to_value(&p.obj.spec));
        scan(&v, &key.namespace, "ConfigMap", &mut out);
    }
    out
}
