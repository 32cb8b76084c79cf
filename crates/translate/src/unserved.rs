//! Warnings about what the manifests hold and nothing serves: objects of kinds the gateway does
//! not read, GatewayClasses of other controllers, manifests without a Gateway of ours. A typo in
//! a kind silently removed a redirect, and a policy ported from another gateway was silently not
//! enforced: every such object is named here, with why, so it shows in the log, at `/warnings`
//! and in `gateway status`.

use crate::Warning;
use sluice_api::resources::{Skipped, Store, GATEWAY_GROUP};

/// Kinds of the Gateway API group that Sluice reads.
const SERVED_GATEWAY_KINDS: &[&str] = &[
    "GatewayClass",
    "Gateway",
    "HTTPRoute",
    "GRPCRoute",
    "ReferenceGrant",
    "ListenerSet",
    "BackendTLSPolicy",
];

/// Kinds of the Gateway API (standard and experimental channels) not served yet.
const UNSERVED_GATEWAY_KINDS: &[&str] = &[
    "TLSRoute",
    "TCPRoute",
    "UDPRoute",
    "BackendLBPolicy",
    "BackendTrafficPolicy",
    "XBackendTrafficPolicy",
    "XListenerSet",
    "XMesh",
];

/// API groups of other gateways and meshes, with whose API they are.
const FOREIGN_GROUPS: &[(&str, &str)] = &[
    ("networking.istio.io", "Istio"),
    ("security.istio.io", "Istio"),
    ("telemetry.istio.io", "Istio"),
    ("extensions.istio.io", "Istio"),
    ("gateway.envoyproxy.io", "Envoy Gateway"),
    ("linkerd.io", "Linkerd"),
    ("policy.linkerd.io", "Linkerd"),
    ("cilium.io", "Cilium"),
    ("configuration.konghq.com", "Kong"),
    ("traefik.io", "Traefik"),
    ("traefik.containo.us", "Traefik"),
    ("gateway.nginx.org", "NGINX Gateway Fabric"),
    ("k8s.nginx.org", "NGINX"),
    ("gateway.kgateway.dev", "kgateway"),
    ("agentgateway.dev", "agentgateway"),
    ("networking.k8s.io", "Kubernetes Ingress"),
];

/// Core and other Kubernetes kinds Sluice reads, by group.
const SERVED_OTHER_KINDS: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Service"),
    ("", "Secret"),
    ("", "ConfigMap"),
    ("discovery.k8s.io", "EndpointSlice"),
    (sluice_api::egress::POLICY_GROUP, "EgressPolicy"),
];

/// One warning for each object read and not served.
pub fn skipped_objects(store: &Store, warnings: &mut Vec<Warning>) {
    for s in &store.skipped {
        warnings.push(Warning {
            source: s.source.to_string(),
            object: s.object.clone(),
            field: ".kind".into(),
            message: why_skipped(s),
        });
    }
}

fn why_skipped(s: &Skipped) -> String {
    let kind = s.kind.as_str();
    let group = s.group.as_str();
    let shown_group = if group.is_empty() { "core" } else { group };
    if group == GATEWAY_GROUP {
        if UNSERVED_GATEWAY_KINDS.contains(&kind) {
            return format!(
                "{kind} is a Gateway API kind Sluice does not serve yet: this object is not applied"
            );
        }
        return match suggestion(kind, SERVED_GATEWAY_KINDS.iter().copied()) {
            Some(k) => format!(
                "the Gateway API has no kind {kind:?} (did you mean {k}?): this object is not applied"
            ),
            None => format!("the Gateway API has no kind {kind:?}: this object is not applied"),
        };
    }
    if let Some((_, owner)) = FOREIGN_GROUPS.iter().find(|(g, _)| *g == group) {
        return format!(
            "{kind} ({group}) belongs to {owner}'s API, which Sluice does not read: nothing it \
             configures (routing, security or traffic policy) is enforced; express it with \
             Gateway API objects"
        );
    }
    let same_group = SERVED_OTHER_KINDS
        .iter()
        .filter(|(g, _)| *g == group)
        .map(|(_, k)| *k);
    if let Some(k) = suggestion(kind, same_group) {
        return format!(
            "{shown_group} group has no kind {kind:?} that Sluice reads (did you mean {k}?): \
             this object is not applied"
        );
    }
    if group == sluice_api::egress::POLICY_GROUP {
        return format!(
            "{group} has no kind {kind:?} (it has EgressPolicy): this object is not applied"
        );
    }
    format!("Sluice does not read {kind} objects ({shown_group} group): this object is ignored")
}

