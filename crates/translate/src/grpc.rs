//! GRPCRoute as the HTTPRoute it means: a gRPC call is an HTTP/2 POST to `/<service>/<method>`,
//! so each rule's method match becomes a path match and everything else (parentRefs,
//! hostnames, header matches, the filters GRPCRoute allows, backendRefs with their filters and
//! weights, rule names) carries over field for field. Translation can then attach, resolve,
//! order and serve GRPCRoutes with the HTTPRoute machinery, and report their status under
//! their own kind.
//!
//! Method matches (GEP-1016):
//! - `Exact` with service and method: path `Exact` `/<service>/<method>`;
//! - `Exact` with the service only: path `PathPrefix` `/<service>` (the service's methods);
//! - `Exact` with the method only: path `RegularExpression` `/[^/]+/<method>`;
//! - `RegularExpression`: path `RegularExpression` `/(<service>)/(<method>)`, a missing or empty
//!   side being `[^/]+` (the API server accepts both sides empty: every call);
//! - no method: every path (`PathPrefix` `/`).
//!
//! A service may be written with a leading dot (`.pkg.Svc`, the CRD allows it); the path a call
//! carries never has one.

use gateway_api::experimental::grpcroutes::GrpcRoute;
use gateway_api::experimental::httproutes::HttpRoute;
use serde_json::{json, Value};

