//! The validation a Kubernetes API server applies to Gateway API objects (the CRDs' OpenAPI
//! and CEL rules) that typed deserialization alone does not catch.
//!
//! Only rules that make an object unacceptable belong here; a reference that does not resolve is
//! not a validation error but a status condition, computed by `translate`.

use crate::resources::{ManifestError, Object, Store};

/// Every rule broken by any object of the store.
pub fn validate(store: &Store) -> Vec<ManifestError> {
    let mut errors = Vec::new();
    for (key, gw) in &store.gateways {
        let mut e = Errs::new(gw, format!("Gateway {key}"), &mut errors);
        let listeners = &gw.obj.spec.listeners;
        if listeners.is_empty() {
            e.push(".spec.listeners", "at least one listener is required");
        }
        for (i, l) in listeners.iter().enumerate() {
            let f = |s: &str| format!(".spec.listeners[{i}].{s}");
            if !(1..=65535).contains(&l.port) {
                e.push(&f("port"), format!("port {} is not in 1-65535", l.port));
            }
            if !is_section_name(&l.name) {
                e.push(
                    &f("name"),
                    format!(
                        "{:?} is not a valid listener name (lowercase RFC 1123 label)",
                        l.name
                    ),
                );
            }
            if listeners[..i].iter().any(|o| o.name == l.name) {
                e.push(
                    &f("name"),
                    format!("listener name {:?} is used twice", l.name),
                );
            }
            if let Some(h) = &l.hostname {
                if !is_hostname(h, true) {
                    e.push(&f("hostname"), format!("{h:?} is not a valid hostname"));
                }
            }
            if matches!(l.protocol.as_str(), "HTTP" | "TCP" | "UDP") && l.tls.is_some() {
                e.push(
                    &f("tls"),
                    format!("tls must not be set for protocol {}", l.protocol),
                );
            }
            if matches!(l.protocol.as_str(), "TCP" | "UDP") && l.hostname.is_some() {
                e.push(
                    &f("hostname"),
                    format!("hostname must not be set for protocol {}", l.protocol),
                );
            }
            if l.protocol == "HTTPS" && l.tls.is_none() {
                e.push(&f("tls"), "tls is required for protocol HTTPS");
            }
        }
        if let Some(infra) = &gw.obj.spec.infrastructure {
            for (field, map, max_value) in [
                ("labels", &infra.labels, 63),
                ("annotations", &infra.annotations, 4096),
            ] {
                let Some(map) = map else { continue };
                let at = format!(".spec.infrastructure.{field}");
                if map.len() > 8 {
                    e.push(&at, format!("{} entries, at most 8 are allowed", map.len()));
                }
                for (k, v) in map {
                    if !is_qualified_key(k) {
                        e.push(
                            &format!("{at}[{k:?}]"),
                            "keys are an optional DNS subdomain prefix and '/', then a name of up to 63 characters (alphanumerics, '-', '_', '.'; alphanumeric at both ends)",
                        );
                    }
                    if v.len() > max_value {
                        e.push(
                            &format!("{at}[{k:?}]"),
                            format!(
                                "the value has {} characters, at most {max_value} are allowed",
                                v.len()
                            ),
                        );
                    } else if field == "labels" && !v.is_empty() && !is_label_name(v) {
                        e.push(
                            &format!("{at}[{k:?}]"),
                            format!("{v:?} is not a label value (alphanumerics, '-', '_', '.'; alphanumeric at both ends)"),
                        );
                    }
                }
            }
        }
    }
    for (key, route) in &store.http_routes {
        let mut e = Errs::new(route, format!("HTTPRoute {key}"), &mut errors);
        let spec = &route.obj.spec;
        for (i, h) in spec.hostnames.iter().flatten().enumerate() {
            if !is_hostname(h, true) {
                e.push(
                    &format!(".spec.hostnames[{i}]"),
                    format!("{h:?} is not a valid hostname"),
                );
            }
        }
        for (r, rule) in spec.rules.iter().flatten().enumerate() {
            for (m, mat) in rule.matches.iter().flatten().enumerate() {
                if let Some(p) = mat.path.as_ref().and_then(|p| p.value.as_ref()) {
                    let is_regex = matches!(
                        mat.path.as_ref().and_then(|p| p.r#type.as_ref()),
                        Some(gateway_api::experimental::httproutes::HttpRouteRulesMatchesPathType::RegularExpression)
                    );
                    if !is_regex && !p.starts_with('/') {
                        e.push(
                            &format!(".spec.rules[{r}].matches[{m}].path.value"),
                            format!("{p:?} must be an absolute path starting with '/'"),
                        );
                    }
                }
                for (h, hm) in mat.headers.iter().flatten().enumerate() {
                    if http::HeaderName::from_bytes(hm.name.as_bytes()).is_err() {
                        e.push(
                            &format!(".spec.rules[{r}].matches[{m}].headers[{h}].name"),
                            format!("{:?} is not a valid header name", hm.name),
                        );
                    }
                }
            }
            let filters = rule.filters.as_deref().unwrap_or_default();
            use gateway_api::experimental::httproutes::HttpRouteRulesFiltersType as F;
            let redirect = filters.iter().any(|f| f.r#type == F::RequestRedirect);
            let rewrite = filters.iter().any(|f| f.r#type == F::UrlRewrite);
            if redirect && rewrite {
                e.push(
                    &format!(".spec.rules[{r}].filters"),
                    "RequestRedirect and URLRewrite cannot be used in the same rule",
                );
            }
            if redirect && rule.backend_refs.as_ref().is_some_and(|b| !b.is_empty()) {
                e.push(
                    &format!(".spec.rules[{r}].filters"),
                    "RequestRedirect cannot be used together with backendRefs",
                );
            }
            for (fi, f) in filters.iter().enumerate() {
                let code = f.request_redirect.as_ref().and_then(|r| r.status_code);
                if let Some(code) = code {
                    if ![301, 302, 303, 307, 308].contains(&code) {
                        e.push(
                            &format!(".spec.rules[{r}].filters[{fi}].requestRedirect.statusCode"),
                            format!("status code {code} is not one of 301, 302, 303, 307, 308"),
                        );
                    }
                }
            }
            for (b, br) in rule.backend_refs.iter().flatten().enumerate() {
                let at = format!(".spec.rules[{r}].backendRefs[{b}]");
                backend_ref(
                    &mut e,
                    &at,
                    br.group.as_deref(),
                    br.kind.as_deref(),
                    br.port,
                    br.weight,
                );
            }
        }
    }
    for (key, route) in &store.grpc_routes {
        grpc_route(route, format!("GRPCRoute {key}"), &mut errors);
    }
    errors
}

/// The GRPCRoute CRD's rules: hostnames, method matches (one of service and method, their
/// characters for `Exact`), header names, unique rule names, filters not repeated, Service
/// references with a port, weights.
fn grpc_route(
    route: &Object<gateway_api::experimental::grpcroutes::GrpcRoute>,
    object: String,
    errors: &mut Vec<ManifestError>,
) {
    use gateway_api::experimental::grpcroutes::{
        GrpcRouteRulesFiltersType as F, GrpcRouteRulesMatchesMethodType as M,
    };
    let mut e = Errs::new(route, object, errors);
    let spec = &route.obj.spec;
    for (i, h) in spec.hostnames.iter().flatten().enumerate() {
        if !is_hostname(h, true) {
            e.push(
                &format!(".spec.hostnames[{i}]"),
                format!("{h:?} is not a valid hostname"),
            );
        }
    }
    let rules = spec.rules.as_deref().unwrap_or_default();
    for (r, rule) in rules.iter().enumerate() {
        if let Some(name) = &rule.name {
            if rules[..r].iter().any(|o| o.name.as_ref() == Some(name)) {
                e.push(
                    &format!(".spec.rules[{r}].name"),
                    format!("rule name {name:?} must be unique within the route"),
                );
            }
        }
        for (m, mat) in rule.matches.iter().flatten().enumerate() {
            let at = |s: &str| format!(".spec.rules[{r}].matches[{m}].{s}");
            if let Some(method) = &mat.method {
                let service = method.service.as_deref().filter(|s| !s.is_empty());
                let name = method.method.as_deref().filter(|s| !s.is_empty());
                let exact = method.r#type.as_ref().is_none_or(|t| *t == M::Exact);
                // The CRD's rule checks that the fields are present; for Exact, empty ones
                // then fail the character rules, for RegularExpression they match anything.
                if service.is_none()
                    && name.is_none()
                    && (exact || method.service.is_none() && method.method.is_none())
                {
                    e.push(
                        &at("method"),
                        "one or both of 'service' or 'method' must be specified",
                    );
                }
                if method.r#type.as_ref().is_none_or(|t| *t == M::Exact) {
                    if let Some(s) = service.filter(|s| !is_grpc_service(s)) {
                        e.push(
                            &at("method.service"),
                            format!("{s:?} is not a gRPC service name (dot-separated identifiers, optionally with a leading dot)"),
                        );
                    }
                    if let Some(n) = name.filter(|n| !is_identifier(n)) {
                        e.push(
                            &at("method.method"),
                            format!("{n:?} is not a gRPC method name (letters, digits and '_', not starting with a digit)"),
                        );
                    }
                }
            }
            for (h, hm) in mat.headers.iter().flatten().enumerate() {
                if http::HeaderName::from_bytes(hm.name.as_bytes()).is_err() {
                    e.push(
                        &at(&format!("headers[{h}].name")),
                        format!("{:?} is not a valid header name", hm.name),
                    );
                }
            }
        }
        let filters = rule.filters.as_deref().unwrap_or_default();
        for t in [F::RequestHeaderModifier, F::ResponseHeaderModifier] {
            if filters.iter().filter(|f| f.r#type == t).count() > 1 {
                e.push(
                    &format!(".spec.rules[{r}].filters"),
                    format!("the {t:?} filter cannot be repeated"),
                );
            }
        }
        for (b, br) in rule.backend_refs.iter().flatten().enumerate() {
            let at = format!(".spec.rules[{r}].backendRefs[{b}]");
            backend_ref(
                &mut e,
                &at,
                br.group.as_deref(),
                br.kind.as_deref(),
                br.port,
                br.weight,
            );
        }
    }
}

/// The CRDs' rules of a route's backendRef: a Service needs a port, ports are 1-65535, weights
/// 0-1000000 (HTTPRoute and GRPCRoute share them).
fn backend_ref(
    e: &mut Errs<'_>,
    at: &str,
    group: Option<&str>,
    kind: Option<&str>,
    port: Option<i32>,
    weight: Option<i32>,
) {
    if group.unwrap_or("").is_empty() && kind.unwrap_or("Service") == "Service" && port.is_none() {
        e.push(
            &format!("{at}.port"),
            "port is required when the backend is a Service",
        );
    }
    if let Some(w) = weight.filter(|w| !(0..=1_000_000).contains(w)) {
        e.push(
            &format!("{at}.weight"),
            format!("weight {w} is not in 0-1000000"),
        );
    }
    if let Some(p) = port.filter(|p| !(1..=65535).contains(p)) {
        e.push(&format!("{at}.port"), format!("port {p} is not in 1-65535"));
    }
}

/// `^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$`: a fully qualified protobuf service name.
fn is_grpc_service(s: &str) -> bool {
    let s = s.strip_prefix('.').unwrap_or(s);
    s.split('.').all(is_identifier)
}

/// `^[A-Za-z_][A-Za-z_0-9]*$`.
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

struct Errs<'a> {
    source: crate::resources::Source,
    object: String,
    out: &'a mut Vec<ManifestError>,
}

impl<'a> Errs<'a> {
    fn new<T>(obj: &Object<T>, object: String, out: &'a mut Vec<ManifestError>) -> Self {
        Errs {
            source: obj.source.clone(),
            object,
            out,
        }
    }
    fn push(&mut self, field: &str, message: impl Into<String>) {
        self.out.push(ManifestError {
            origin: self.source.clone(),
            object: self.object.clone(),
            field: field.to_string(),
            message: message.into(),
        });
    }
}

/// A lowercase RFC 1123 label, as listener names and section names must be.
fn is_section_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A label or annotation key: `[prefix/]name`, the prefix a DNS subdomain shorter than 253
/// characters.
fn is_qualified_key(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(|p| p.len() < 253 && is_section_name(p))
        && name.len() <= 63
        && is_label_name(name)
}

/// The name part of a label key, or a non-empty label value.
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A hostname as the Gateway API accepts it: lowercase DNS labels, optionally with a leading
/// `*.` wildcard label; no IP addresses, no port.
pub fn is_hostname(s: &str, allow_wildcard: bool) -> bool {
    let rest = match s.strip_prefix("*.") {
        Some(r) if allow_wildcard => r,
        Some(_) => return false,
        None => s,
    };
    if rest.parse::<std::net::IpAddr>().is_ok() {
        return false;
    }
    is_section_name(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert!(is_hostname("example.com", false));
        assert!(is_hostname("*.example.com", true));
        assert!(!is_hostname("*.example.com", false));
        assert!(!is_hostname("Example.com", true));
        assert!(!is_hostname("10.0.0.1", true));
        assert!(!is_hostname("a.*.com", true));
        assert!(!is_hostname("", true));
    }

    #[test]
    fn label_keys() {
        assert!(is_qualified_key("team"));
        assert!(is_qualified_key("example.com/owner"));
        assert!(is_qualified_key("a"));
        assert!(!is_qualified_key("Example.com/owner"));
        assert!(!is_qualified_key("a/b/c"));
        assert!(!is_qualified_key("-team"));
        assert!(!is_qualified_key(&"x".repeat(64)));
        assert!(!is_qualified_key("example.com/"));
    }
}
