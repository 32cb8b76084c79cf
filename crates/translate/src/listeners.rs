//! Gateway and ListenerSet listeners: addresses, each listener's state (protocol, route kinds,
//! certificates), conflicts and listener precedence, and the ListenerSets a Gateway admits.

use super::*;

/// Does the Gateway take its address from the pool (no `spec.addresses` entry with a value)?
pub(super) fn wants_pool_address(gw: &Object<Gateway>) -> bool {
    !gw.obj
        .spec
        .addresses
        .iter()
        .flatten()
        .any(|a| a.value.is_some())
}

pub(super) fn gateway_address(
    gw: &Object<Gateway>,
    pool: &mut Option<impl Iterator<Item = IpAddr>>,
    opts: &Options,
) -> Result<IpAddr, (&'static str, String)> {
    // An address entry without a value asks for an address to be assigned (GatewayAddressEmpty).
    if let Some(first) = gw
        .obj
        .spec
        .addresses
        .iter()
        .flatten()
        .find(|a| a.value.is_some())
    {
        if opts.infra.addresses_from_service && !opts.infra.external_ips {
            return Err((
                "UnsupportedAddress",
                "spec.addresses is not enabled in this controller: a requested address becomes \
                 the gateway Service's externalIPs, which lets whoever writes a Gateway take \
                 traffic for any IP; the controller's --service-external-ips enables it"
                    .to_string(),
            ));
        }
        // Standalone, the first address is the one the gateway binds; in a cluster all become
        // the Service's external IPs, so each must be one.
        let checked = if opts.infra.addresses_from_service {
            requested_addresses(gw).collect::<Vec<_>>()
        } else {
            vec![first]
        };
        for a in checked {
            let ty = a.r#type.as_deref().unwrap_or("IPAddress");
            if ty != "IPAddress" {
                return Err((
                    "UnsupportedAddress",
                    format!("address type {ty} is not supported; use IPAddress"),
                ));
            }
            if a.value
                .as_deref()
                .map(str::parse::<IpAddr>)
                .and_then(Result::ok)
                .is_none()
            {
                return Err((
                    "UnsupportedAddress",
                    format!(
                        "{:?} is not an IP address",
                        a.value.as_deref().unwrap_or("")
                    ),
                ));
            }
        }
        return first
            .value
            .as_deref()
            .and_then(|v| v.parse::<IpAddr>().ok())
            .ok_or(("UnsupportedAddress", "no IP address".to_string()));
    }
    match pool {
        Some(p) => p.next().ok_or((
            "AddressNotAssigned",
            "the address pool has no free address left".to_string(),
        )),
        None => Ok(opts.bind),
    }
}

fn requested_addresses(
    gw: &Object<Gateway>,
) -> impl Iterator<Item = &gateway_api::experimental::gateways::GatewayAddresses> {
    gw.obj
        .spec
        .addresses
        .iter()
        .flatten()
        .filter(|a| a.value.is_some())
}

/// In cluster mode, the requested addresses the controller may not put on a Service (outside
/// `--service-external-ip-cidrs`), as the reason the Gateway is not programmed.
pub(super) fn unusable_addresses(gw: &Object<Gateway>, opts: &Options) -> Option<String> {
    if !opts.infra.addresses_from_service {
        return None;
    }
    let outside: Vec<String> = requested_addresses(gw)
        .filter_map(|a| a.value.as_deref()?.parse::<IpAddr>().ok())
        .filter(|ip| !opts.infra.external_ip_allowed(ip))
        .map(|ip| ip.to_string())
        .collect();
    (!outside.is_empty()).then(|| {
        let ranges: Vec<String> = opts
            .infra
            .external_ip_cidrs
            .iter()
            .map(|n| n.to_string())
            .collect();
        format!(
            "spec.addresses {} are outside the ranges this controller may give Gateways ({})",
            outside.join(", "),
            ranges.join(", ")
        )
    })
}

/// The route kinds HTTP and HTTPS listeners serve; TLS, TCP and UDP listeners'.
const HTTP_ROUTE_KINDS: &[&str] = &["HTTPRoute", "GRPCRoute"];
const TLS_ROUTE_KINDS: &[&str] = &["TLSRoute"];
const TCP_ROUTE_KINDS: &[&str] = &["TCPRoute"];
const UDP_ROUTE_KINDS: &[&str] = &["UDPRoute"];

