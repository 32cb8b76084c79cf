//! Backend references: Services, their ports and ready endpoints, as clusters.

use super::*;

/// Resolves a backendRef to a cluster, or to an invalid target whose reason is
/// `Reason: message` with the spec's reason.
#[allow(clippy::too_many_arguments)]
pub(super) fn resolve_backend(
    store: &Store,
    route_key: &NsName,
    group: Option<&str>,
    kind: Option<&str>,
    name: &str,
    namespace: Option<&str>,
    port: Option<i32>,
    tables: &mut Tables,
) -> BackendTarget {
    let group = group.unwrap_or("");
    let kind = kind.unwrap_or("Service");
    let ns = namespace.unwrap_or(&route_key.namespace);
    let svc_key = NsName::new(ns, name);
    let label = format!("{svc_key}:{}", port.unwrap_or(0));
    let invalid = |reason: String| BackendTarget::Invalid {
        label: label.clone(),
        reason,
    };
    if !group.is_empty() || kind != "Service" {
        return invalid(format!(
            "InvalidKind: backend kind {}{kind} is not supported; use a Service",
            if group.is_empty() {
                String::new()
            } else {
                format!("{group}/")
            }
        ));
    }
    if let Some(why) = cross_namespace_denial(
        store,
        tables.route_kind.name(),
        &route_key.namespace,
        "Service",
        &svc_key,
    ) {
        return invalid(format!("RefNotPermitted: {why}"));
    }
    let Some(svc) = store.services.get(&svc_key) else {
        return invalid(format!("BackendNotFound: Service {svc_key} does not exist"));
    };
    let Some(port) = port else {
        return invalid(format!(
            "BackendNotFound: no port given for Service {svc_key}"
        ));
    };
    let svc_ports = svc
        .obj
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    // A UDPRoute's backends are UDP Service ports; every other route's are TCP ones.
    let transport = if tables.route_kind == RouteKind::Udp {
        "UDP"
    } else {
        "TCP"
    };
    let Some(svc_port) = svc_ports
        .iter()
        .find(|p| p.port == port && p.protocol.as_deref().unwrap_or("TCP") == transport)
    else {
        return invalid(format!(
            "BackendNotFound: Service {svc_key} has no {transport} port {port}"
        ));
    };
    // A GRPCRoute's backends speak HTTP/2 whatever the Service port's appProtocol says; an
    // HTTPRoute's only with appProtocol kubernetes.io/h2c. A TLSRoute's, TCPRoute's or
    // UDPRoute's get the bytes as they come. One cluster per protocol (a Service may have TCP
    // and UDP ports of one number, with different endpoints).
    // BackendTLSPolicy applies to HTTP, gRPC and TLSRoute clusters; the engine uses it for a
    // TLSRoute only on Terminate listeners (a passthrough connection's TLS is the client's).
    let http2 = tables.route_kind == RouteKind::Grpc
        || (tables.route_kind == RouteKind::Http
            && svc_port.app_protocol.as_deref() == Some("kubernetes.io/h2c"));
    let cluster_key = match tables.route_kind {
        _ if http2 => format!("{label} h2"),
        RouteKind::Tls => format!("{label} tls"),
        RouteKind::Tcp => format!("{label} tcp"),
        RouteKind::Udp => format!("{label} udp"),
        RouteKind::Http | RouteKind::Grpc => label.clone(),
    };
    if let Some(c) = tables.clusters.get(&cluster_key) {
        return BackendTarget::Cluster(*c);
    }
    let eps = endpoints(store, &svc_key, svc_port);
    if eps.is_empty() {
        tables.without_endpoints.push((svc_key.clone(), port));
    }
    let mut cluster = Cluster::new(label.clone(), eps);
    cluster.http2 = http2;
    let port_name = svc_port.name.clone().unwrap_or_default();
    if tables.route_kind.takes_backend_tls() {
        cluster.tls = tables
            .tls
            .get(&(svc_key.clone(), port_name))
            .or_else(|| tables.tls.get(&(svc_key.clone(), String::new())))
            .copied();
    }
    let id = tables.config.add_cluster(cluster);
    tables.clusters.insert(cluster_key, id);
    BackendTarget::Cluster(id)
}

/// Ready endpoints of a Service port, from the EndpointSlices labelled with the Service name.
pub(super) fn endpoints(
    store: &Store,
    svc: &NsName,
    port: &k8s_openapi::api::core::v1::ServicePort,
) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for (key, slice) in &store.endpoint_slices {
        if key.namespace != svc.namespace {
            continue;
        }
        let labels = slice.obj.metadata.labels.clone().unwrap_or_default();
        if labels.get("kubernetes.io/service-name").map(String::as_str) != Some(svc.name.as_str()) {
            continue;
        }
        let slice_port = slice
            .obj
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port.name.as_deref().unwrap_or(""));
        let Some(target) = slice_port.and_then(|p| p.port) else {
            continue;
        };
        let Ok(target) = u16::try_from(target) else {
            continue;
        };
        for ep in &slice.obj.endpoints {
            // A missing `ready` means ready, as in Kubernetes.
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for a in &ep.addresses {
                if let Ok(ip) = a.parse::<IpAddr>() {
                    out.push(SocketAddr::new(ip, target));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// References of a rule that did not resolve: (field, reason, message).
pub(super) type RuleProblems = Vec<(String, &'static str, String)>;

/// Records why a backend reference did not resolve, with the spec's reason.
pub(super) fn note_invalid(target: &BackendTarget, field: String, problems: &mut RuleProblems) {
    if let BackendTarget::Invalid { reason, .. } = target {
        let (r, msg) = reason
            .split_once(": ")
            .unwrap_or(("BackendNotFound", reason));
        problems.push((field, static_reason(r), msg.to_string()));
    }
}

pub(super) fn static_reason(r: &str) -> &'static str {
    match r {
        "RefNotPermitted" => "RefNotPermitted",
        "InvalidKind" => "InvalidKind",
        _ => "BackendNotFound",
    }
}
