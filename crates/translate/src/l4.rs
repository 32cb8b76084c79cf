//! TLSRoutes, TCPRoutes and UDPRoutes in the shape translation attaches routes in: the HTTPRoute
//! of one catch-all match per rule. parentRefs, hostnames (TLSRoute's), and each rule's name and
//! backendRefs with their weights carry over field for field (the kinds share those schemas),
//! so attachment (sectionName and port, allowedRoutes, hostname intersection), ReferenceGrants,
//! backend resolution and weights are the HTTPRoute's, and status is written under the route's
//! own kind. The engine serves the result at layer 4: a connection takes the first route its
//! SNI (TLS) or listener (TCP, UDP) selects, and one backend of it by weight.

use gateway_api::experimental::httproutes::HttpRoute;
use serde::Serialize;
use serde_json::json;

/// The HTTPRoute an L4 route means for attachment, or why it has none.
pub fn as_http_route<T: Serialize>(route: &T) -> Result<HttpRoute, String> {
    let mut v = serde_json::to_value(route).map_err(|e| e.to_string())?;
    v["apiVersion"] = json!("gateway.networking.k8s.io/v1");
    v["kind"] = json!("HTTPRoute");
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if let Some(rules) = v["spec"]["rules"].as_array_mut() {
        for rule in rules.iter_mut() {
            if let Some(o) = rule.as_object_mut() {
                o.retain(|k, _| k == "name" || k == "backendRefs");
            }
        }
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_api::experimental::tcproutes::TcpRoute;
    use gateway_api::experimental::tlsroutes::TlsRoute;

    #[test]
    fn parents_hostnames_and_weighted_backends_carry_over() {
        let tls: TlsRoute = serde_yaml::from_str(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\n\
             metadata: {name: r, namespace: ns}\n\
             spec:\n  parentRefs: [{name: gw, sectionName: tls, port: 443}]\n\
             \x20 hostnames: [abc.example.com]\n\
             \x20 rules:\n  - name: main\n    backendRefs: [{name: a, port: 443, weight: 3}, {name: b, port: 443}]\n",
        )
        .unwrap();
        let v = serde_json::to_value(as_http_route(&tls).unwrap()).unwrap();
        assert_eq!(v["kind"], "HTTPRoute");
        assert_eq!(v["spec"]["hostnames"][0], "abc.example.com");
        assert_eq!(v["spec"]["parentRefs"][0]["sectionName"], "tls");
        assert_eq!(v["spec"]["parentRefs"][0]["port"], 443);
        let rule = &v["spec"]["rules"][0];
        assert_eq!(rule["name"], "main");
        assert_eq!(rule["backendRefs"][0]["weight"], 3);
        assert_eq!(rule["backendRefs"][1]["name"], "b");
        assert!(rule["matches"].is_null());

        let tcp: TcpRoute = serde_yaml::from_str(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\n\
             metadata: {name: r, namespace: ns}\n\
             spec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: a, port: 9000}]\n",
        )
        .unwrap();
        let v = serde_json::to_value(as_http_route(&tcp).unwrap()).unwrap();
        assert!(v["spec"]["hostnames"].is_null());
        assert_eq!(v["spec"]["rules"][0]["backendRefs"][0]["port"], 9000);
    }
}