pub(super) fn listener_state(
    store: &Store,
    gw_key: &NsName,
    l: &GatewayListeners,
    warnings: &mut Vec<Warning>,
    memory: &mut TlsMemory<'_>,
    gw: &Object<Gateway>,
) -> ListenerState {
    let protocol = match l.protocol.as_str() {
        "HTTP" => Some(Protocol::Http),
        "HTTPS" => Some(Protocol::Https),
        "TLS" => Some(Protocol::Tls),
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        _ => None,
    };
    let route_kinds = match protocol {
        Some(Protocol::Tls) => TLS_ROUTE_KINDS,
        Some(Protocol::Tcp) => TCP_ROUTE_KINDS,
        Some(Protocol::Udp) => UDP_ROUTE_KINDS,
        _ => HTTP_ROUTE_KINDS,
    };
    let allowed = match l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
    {
        None => AllowedNamespaces::Same,
        Some(ns) => {
            use gateway_api::experimental::gateways::GatewayListenersAllowedRoutesNamespacesFrom as From;
            match ns.from {
                Some(From::All) => AllowedNamespaces::All,
                Some(From::Selector) => {
                    AllowedNamespaces::Selector(ns.selector.clone().unwrap_or_default())
                }
                Some(From::Same) | None => AllowedNamespaces::Same,
            }
        }
    };
    let mut st = ListenerState {
        owner: None,
        name: l.name.clone(),
        port: u16::try_from(l.port).unwrap_or(0),
        protocol,
        raw_protocol: l.protocol.clone(),
        hostname: l.hostname.clone(),
        kinds: Vec::new(),
        allowed,
        accepted: (true, "Accepted", "Listener is accepted".into()),
        resolved_refs: (true, "ResolvedRefs", "All references are resolved".into()),
        conflicted: None,
        cert: None,
        serving_last_good: false,
        client_validation: None,
        attached: 0,
        hostnames_by_route: Vec::new(),
        routes: Vec::new(),
        unbound: None,
    };
    if protocol.is_none() {
        st.accepted = (
            false,
            "UnsupportedProtocol",
            format!(
                "protocol {} is not supported; supported: HTTP, HTTPS, TLS, TCP, UDP",
                l.protocol
            ),
        );
        return st;
    }
    // Route kinds.
    match l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) {
        None => st.kinds = route_kinds.iter().map(|k| k.to_string()).collect(),
        Some(kinds) => {
            let mut invalid = Vec::new();
            for k in kinds {
                let group = k.group.as_deref().unwrap_or(GATEWAY_GROUP);
                if group == GATEWAY_GROUP && route_kinds.contains(&k.kind.as_str()) {
                    if !st.kinds.contains(&k.kind) {
                        st.kinds.push(k.kind.clone());
                    }
                } else {
                    invalid.push(format!("{group}/{}", k.kind));
                }
            }
            if !invalid.is_empty() {
                st.resolved_refs = (
                    false,
                    "InvalidRouteKinds",
                    format!(
                        "route kinds not supported on this listener: {}",
                        invalid.join(", ")
                    ),
                );
            }
        }
    }
    // TLS: an HTTPS listener terminates; a TLS listener passes through (mode Passthrough) or
    // terminates (mode Terminate, the default) with its certificate.
    use gateway_api::experimental::gateways::GatewayListenersTlsMode as Mode;
    let passthrough = matches!(
        l.tls.as_ref().and_then(|t| t.mode.as_ref()),
        Some(Mode::Passthrough)
    );
    let terminates =
        protocol == Some(Protocol::Https) || (protocol == Some(Protocol::Tls) && !passthrough);
    if terminates {
        let tls = l.tls.as_ref();
        if protocol == Some(Protocol::Https) && passthrough {
            st.accepted = (
                false,
                "UnsupportedValue",
                "TLS mode Passthrough is not valid for HTTPS listeners".into(),
            );
            return st;
        }
        let refs = tls.and_then(|t| t.certificate_refs.as_ref());
        let Some(first) = refs.and_then(|r| r.first()) else {
            st.resolved_refs = (
                false,
                "InvalidCertificateRef",
                "an HTTPS listener needs a certificateRef".into(),
            );
            return st;
        };
        listener_certificate(store, gw_key, gw, first, memory, warnings, &mut st);
        if !st.resolved_refs.0 {
            warnings.push(Warning {
                source: gw.source.to_string(),
                object: format!("Gateway {gw_key}"),
                field: format!(".spec.listeners[name={}].tls.certificateRefs", l.name),
                message: st.resolved_refs.2.clone(),
            });
        }
        if protocol == Some(Protocol::Https) && (st.resolved_refs.0 || st.serving_last_good) {
            frontend_validation(store, gw_key, gw, &mut st);
        }
    }
    st
}