/// The HTTPRoute a GRPCRoute means, or why it has none (a match that names neither service
/// nor method, which the CRD's validation refuses).
pub fn as_http_route(route: &GrpcRoute) -> Result<HttpRoute, String> {
    let mut v = serde_json::to_value(route).map_err(|e| e.to_string())?;
    v["apiVersion"] = json!("gateway.networking.k8s.io/v1");
    v["kind"] = json!("HTTPRoute");
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if let Some(rules) = v["spec"]["rules"].as_array_mut() {
        for (i, rule) in rules.iter_mut().enumerate() {
            let Some(matches) = rule.get_mut("matches").and_then(Value::as_array_mut) else {
                continue;
            };
            for (j, m) in matches.iter_mut().enumerate() {
                let path = match m.get("method") {
                    None | Some(Value::Null) => json!({"type": "PathPrefix", "value": "/"}),
                    Some(method) => path_match(method)
                        .map_err(|e| format!("spec.rules[{i}].matches[{j}].method: {e}"))?,
                };
                if let Some(o) = m.as_object_mut() {
                    o.remove("method");
                    o.insert("path".into(), path);
                }
            }
        }
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

fn path_match(method: &Value) -> Result<Value, &'static str> {
    let regex = method["type"].as_str() == Some("RegularExpression");
    let service = method["service"]
        .as_str()
        .map(|s| {
            if regex {
                s
            } else {
                s.strip_prefix('.').unwrap_or(s)
            }
        })
        .filter(|s| !s.is_empty());
    let name = method["method"].as_str().filter(|s| !s.is_empty());
    Ok(match (regex, service, name) {
        (false, None, None) => return Err("names neither a service nor a method"),
        (false, Some(s), Some(m)) => json!({"type": "Exact", "value": format!("/{s}/{m}")}),
        (false, Some(s), None) => json!({"type": "PathPrefix", "value": format!("/{s}")}),
        (false, None, Some(m)) => {
            json!({"type": "RegularExpression", "value": format!("/[^/]+/{}", escape(m))})
        }
        (true, s, m) => json!({
            "type": "RegularExpression",
            "value": format!("/({})/({})", s.unwrap_or("[^/]+"), m.unwrap_or("[^/]+")),
        }),
    })
}

/// `s` with the regular expression metacharacters escaped (service names carry dots).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc_route(rules: &str) -> GrpcRoute {
        serde_yaml::from_str(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\n\
             metadata: {{name: echo, namespace: apps}}\n\
             spec:\n  parentRefs: [{{name: gw, sectionName: grpc}}]\n  hostnames: [grpc.example.com]\n\
             \x20 rules:\n{rules}"
        ))
        .expect("GRPCRoute yaml")
    }

    fn paths(route: &HttpRoute) -> Vec<(String, String)> {
        let v = serde_json::to_value(route).unwrap();
        v["spec"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["matches"].as_array().cloned().unwrap_or_default())
            .map(|m| {
                (
                    m["path"]["type"].as_str().unwrap().to_string(),
                    m["path"]["value"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn method_matches_become_path_matches() {
        let svc = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";
        let route = grpc_route(&format!(
            "  - matches:\n\
             \x20   - method: {{service: {svc}, method: Echo}}\n\
             \x20   - method: {{service: {svc}}}\n\
             \x20   - method: {{method: EchoTwo}}\n\
             \x20   - method: {{type: RegularExpression, service: 'grpc\\.echo\\..*', method: 'Echo.*'}}\n\
             \x20   - method: {{type: RegularExpression, method: 'Echo.*'}}\n\
             \x20   - headers: [{{name: version, value: two}}]\n"
        ));
        let http = as_http_route(&route).unwrap();
        assert_eq!(
            paths(&http),
            [
                ("Exact".into(), format!("/{svc}/Echo")),
                ("PathPrefix".into(), format!("/{svc}")),
                ("RegularExpression".into(), "/[^/]+/EchoTwo".into()),
                (
                    "RegularExpression".into(),
                    "/(grpc\\.echo\\..*)/(Echo.*)".into()
                ),
                ("RegularExpression".into(), "/([^/]+)/(Echo.*)".into()),
                ("PathPrefix".into(), "/".into()),
            ]
        );
        let v = serde_json::to_value(&http).unwrap();
        assert_eq!(v["kind"], "HTTPRoute");
        assert_eq!(v["metadata"]["name"], "echo");
        assert_eq!(v["spec"]["hostnames"][0], "grpc.example.com");
        assert_eq!(v["spec"]["parentRefs"][0]["sectionName"], "grpc");
        let headers = &v["spec"]["rules"][0]["matches"][5]["headers"][0];
        assert_eq!(
            (&headers["name"], &headers["value"]),
            (&json!("version"), &json!("two"))
        );
    }

    #[test]
    fn filters_backends_weights_and_names_carry_over() {
        let route = grpc_route(
            "  - name: main\n\
             \x20   filters:\n\
             \x20   - type: RequestHeaderModifier\n\
             \x20     requestHeaderModifier: {set: [{name: x-a, value: b}]}\n\
             \x20   backendRefs:\n\
             \x20   - {name: one, port: 9000, weight: 3}\n\
             \x20   - name: two\n\
             \x20     port: 9000\n\
             \x20     weight: 1\n\
             \x20     filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {remove: [x-b]}}]\n",
        );
        let v = serde_json::to_value(as_http_route(&route).unwrap()).unwrap();
        let rule = &v["spec"]["rules"][0];
        assert_eq!(rule["name"], "main");
        assert_eq!(
            rule["filters"][0]["requestHeaderModifier"]["set"][0]["name"],
            "x-a"
        );
        assert_eq!(rule["backendRefs"][0]["weight"], 3);
        assert_eq!(
            rule["backendRefs"][1]["filters"][0]["responseHeaderModifier"]["remove"][0],
            "x-b"
        );
        // No matches: every call.
        assert!(rule.get("matches").is_none() || rule["matches"].is_null());
    }

    #[test]
    fn a_method_match_needs_a_service_or_a_method() {
        let route = grpc_route("  - matches: [{method: {type: Exact}}]\n");
        let err = as_http_route(&route).unwrap_err();
        assert!(err.contains("spec.rules[0].matches[0].method"), "{err}");
        // A RegularExpression match with both sides empty (the API server accepts it) matches
        // every call.
        let route = grpc_route(
            "  - matches: [{method: {type: RegularExpression, service: '', method: ''}}]\n",
        );
        assert_eq!(
            paths(&as_http_route(&route).unwrap()),
            [("RegularExpression".into(), "/([^/]+)/([^/]+)".into())]
        );
    }
}
