//! Route attachment: which listeners of a parent an HTTPRoute or GRPCRoute attaches to
//! (parentRefs, sectionName and port, allowed namespaces and kinds, hostname intersection, an
//! HTTPRoute and a GRPCRoute claiming one hostname), ReferenceGrants, and the route's parent
//! status.

use super::*;

pub(super) fn reference_granted(
    store: &Store,
    from_group: &str,
    from_kind: &str,
    from_ns: &str,
    to_group: &str,
    to_kind: &str,
    to: &NsName,
) -> bool {
    store
        .reference_grants
        .iter()
        .filter(|(k, _)| k.namespace == to.namespace)
        .any(|(_, g)| {
            let spec = &g.obj.spec;
            spec.from
                .iter()
                .any(|f| f.group == from_group && f.kind == from_kind && f.namespace == from_ns)
                && spec.to.iter().any(|t| {
                    t.group == to_group
                        && t.kind == to_kind
                        && t.name.as_deref().is_none_or(|n| n == to.name)
                })
        })
}

/// Why a reference from a `from_kind` of the Gateway API in `from_ns` to the core object
/// `to_kind` `to` is refused: `None` when both are in one namespace or a ReferenceGrant in the
/// target's namespace allows it.
pub(super) fn cross_namespace_denial(
    store: &Store,
    from_kind: &str,
    from_ns: &str,
    to_kind: &str,
    to: &NsName,
) -> Option<String> {
    if to.namespace == from_ns
        || reference_granted(store, GATEWAY_GROUP, from_kind, from_ns, "", to_kind, to)
    {
        return None;
    }
    Some(format!(
        "no ReferenceGrant in namespace {} allows {from_kind}s from namespace {from_ns} to use {to_kind} {to}",
        to.namespace
    ))
}

/// Intersection of a listener hostname and a route hostname, per the Gateway API: the more
/// specific of the two when one contains the other.
pub fn intersect_hostnames(listener: Option<&str>, route: &str) -> Option<String> {
    let Some(l) = listener else {
        return Some(route.to_string());
    };
    let covers = |wild: &str, name: &str| match wild.strip_prefix('*') {
        Some(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
        None => wild == name,
    };
    if l == route || covers(l, route) {
        Some(route.to_string())
    } else if covers(route, l) {
        Some(l.to_string())
    } else {
        None
    }
}

pub(super) fn namespace_allowed(
    store: &Store,
    allowed: &AllowedNamespaces,
    gw_ns: &str,
    route_ns: &str,
) -> bool {
    match allowed {
        AllowedNamespaces::All => true,
        AllowedNamespaces::Same => gw_ns == route_ns,
        AllowedNamespaces::Selector(sel) => {
            let labels = namespace_labels(store, route_ns);
            let labels_ok = sel
                .match_labels
                .iter()
                .flatten()
                .all(|(k, v)| labels.get(k) == Some(v));
            let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
                let values = e.values.as_deref().unwrap_or_default();
                let v = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => v.is_some_and(|v| values.contains(v)),
                    "NotIn" => v.is_none_or(|v| !values.contains(v)),
                    "Exists" => v.is_some(),
                    "DoesNotExist" => v.is_none(),
                    _ => false,
                }
            });
            labels_ok && exprs_ok
        }
    }
}