/// The certificate of an HTTPS listener from its first certificateRef. A Secret that turned
/// invalid keeps its last valid content in service; a missing, refused or never valid one
/// leaves `resolved_refs` False.
fn listener_certificate(
    store: &Store,
    gw_key: &NsName,
    gw: &Object<Gateway>,
    first: &gateway_api::experimental::gateways::GatewayListenersTlsCertificateRefs,
    memory: &mut TlsMemory<'_>,
    warnings: &mut Vec<Warning>,
    st: &mut ListenerState,
) {
    let group = first.group.as_deref().unwrap_or("");
    let kind = first.kind.as_deref().unwrap_or("Secret");
    let ns = first.namespace.as_deref().unwrap_or(&gw_key.namespace);
    let secret_key = NsName::new(ns, first.name.clone());
    if !group.is_empty() || kind != "Secret" {
        st.resolved_refs = (
            false,
            "InvalidCertificateRef",
            format!("certificateRef kind {group}/{kind} is not supported; use a Secret"),
        );
    } else if let Some(why) = cross_namespace_denial(
        store,
        if gw.obj.metadata.name.as_deref() == Some(gw_key.name.as_str())
            && gw.obj.metadata.namespace.as_deref().unwrap_or("default") == gw_key.namespace
        {
            "Gateway"
        } else {
            "ListenerSet"
        },
        &gw_key.namespace,
        "Secret",
        &secret_key,
    ) {
        st.resolved_refs = (false, "RefNotPermitted", why);
    } else {
        match store.secrets.get(&secret_key) {
            None => {
                st.resolved_refs = (
                    false,
                    "InvalidCertificateRef",
                    format!("Secret {secret_key} does not exist"),
                );
            }
            Some(secret) => match certified_key(&secret.obj) {
                Ok(_) => {
                    let data = secret_data(&secret.obj);
                    if let (Some(cert), Some(key)) = (data.get("tls.crt"), data.get("tls.key")) {
                        let pem = TlsPem {
                            cert: cert.clone(),
                            key: key.clone(),
                        };
                        memory.next.insert(secret_key.clone(), pem.clone());
                        st.cert = Some(pem);
                    }
                }
                Err(e) => {
                    // A Secret that was valid before keeps its last valid content in
                    // service: a bad edit must not take an HTTPS listener down.
                    let last = memory
                        .previous
                        .get(&secret_key)
                        .filter(|pem| certified_key_from_pem(&pem.cert, &pem.key).is_ok());
                    let kept = if let Some(pem) = last {
                        memory.next.insert(secret_key.clone(), pem.clone());
                        st.cert = Some(pem.clone());
                        st.serving_last_good = true;
                        "; the listener keeps serving the last valid certificate of this Secret"
                    } else {
                        "; no valid certificate was ever loaded from it, so the listener is not served"
                    };
                    warnings.push(Warning {
                        source: secret.source.to_string(),
                        object: format!("Secret {secret_key}"),
                        field: ".data".into(),
                        message: format!("{e}{kept}"),
                    });
                    st.resolved_refs = (
                        false,
                        "InvalidCertificateRef",
                        format!("Secret {secret_key}: {e}{kept}"),
                    );
                }
            },
        }
    }
}

