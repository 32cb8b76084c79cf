//! Gateway and ListenerSet status, and the served snapshot's binds for each Gateway.

use super::*;

/// Builds the Gateway's status (and its ListenerSets') and adds its programmed listeners to the
/// snapshot.
pub(super) fn gateway_status(
    st: &GatewayState<'_>,
    config: &mut Config,
    now: k8s_openapi::jiff::Timestamp,
    from_service: Option<(NsName, Vec<serde_json::Value>)>,
) -> Vec<ObjectStatus> {
    let generation = st.obj.obj.metadata.generation;
    let (listener_status, mut ls_listener_status) = listener_statuses(st, generation, now);
    if let Some(Ok(cert)) = &st.backend_cert {
        config
            .backend_client_certs
            .push(sluice_config::GatewayClientCert {
                gateway: st.key.clone(),
                pem: cert.clone(),
            });
    }
    let serving = add_binds(st, config);
    let (accepted, mut programmed, addresses) =
        accepted_and_programmed(st, serving, generation, now, from_service);
    // The address cannot be used: every listener of the Gateway's own that is served could
    // not open its socket, or (cluster mode) a requested address is outside the allowed ranges.
    let unbound = st
        .listeners
        .iter()
        .find_map(|l| l.unbound.as_ref())
        .filter(|_| {
            !st.listeners
                .iter()
                .any(|l| l.owner.is_none() && l.programmed() && l.unbound.is_none())
        });
    let outside = st
        .unusable_address
        .as_ref()
        .filter(|_| accepted.status == "True");
    if let Some(why) = unbound.or(outside) {
        programmed = condition(
            "Programmed",
            false,
            "AddressNotUsable",
            why.clone(),
            generation,
            now,
        );
    }

    let gateway_ok = accepted.status == "True" && programmed.status == "True";
    let mut gw_status = serde_json::json!({
        "addresses": addresses,
        "conditions": gateway_conditions(st, accepted, programmed, generation, now),
        "listeners": listener_status,
    });
    if !st.listener_sets.is_empty() {
        // Only ListenerSets that are Accepted count as attached.
        let attached = st
            .listener_sets
            .iter()
            .filter(|(k, _, allowed)| gateway_ok && *allowed && listener_set_valid(st, k))
            .count();
        gw_status["attachedListenerSets"] = attached.into();
    }
    let mut out = vec![ObjectStatus {
        api_version: format!("{GATEWAY_GROUP}/v1"),
        kind: "Gateway".into(),
        metadata: StatusMeta {
            namespace: Some(st.key.namespace.clone()),
            name: st.key.name.clone(),
            generation,
        },
        status: gw_status,
    }];
    for (ls_key, ls, allowed) in &st.listener_sets {
        let g = ls.obj.metadata.generation;
        let listeners = ls_listener_status.remove(ls_key).unwrap_or_default();
        let conditions = listener_set_conditions(st, ls_key, *allowed, gateway_ok, g, now);
        out.push(ObjectStatus {
            api_version: format!("{GATEWAY_GROUP}/v1"),
            kind: "ListenerSet".into(),
            metadata: StatusMeta {
                namespace: Some(ls_key.namespace.clone()),
                name: ls_key.name.clone(),
                generation: g,
            },
            status: serde_json::json!({"conditions": conditions, "listeners": listeners}),
        });
    }
    out
}

