//! BackendTLSPolicy: validation, conflict resolution per target (oldest, then by name), and the
//! policies' ancestor status.

use super::*;

/// What translation decided about one BackendTLSPolicy.
pub(super) struct PolicyState {
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
pub(super) fn backend_tls_policies(
    store: &Store,
    config: &mut Config,
) -> (BackendTlsByTarget, Vec<PolicyState>) {
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
        let refs = spec
            .validation
            .ca_certificate_refs
            .as_deref()
            .unwrap_or_default();
        let (roots, problem) = ca_roots(
            store,
            "BackendTLSPolicy",
            &key.namespace,
            refs.iter().map(|r| CaRef {
                group: &r.group,
                kind: &r.kind,
                name: &r.name,
                namespace: None,
            }),
            "InvalidKind",
        );
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
        let ca: Option<Vec<Vec<u8>>> = (!roots.is_empty() && st.accepted.0).then(|| {
            roots
                .iter()
                // pingora's certificate type panics on what x509-parser cannot read.
                .filter(|der| x509_der_ok(der))
                .map(|der| der.to_vec())
                .collect()
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
            let valid =
                rustls_pki_types::ServerName::try_from(spec.validation.hostname.as_str()).is_ok();
            if !valid {
                st.accepted = (
                    false,
                    "Invalid",
                    format!(
                        "hostname {:?} is not a TLS server name",
                        spec.validation.hostname
                    ),
                );
            }
            valid.then_some(sluice_config::SubjectAltNames { dns, uris })
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
        let settings = config.add_backend_tls(sluice_config::BackendTls {
            hostname: spec.validation.hostname.clone(),
            ca: if st.accepted.0 { ca } else { None },
            policy: key.to_string(),
            sans: san,
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
                    let winner = config
                        .backend_tls(*winner)
                        .map_or("", |w| w.policy.as_str());
                    st.accepted = (
                        false,
                        "Conflicted",
                        format!("policy {winner} already applies to this target and is older"),
                    );
                }
                None => {
                    tls.insert(target, settings);
                }
            }
        }
        states.push(st);
    }
    (tls, states)
}

/// A BackendTLSPolicy's status: one ancestor per Gateway of ours whose HTTPRoutes, GRPCRoutes
/// or TLSRoutes (`routes`, every kind in HTTPRoute form) send traffic to a Service the policy
/// targets.
pub(super) fn policy_statuses(
    routes: &[(NsName, std::borrow::Cow<'_, Object<HttpRoute>>, RouteKind)],
    states: &[PolicyState],
    ours: &HashSet<NsName>,
    opts: &Options,
) -> Vec<ObjectStatus> {
    let mut out = Vec::new();
    for st in states {
        let mut ancestors: Vec<NsName> = Vec::new();
        for (rkey, r, kind) in routes {
            if !kind.takes_backend_tls() {
                continue;
            }
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