/// Marks listeners that share a port with another listener of a different protocol
/// (ProtocolConflict) or of the same protocol and hostname (HostnameConflict). Protocols are
/// compared as written, so a listener of a protocol we do not serve (TCP, UDP, TLS) still
/// conflicts (it is marked; a served listener is never marked for it). Within the Gateway every
/// conflicting listener is marked. A ListenerSet listener
/// yields to the listeners that precede it and are not themselves conflicted: the Gateway's,
/// then those of older ListenerSets, then earlier ones of its own set.
pub(super) fn mark_conflicts(st: &mut GatewayState<'_>) {
    fn conflict(a: &ListenerState, b: &ListenerState) -> Option<(&'static str, String)> {
        // HTTPS and TLS listeners could share a port (the SNI would tell them apart), and the
        // spec lets an implementation call them compatible; the engine serves a port with one
        // protocol, so here they conflict.
        let compatible = a.raw_protocol == b.raw_protocol;
        if a.port != b.port {
            None
        } else if !compatible {
            Some((
                "ProtocolConflict",
                format!(
                    "port {} is also used with protocol {} by listener {}",
                    a.port, b.raw_protocol, b.name
                ),
            ))
        } else if a.hostname == b.hostname {
            Some((
                "HostnameConflict",
                format!(
                    "hostname {:?} on port {} is also used by listener {}",
                    a.hostname.as_deref().unwrap_or(""),
                    a.port,
                    b.name
                ),
            ))
        } else {
            None
        }
    }
    let n = st.listeners.len();
    // A listener of a protocol we do not serve may be marked, but never causes a served one to
    // be: the spec says such listeners should not be accepted, not that they take a port.
    let counts =
        |a: &ListenerState, b: &ListenerState| a.protocol.is_none() || b.protocol.is_some();
    for i in 0..n {
        let l = &st.listeners[i];
        let found = if l.owner.is_none() {
            (0..n)
                .filter(|&j| j != i && st.listeners[j].owner.is_none())
                .filter(|&j| counts(l, &st.listeners[j]))
                .find_map(|j| conflict(l, &st.listeners[j]))
        } else {
            (0..i)
                .filter(|&j| st.listeners[j].conflicted.is_none())
                .filter(|&j| counts(l, &st.listeners[j]))
                .find_map(|j| conflict(l, &st.listeners[j]))
        };
        if let Some((reason, msg)) = found {
            let l = &mut st.listeners[i];
            l.accepted = (false, reason, msg.clone());
            l.conflicted = Some((reason, msg));
        }
    }
}

/// ListenerSets that name `gw` as their parent, oldest first, and whether the Gateway's
/// `allowedListeners` lets each attach (the default allows none).
pub(super) fn attached_listener_sets<'a>(
    store: &'a Store,
    gw_key: &NsName,
    gw: &Object<Gateway>,
) -> Vec<(
    NsName,
    &'a Object<gateway_api::listenersets::ListenerSet>,
    bool,
)> {
    let mut out: Vec<_> = store
        .listener_sets
        .iter()
        .filter(|(k, ls)| {
            let p = &ls.obj.spec.parent_ref;
            p.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
                && p.kind.as_deref().unwrap_or("Gateway") == "Gateway"
                && p.name == gw_key.name
                && p.namespace.as_deref().unwrap_or(&k.namespace) == gw_key.namespace
        })
        .map(|(k, ls)| {
            use gateway_api::experimental::gateways::GatewayAllowedListenersNamespacesFrom as From;
            let ns = gw.obj.spec.allowed_listeners.as_ref().and_then(|a| a.namespaces.as_ref());
            let allowed = match ns.and_then(|n| n.from.as_ref()) {
                None | Some(From::None) => false,
                Some(From::Same) => k.namespace == gw_key.namespace,
                Some(From::All) => true,
                Some(From::Selector) => {
                    let sel = ns.and_then(|n| n.selector.as_ref());
                    let sel = sel.map(|s| serde_json::to_value(s).unwrap_or_default()).unwrap_or_default();
                    let sel: gateway_api::experimental::gateways::GatewayListenersAllowedRoutesNamespacesSelector =
                        serde_json::from_value(sel).unwrap_or_default();
                    namespace_allowed(store, &AllowedNamespaces::Selector(sel), &gw_key.namespace, &k.namespace)
                }
            };
            (k.clone(), ls, allowed)
        })
        .collect();
    // Oldest first by creationTimestamp, then by namespace/name, as the spec orders them;
    // without timestamps (files), in the order the files give them.
    let order = |o: &Object<gateway_api::listenersets::ListenerSet>| {
        (o.created.0, o.created.0.map_or(o.created.1, |_| 0))
    };
    out.sort_by(|a, b| (order(a.1), &a.0).cmp(&(order(b.1), &b.0)));
    out
}