/// The status of every listener: the Gateway's own, and each ListenerSet's by set.
fn listener_statuses(
    st: &GatewayState<'_>,
    generation: Option<i64>,
    now: k8s_openapi::jiff::Timestamp,
) -> (
    Vec<serde_json::Value>,
    HashMap<NsName, Vec<serde_json::Value>>,
) {
    let mut own = Vec::new();
    let mut by_set: HashMap<NsName, Vec<serde_json::Value>> = HashMap::new();
    for l in &st.listeners {
        let programmed = l.programmed() && st.address.is_ok() && l.unbound.is_none();
        let accepted = match &l.unbound {
            Some(why) => (false, "PortUnavailable", why.clone()),
            None => l.accepted.clone(),
        };
        let mut conds = vec![
            condition(
                "Accepted", accepted.0, accepted.1, accepted.2, generation, now,
            ),
            condition(
                "ResolvedRefs",
                l.resolved_refs.0,
                l.resolved_refs.1,
                l.resolved_refs.2.clone(),
                generation,
                now,
            ),
        ];
        conds.push(match &l.conflicted {
            Some((reason, msg)) => {
                let mut c = condition("Conflicted", false, reason, msg.clone(), generation, now);
                c.status = "True".into();
                c
            }
            None => condition(
                "Conflicted",
                false,
                "NoConflicts",
                "No conflicts",
                generation,
                now,
            ),
        });
        conds.push(if programmed {
            condition(
                "Programmed",
                true,
                "Programmed",
                "Listener is serving",
                generation,
                now,
            )
        } else if let Some((reason, msg)) = &l.conflicted {
            condition("Programmed", false, reason, msg.clone(), generation, now)
        } else if let Some(why) = &l.unbound {
            condition("Programmed", false, "Invalid", why.clone(), generation, now)
        } else {
            condition(
                "Programmed",
                false,
                "Invalid",
                "Listener is not valid",
                generation,
                now,
            )
        });
        let target = match &l.owner {
            None => &mut own,
            Some(o) => by_set.entry(o.clone()).or_default(),
        };
        target.push(serde_json::json!({
            "name": l.name,
            "attachedRoutes": l.attached,
            "supportedKinds": l.kinds.iter().map(|k| serde_json::json!({"group": GATEWAY_GROUP, "kind": k})).collect::<Vec<_>>(),
            "conditions": conds,
        }));
    }
    (own, by_set)
}

/// Adds a bind to the snapshot for every port with a programmed listener; false when the
/// Gateway serves nothing.
fn add_binds(st: &GatewayState<'_>, config: &mut Config) -> bool {
    let Ok(ip) = st.address else {
        return false;
    };
    let mut by_port: BTreeMap<u16, Vec<&ListenerState>> = BTreeMap::new();
    for l in st.listeners.iter().filter(|l| l.programmed()) {
        by_port.entry(l.port).or_default().push(l);
    }
    let serving = !by_port.is_empty();
    for (port, listeners) in by_port {
        let protocol = listeners[0].protocol.unwrap_or(Protocol::Http);
        let mut certs = Vec::new();
        // Validation is configured per port, so every listener of the port has the same.
        let client_validation = listeners.iter().find_map(|l| l.client_validation.clone());
        let mut served = Vec::new();
        for l in listeners {
            if let Some(c) = &l.cert {
                certs.push(sluice_config::ListenerCert {
                    hostname: l.hostname.clone(),
                    pem: c.clone(),
                });
            }
            served.push(Listener {
                gateway: st.key.clone(),
                name: l.name.clone(),
                port,
                protocol,
                hostname: l.hostname.clone(),
                routes: route_table(&l.routes),
                tls: l.cert.is_some(),
            });
        }
        // HTTPS ports terminate TLS; TLS ports do for their Terminate listeners (those with a
        // certificate), and pass the others through.
        let terminates =
            protocol == Protocol::Https || (protocol == Protocol::Tls && !certs.is_empty());
        let tls = terminates.then_some(ServerTls {
            certs,
            client_validation,
        });
        let addr = SocketAddr::new(ip, port);
        config.binds.push(Bind {
            addr,
            protocol,
            gateway: st.key.clone(),
            listeners: served,
            tls,
        });
    }
    serving
}

