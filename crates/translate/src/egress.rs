//! EgressPolicies: each is checked on its own; the engine compiles the valid ones. A valid policy
//! is enforced; an invalid one gets `Accepted=False` with the field and the reason, never
//! disables the others, and, when an earlier version of it was valid, that version stays in
//! force (as a bad edit of a TLS Secret keeps the last valid certificate).

use super::*;
use sluice_api::egress::EgressPolicySpec;
use sluice_config::EgressPolicy;
use sluice_egress_policy::EgressPolicies;

/// The last valid version of an EgressPolicy.
#[derive(Clone, Debug, PartialEq)]
pub struct LastValidPolicy {
    pub generation: Option<i64>,
    pub spec: EgressPolicySpec,
}

/// Checks the store's EgressPolicies, each on its own; returns the valid ones, with the CA
/// certificates they reference, and what to remember.
pub(super) fn egress_policies(
    store: &Store,
    opts: &Options,
    statuses: &mut Vec<ObjectStatus>,
    warnings: &mut Vec<Warning>,
) -> (Vec<EgressPolicy>, BTreeMap<NsName, LastValidPolicy>) {
    let lookup = store_ca_lookup(store);
    // Checks one policy; valid, it goes to the snapshot with the CA certificates it used.
    let check = |key: &NsName, spec: &EgressPolicySpec| {
        let cas = std::cell::RefCell::new(Vec::<sluice_config::ConfigMapCas>::new());
        let ca = |k: &NsName| {
            let found = lookup(k);
            if let Ok(certs) = &found {
                let mut cas = cas.borrow_mut();
                if !cas.iter().any(|c| &c.config_map == k) {
                    cas.push(sluice_config::ConfigMapCas {
                        config_map: k.clone(),
                        certs: certs.iter().map(|c| c.to_vec()).collect(),
                    });
                }
            }
            found
        };
        EgressPolicies::check(key, spec, &ca).map(|_| EgressPolicy {
            key: key.clone(),
            spec: spec.clone(),
            cas: cas.into_inner(),
        })
    };
    let mut compiled = Vec::new();
    let mut remembered = BTreeMap::new();
    for (key, p) in &store.egress_policies {
        let generation = p.obj.metadata.generation;
        let (ok, reason, message) = match check(key, &p.obj.spec) {
            Ok(c) => {
                compiled.push(c);
                remembered.insert(
                    key.clone(),
                    LastValidPolicy {
                        generation,
                        spec: p.obj.spec.clone(),
                    },
                );
                (true, "Accepted", "The policy is enforced".to_string())
            }
            Err((field, e)) => {
                let last = opts
                    .egress_last_good
                    .get(key)
                    .and_then(|last| check(key, &last.spec).ok().map(|c| (last.clone(), c)));
                let kept = match last {
                    Some((last, c)) => {
                        compiled.push(c);
                        let said = match last.generation {
                            Some(g) => format!("generation {g}"),
                            None => "version".into(),
                        };
                        remembered.insert(key.clone(), last);
                        format!("; its last valid {said} stays in force")
                    }
                    None => "; it is not enforced: what it would allow is denied".into(),
                };
                warnings.push(Warning {
                    source: p.source.to_string(),
                    object: format!("EgressPolicy {key}"),
                    field: field.clone(),
                    message: format!("{e}{kept}"),
                });
                (false, "Invalid", format!("{field}: {e}{kept}"))
            }
        };
        statuses.push(ObjectStatus {
            api_version: format!("{}/v1alpha1", sluice_api::egress::POLICY_GROUP),
            kind: "EgressPolicy".into(),
            metadata: StatusMeta {
                namespace: Some(key.namespace.clone()),
                name: key.name.clone(),
                generation,
            },
            status: serde_json::json!({
                "conditions": [condition("Accepted", ok, reason, message, generation, opts.now)],
            }),
        });
    }
    (compiled, remembered)
}

/// A CA lookup over the ConfigMaps of a store.
pub fn store_ca_lookup(
    store: &Store,
) -> impl Fn(&NsName) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> + '_ {
    move |key: &NsName| {
        let cm = store
            .config_maps
            .get(key)
            .ok_or(format!("ConfigMap {key} does not exist"))?;
        ca_certificates(&cm.obj).map_err(|e| format!("ConfigMap {key}: {e}"))
    }
}