/// A kind of `known` that `kind` is probably a misspelling of: the same but for case or a
/// plural `s`, or one edit away.
fn suggestion<'a>(kind: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = kind.to_ascii_lowercase();
    let trimmed = lower.strip_suffix('s').unwrap_or(&lower);
    known
        .map(|k| (k, k.to_ascii_lowercase()))
        .find(|(_, k)| {
            *k == lower || k == trimmed || sluice_api::names::edit_distance(k, &lower) <= 1
        })
        .map(|(k, _)| k)
}

/// GatewayClasses of other controllers, Gateways of missing classes, and, when no Gateway is
/// ours although the manifests mean to serve some, one warning that says so.
pub fn gateway_classes(
    store: &Store,
    controller_name: &str,
    served_gateways: usize,
    warnings: &mut Vec<Warning>,
) {
    let mut foreign = Vec::new();
    for (name, class) in &store.gateway_classes {
        if class.obj.spec.controller_name != controller_name {
            warnings.push(Warning {
                source: class.source.to_string(),
                object: format!("GatewayClass {name}"),
                field: ".spec.controllerName".into(),
                message: format!(
                    "names controller {:?}, not this gateway's {controller_name:?}: its Gateways are not served here",
                    class.obj.spec.controller_name
                ),
            });
            foreign.push(format!(
                "GatewayClass {name} names controller {}",
                class.obj.spec.controller_name
            ));
        }
    }
    for (key, gw) in &store.gateways {
        let class = &gw.obj.spec.gateway_class_name;
        if !store.gateway_classes.contains_key(class) {
            warnings.push(Warning {
                source: gw.source.to_string(),
                object: format!("Gateway {key}"),
                field: ".spec.gatewayClassName".into(),
                message: format!("GatewayClass {class} does not exist: this Gateway is not served"),
            });
        }
    }
    // An egress-only gateway has no Gateway by design; manifests with a GatewayClass or a
    // Gateway, or with nothing at all, meant to serve one.
    let meant_to_serve = !store.gateway_classes.is_empty()
        || !store.gateways.is_empty()
        || store.egress_policies.is_empty();
    if served_gateways == 0 && meant_to_serve {
        let why = if !foreign.is_empty() {
            foreign.join("; ")
        } else if store.gateways.is_empty() {
            "the manifests hold no Gateway".to_string()
        } else {
            format!(
                "no Gateway names a GatewayClass of controller {controller_name} that is accepted"
            )
        };
        warnings.push(Warning {
            source: "-".into(),
            object: "-".into(),
            field: ".".into(),
            message: format!("no Gateway of ours: {why}; nothing is served"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skipped(group: &str, kind: &str) -> String {
        why_skipped(&Skipped {
            source: sluice_api::resources::Source::File {
                file: "x.yaml".into(),
                document: 1,
            },
            group: group.into(),
            kind: kind.into(),
            object: format!("{kind} default/x"),
        })
    }

    #[test]
    fn reasons_name_the_kind_and_what_to_do() {
        assert!(skipped(GATEWAY_GROUP, "HTTPRoutes").contains("did you mean HTTPRoute?"));
        assert!(skipped(GATEWAY_GROUP, "HttpRoute").contains("did you mean HTTPRoute?"));
        assert!(skipped(GATEWAY_GROUP, "GrpcRoute").contains("did you mean GRPCRoute?"));
        assert!(skipped(GATEWAY_GROUP, "TLSRoute").contains("does not serve yet"));
        assert!(skipped(GATEWAY_GROUP, "Frobnicator").contains("has no kind \"Frobnicator\""));
        assert!(skipped("networking.istio.io", "VirtualService").contains("Istio's API"));
        assert!(skipped("gateway.envoyproxy.io", "SecurityPolicy").contains("is enforced"));
        assert!(skipped("", "Servce").contains("did you mean Service?"));
        assert!(skipped("apps", "Deployment").contains("does not read Deployment"));
        assert!(skipped("policy.sluice.dev", "EgresPolicy").contains("did you mean EgressPolicy?"));
    }
}