/// The Gateway's Accepted and Programmed conditions and its status addresses.
/// The addresses of a Gateway's Service (named as `infra::render` names it): its load
/// balancer's ingress addresses, else its cluster IPs.
pub(super) fn service_addresses(
    store: &Store,
    gateway: &NsName,
) -> (NsName, Vec<serde_json::Value>) {
    let key = NsName::new(
        gateway.namespace.clone(),
        crate::infra::object_name(&gateway.name),
    );
    let Some(svc) = store.services.get(&key) else {
        return (key, Vec::new());
    };
    let ingress: Vec<serde_json::Value> = svc
        .obj
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| match (&i.ip, &i.hostname) {
            (Some(ip), _) => Some(serde_json::json!({"type": "IPAddress", "value": ip})),
            (None, Some(h)) => Some(serde_json::json!({"type": "Hostname", "value": h})),
            (None, None) => None,
        })
        .collect();
    if !ingress.is_empty() {
        return (key, ingress);
    }
    let spec = svc.obj.spec.as_ref();
    // The Gateway's requested addresses (`spec.addresses`), which render puts on the Service
    // as external IPs, then its cluster IPs.
    let external = spec
        .and_then(|s| s.external_ips.clone())
        .unwrap_or_default();
    let cluster = spec.and_then(|s| s.cluster_ips.clone()).unwrap_or_default();
    let ips: Vec<String> = if !external.is_empty() {
        external
    } else if !cluster.is_empty() {
        cluster
    } else {
        spec.and_then(|s| s.cluster_ip.clone())
            .into_iter()
            .collect()
    };
    let addrs = ips
        .into_iter()
        .filter(|ip| ip != "None" && !ip.is_empty())
        .map(|ip| serde_json::json!({"type": "IPAddress", "value": ip}))
        .collect();
    (key, addrs)
}

fn accepted_and_programmed(
    st: &GatewayState<'_>,
    serving: bool,
    generation: Option<i64>,
    now: k8s_openapi::jiff::Timestamp,
    from_service: Option<(NsName, Vec<serde_json::Value>)>,
) -> (Condition, Condition, Vec<serde_json::Value>) {
    let own: Vec<&ListenerState> = st.listeners.iter().filter(|l| l.owner.is_none()).collect();
    let valid = own.iter().filter(|l| l.programmed()).count();
    let port_unavailable = st
        .listeners
        .iter()
        .any(|l| l.accepted.1 == "PortUnavailable");
    let ip = match &st.address {
        Err((reason, msg)) => {
            return (
                condition("Accepted", false, reason, msg.clone(), generation, now),
                condition(
                    "Programmed",
                    false,
                    "AddressNotAssigned",
                    msg.clone(),
                    generation,
                    now,
                ),
                vec![],
            )
        }
        Ok(ip) => ip,
    };
    let params = st
        .obj
        .obj
        .spec
        .infrastructure
        .as_ref()
        .and_then(|i| i.parameters_ref.as_ref());
    let accepted = if let Some(p) = params {
        condition(
            "Accepted",
            false,
            "InvalidParameters",
            format!(
                "infrastructure.parametersRef {}/{} {} is not supported by this controller",
                p.group, p.kind, p.name
            ),
            generation,
            now,
        )
    } else if valid == own.len() {
        condition(
            "Accepted",
            true,
            "Accepted",
            "Gateway is accepted",
            generation,
            now,
        )
    } else {
        condition(
            "Accepted",
            valid > 0,
            "ListenersNotValid",
            format!(
                "{} of {} listeners are not valid",
                own.len() - valid,
                own.len()
            ),
            generation,
            now,
        )
    };
    let (addresses, shown) = match from_service {
        Some((service, addrs)) => {
            if addrs.is_empty() && accepted.status == "True" {
                let msg = format!("waiting for Service {service} to get an address");
                let programmed = condition(
                    "Programmed",
                    false,
                    "AddressNotAssigned",
                    msg,
                    generation,
                    now,
                );
                return (accepted, programmed, addrs);
            }
            let shown = addrs
                .iter()
                .filter_map(|a| a["value"].as_str())
                .collect::<Vec<_>>()
                .join(", ");
            (addrs, shown)
        }
        None => (
            vec![serde_json::json!({"type": "IPAddress", "value": ip.to_string()})],
            ip.to_string(),
        ),
    };
    let programmed = if serving {
        condition(
            "Programmed",
            true,
            "Programmed",
            format!("Serving on {shown}"),
            generation,
            now,
        )
    } else if port_unavailable {
        condition(
            "Programmed",
            false,
            "AddressNotUsable",
            format!("the ports of this Gateway on {ip} are used by an older Gateway"),
            generation,
            now,
        )
    } else {
        condition(
            "Programmed",
            false,
            "Invalid",
            "No listener can be served",
            generation,
            now,
        )
    };
    (accepted, programmed, addresses)
}

/// A ListenerSet with at least one valid listener (or none at all) is accepted.
fn listener_set_valid(st: &GatewayState<'_>, key: &NsName) -> bool {
    let mut own = st
        .listeners
        .iter()
        .filter(|l| l.owner.as_ref() == Some(key));
    own.clone().next().is_none() || own.any(|l| l.programmed())
}