/// Attaches one route (an HTTPRoute, or a GRPCRoute as the HTTPRoute it means; the kind is
/// `tables.route_kind`) to the listeners its parentRefs select, and returns its status.
pub(super) fn attach_http_route(
    store: &Store,
    key: &NsName,
    route: &Object<HttpRoute>,
    states: &mut [GatewayState<'_>],
    tables: &mut Tables,
    warnings: &mut Vec<Warning>,
    opts: &Options,
) -> Option<ObjectStatus> {
    let spec = &route.obj.spec;
    let generation = route.obj.metadata.generation;
    let now = opts.now;
    let parent_refs = spec.parent_refs.clone().unwrap_or_default();
    let route_kind = tables.route_kind;
    let mut warn = |field: String, message: String| {
        warnings.push(Warning {
            source: route.source.to_string(),
            object: format!("{} {key}", route_kind.name()),
            field,
            message,
        })
    };

    // Compile rules and resolve backends once.
    let mut resolved: (bool, &'static str, String) =
        (true, "ResolvedRefs", "All references are resolved".into());
    let mut unsupported: Option<String> = None;
    let mut rules = Vec::new();
    for (ri, rule) in spec.rules.iter().flatten().enumerate() {
        match compile_rule(store, key, route, ri, rule, tables) {
            Ok((mut compiled, problems)) => {
                if route_kind == RouteKind::Grpc {
                    grpc_precedence(store, key, &mut compiled);
                }
                for (field, reason, msg) in problems {
                    warn(field, msg.clone());
                    if resolved.0 {
                        resolved = (false, reason, msg);
                    }
                }
                rules.push(compiled);
            }
            Err((field, msg)) => {
                warn(field, msg.clone());
                unsupported.get_or_insert(msg);
            }
        }
    }

    let mut parents = Vec::new();
    for (pi, pref) in parent_refs.iter().enumerate() {
        let group = pref.group.as_deref().unwrap_or(GATEWAY_GROUP);
        let kind = pref.kind.as_deref().unwrap_or("Gateway");
        if group != GATEWAY_GROUP || !matches!(kind, "Gateway" | "ListenerSet") {
            continue;
        }
        let parent_ns = pref
            .namespace
            .clone()
            .unwrap_or_else(|| key.namespace.clone());
        let parent_key = NsName::new(parent_ns, pref.name.clone());
        // A ListenerSet parent selects its own listeners on its Gateway.
        let (gw_key, owner) = if kind == "ListenerSet" {
            let Some(ls) = store.listener_sets.get(&parent_key) else {
                warn(
                    format!(".spec.parentRefs[{pi}]"),
                    format!("ListenerSet {parent_key} does not exist"),
                );
                continue;
            };
            let p = &ls.obj.spec.parent_ref;
            (
                NsName::new(
                    p.namespace
                        .clone()
                        .unwrap_or_else(|| parent_key.namespace.clone()),
                    p.name.clone(),
                ),
                Some(parent_key.clone()),
            )
        } else {
            (parent_key.clone(), None)
        };
        // Parents that are not our Gateways get no status from us.
        let Some(gw) = states.iter_mut().find(|s| s.key == gw_key) else {
            if !store.gateways.contains_key(&gw_key) {
                warn(
                    format!(".spec.parentRefs[{pi}]"),
                    format!("Gateway {gw_key} does not exist"),
                );
            }
            continue;
        };
        let found = attach_to_listeners(
            store,
            key,
            spec,
            pref,
            &gw_key,
            owner.as_ref(),
            &mut gw.listeners,
            &mut rules,
            tables,
            unsupported.is_some(),
        );
        let accepted = parent_accepted(unsupported.as_deref(), &found, route_kind, generation, now);
        if accepted.status == "False" {
            warn(
                format!(".spec.parentRefs[{pi}]"),
                format!("{}: {}", accepted.reason, accepted.message),
            );
        }
        let mut parent_ref = serde_json::json!({
            "group": GATEWAY_GROUP,
            "kind": kind,
            "namespace": parent_key.namespace,
            "name": parent_key.name,
        });
        if let Some(s) = &pref.section_name {
            parent_ref["sectionName"] = s.clone().into();
        }
        if let Some(p) = pref.port {
            parent_ref["port"] = p.into();
        }
        parents.push(serde_json::json!({
            "parentRef": parent_ref,
            "controllerName": opts.controller_name,
            "conditions": [
                accepted,
                condition("ResolvedRefs", resolved.0, resolved.1, resolved.2.clone(), generation, now),
            ],
        }));
    }
    if parents.is_empty() {
        return None;
    }
    Some(ObjectStatus {
        api_version: format!("{GATEWAY_GROUP}/v1"),
        kind: route_kind.name().into(),
        metadata: StatusMeta {
            namespace: Some(key.namespace.clone()),
            name: key.name.clone(),
            generation,
        },
        status: serde_json::json!({ "parents": parents }),
    })
}

/// What attaching a route to one parent found.
#[derive(Default)]
struct Found {
    /// A listener matches the parentRef's sectionName and port.
    matched_section: bool,
    /// One of those allows the route's kind and namespace.
    allowed: bool,
    /// One of those has a hostname the route's hostnames intersect.
    hostname: bool,
    /// On each of those, an older route of the other kind (HTTPRoute, GRPCRoute) serves a
    /// hostname this one would: the first such route and its listener.
    conflict: Option<(NsName, String)>,
    /// The route attached to one of those listeners at least.
    attached: bool,
}

/// Attaches the compiled rules to every listener of `owner` (the Gateway's own, or a
/// ListenerSet's) that the parentRef selects and that accepts the route.
#[allow(clippy::too_many_arguments)]
fn attach_to_listeners(
    store: &Store,
    key: &NsName,
    spec: &gateway_api::experimental::httproutes::HttpRouteSpec,
    pref: &gateway_api::experimental::httproutes::HttpRouteParentRefs,
    gw_key: &NsName,
    owner: Option<&NsName>,
    listeners: &mut [ListenerState],
    rules: &mut [CompiledRule],
    tables: &mut Tables,
    unsupported: bool,
) -> Found {
    let mut found = Found::default();
    for l in listeners {
        if l.owner.as_ref() != owner {
            continue;
        }
        if pref.section_name.as_ref().is_some_and(|s| *s != l.name) {
            continue;
        }
        if pref.port.is_some_and(|p| p != i32::from(l.port)) {
            continue;
        }
        found.matched_section = true;
        let kind = tables.route_kind;
        if !l.kinds.iter().any(|k| k == kind.name())
            || !namespace_allowed(
                store,
                &l.allowed,
                &l.owner.as_ref().unwrap_or(gw_key).namespace,
                &key.namespace,
            )
        {
            continue;
        }
        found.allowed = true;
        let hostnames = hostnames_on(l.hostname.as_deref(), spec.hostnames.as_deref());
        if hostnames.is_empty() {
            continue;
        }
        found.hostname = true;
        if unsupported {
            continue;
        }
        // An HTTPRoute and a GRPCRoute may not share a hostname on a listener: the older
        // attaches (routes attach oldest first), the other is not accepted there.
        let other = l.hostnames_by_route.iter().find(|(k, _, theirs)| {
            k.conflicts_with(kind)
                && theirs
                    .iter()
                    .any(|t| hostnames.iter().any(|h| hostnames_overlap(t, h)))
        });
        if let Some((_, other, _)) = other {
            found
                .conflict
                .get_or_insert((other.clone(), l.name.clone()));
            continue;
        }
        found.attached = true;
        l.hostnames_by_route
            .push((kind, key.clone(), hostnames.clone()));
        // Only a route accepted on this listener counts as attached to it: one whose
        // hostnames intersect the listener's (GatewayWithAttachedRoutes,
        // HTTPRouteHostnameIntersection).
        l.attached += 1;
        for rule in rules.iter_mut() {
            let action = rule.action_id(&mut tables.config);
            for (m, order) in &rule.matches {
                let route = tables.config.add_route(Route {
                    route: key.clone(),
                    rule: order.rule,
                    matcher: m.clone(),
                    action,
                });
                l.routes.push(PendingRoute {
                    hostnames: hostnames.clone(),
                    route,
                    order: order.clone(),
                });
            }
        }
    }
    found
}

/// Whether two hostnames a route serves on a listener (`None`: any) have a name in common.
fn hostnames_overlap(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => intersect_hostnames(Some(a), b).is_some(),
        _ => true,
    }
}

/// A GRPCRoute's matches in GRPCRoute's precedence: by the characters of the service, then of
/// the method, then the header matches (in place of the path order of the HTTPRoute it became).
fn grpc_precedence(store: &Store, key: &NsName, rule: &mut CompiledRule) {
    let Some(route) = store.grpc_routes.get(key) else {
        return;
    };
    let rules = route.obj.spec.rules.as_deref().unwrap_or_default();
    for (_, order) in &mut rule.matches {
        let method = rules
            .get(order.rule)
            .and_then(|r| r.matches.as_deref())
            .and_then(|m| m.get(order.matcher))
            .and_then(|m| m.method.as_ref());
        let len = |s: Option<&String>| s.map_or(0, String::len);
        order.path_kind = std::cmp::Reverse(0);
        order.path_len = std::cmp::Reverse(len(method.and_then(|m| m.service.as_ref())));
        order.grpc_method_len = std::cmp::Reverse(len(method.and_then(|m| m.method.as_ref())));
    }
}

/// The hostnames a route serves on a listener: the listener's when the route names none, else
/// the intersections of the route's with the listener's (none: the route does not attach).
fn hostnames_on(listener: Option<&str>, route: Option<&[String]>) -> Vec<Option<String>> {
    match route {
        None | Some([]) => vec![listener.map(str::to_string)],
        Some(hs) => {
            let mut v: Vec<Option<String>> = hs
                .iter()
                .filter_map(|h| intersect_hostnames(listener, h))
                .map(Some)
                .collect();
            v.sort();
            v.dedup();
            v
        }
    }
}

/// A route's Accepted condition for one parent.
fn parent_accepted(
    unsupported: Option<&str>,
    found: &Found,
    kind: RouteKind,
    generation: Option<i64>,
    now: k8s_openapi::jiff::Timestamp,
) -> Condition {
    let (ok, reason, message) = if let Some(msg) = unsupported {
        (false, "UnsupportedValue", msg.to_string())
    } else if !found.matched_section {
        (
            false,
            "NoMatchingParent",
            "no listener of the Gateway matches this parentRef's sectionName and port".into(),
        )
    } else if !found.allowed {
        (
            false,
            "NotAllowedByListeners",
            "no listener allows routes of this kind from this namespace".into(),
        )
    } else if !found.hostname {
        (
            false,
            "NoMatchingListenerHostname",
            "no hostname of this route intersects a listener hostname".into(),
        )
    } else if let (false, Some((other, listener))) = (found.attached, &found.conflict) {
        let other_kind = match kind {
            RouteKind::Grpc => RouteKind::Http,
            _ => RouteKind::Grpc,
        };
        (
            false,
            "HostnameConflict",
            format!(
                "{} {other}, which is older, serves a hostname of this route on listener \
                 {listener}; an HTTPRoute and a GRPCRoute cannot share a hostname",
                other_kind.name()
            ),
        )
    } else {
        (true, "Accepted", "Route is accepted".into())
    };
    condition("Accepted", ok, reason, message, generation, now)
}