/// A ListenerSet's Accepted and Programmed conditions.
fn listener_set_conditions(
    st: &GatewayState<'_>,
    ls_key: &NsName,
    allowed: bool,
    gateway_ok: bool,
    g: Option<i64>,
    now: k8s_openapi::jiff::Timestamp,
) -> Vec<Condition> {
    if !allowed {
        let msg = format!(
            "Gateway {} does not allow ListenerSets from namespace {}",
            st.key, ls_key.namespace
        );
        return vec![
            condition("Accepted", false, "NotAllowed", msg.clone(), g, now),
            condition("Programmed", false, "NotAllowed", msg, g, now),
        ];
    }
    if !gateway_ok {
        let msg = format!("parent Gateway {} is not accepted and programmed", st.key);
        return vec![
            condition("Accepted", false, "ParentNotAccepted", msg.clone(), g, now),
            condition("Programmed", false, "ParentNotProgrammed", msg, g, now),
        ];
    }
    let own: Vec<&ListenerState> = st
        .listeners
        .iter()
        .filter(|l| l.owner.as_ref() == Some(ls_key))
        .collect();
    let valid = own.iter().filter(|l| l.programmed()).count();
    if valid == own.len() {
        return vec![
            condition(
                "Accepted",
                true,
                "Accepted",
                "ListenerSet is accepted",
                g,
                now,
            ),
            condition(
                "Programmed",
                true,
                "Programmed",
                "ListenerSet is serving",
                g,
                now,
            ),
        ];
    }
    let msg = format!(
        "{} of {} listeners are not valid",
        own.len() - valid,
        own.len()
    );
    vec![
        condition(
            "Accepted",
            valid > 0,
            "ListenersNotValid",
            msg.clone(),
            g,
            now,
        ),
        if valid > 0 {
            condition(
                "Programmed",
                true,
                "Programmed",
                "ListenerSet is serving its valid listeners",
                g,
                now,
            )
        } else {
            condition("Programmed", false, "ListenersNotValid", msg, g, now)
        },
    ]
}

/// Accepted and Programmed, and ResolvedRefs when the Gateway itself references something
/// (its backend client certificate).
pub(super) fn gateway_conditions(
    st: &GatewayState<'_>,
    accepted: Condition,
    programmed: Condition,
    generation: Option<i64>,
    now: k8s_openapi::jiff::Timestamp,
) -> Vec<Condition> {
    let mut conds = vec![accepted, programmed];
    // GEP-91: a Gateway that lets clients without a valid certificate through says so.
    if insecure_frontend_validation(&st.obj.obj) {
        conds.push(condition(
            "InsecureFrontendValidationMode",
            true,
            "ConfigurationChanged",
            "client certificate validation uses AllowInsecureFallback: connections without a valid client certificate are accepted",
            generation,
            now,
        ));
    }
    match &st.backend_cert {
        None => {}
        Some(Ok(_)) => conds.push(condition(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "All references are resolved",
            generation,
            now,
        )),
        Some(Err((reason, msg))) => conds.push(condition(
            "ResolvedRefs",
            false,
            reason,
            msg.clone(),
            generation,
            now,
        )),
    }
    conds
}

/// Whether the default or any per-port frontend validation is AllowInsecureFallback.
pub(super) fn insecure_frontend_validation(gw: &Gateway) -> bool {
    use gateway_api::experimental::gateways::{
        GatewayTlsFrontendDefaultValidationMode as DefaultMode,
        GatewayTlsFrontendPerPortTlsValidationMode as PortMode,
    };
    let Some(frontend) = gw.spec.tls.as_ref().and_then(|t| t.frontend.as_ref()) else {
        return false;
    };
    let default = frontend
        .default
        .validation
        .as_ref()
        .is_some_and(|v| matches!(v.mode, Some(DefaultMode::AllowInsecureFallback)));
    let per_port = frontend.per_port.iter().flatten().any(|p| {
        p.tls
            .validation
            .as_ref()
            .is_some_and(|v| matches!(v.mode, Some(PortMode::AllowInsecureFallback)))
    });
    default || per_port
}
