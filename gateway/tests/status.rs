//! Status conditions and reasons as a Gateway API controller writes them, and the errors for
//! manifests a Kubernetes API server would refuse.
#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

use sluice_testing::*;

const BACKEND: &str = "apiVersion: v1
kind: Service
metadata: {name: app, namespace: default}
spec: {ports: [{port: 80}]}
";

fn route(ns: &str, name: &str, parent: &str, extra: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {ns}}}
spec:
  parentRefs: [{parent}]
{extra}"
    )
}

fn parent_conditions(all: &serde_json::Value, ns: &str, name: &str) -> serde_json::Value {
    find_status(all, "HTTPRoute", Some(ns), name)["status"]["parents"][0]["conditions"].clone()
}

/// Route reasons: NoMatchingParent, NotAllowedByListeners, NoMatchingListenerHostname,
/// RefNotPermitted, InvalidKind, BackendNotFound, UnsupportedValue; and a ReferenceGrant that
/// makes a cross-namespace backend valid.
#[test]
fn route_conditions() {
    let gateway = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: http, protocol: HTTP, port: 8080, hostname: app.example.com}
";
    let other_ns_backend = "apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: granted, namespace: shared}
spec: {ports: [{port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow-default, namespace: shared}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: '', kind: Service}]
";
    let rules = |backend: &str| format!("  rules: [{{backendRefs: [{backend}]}}]\n");
    let routes = [
        route("default", "ok", "{name: gw}", &rules("{name: app, port: 80}")),
        route("default", "no-section", "{name: gw, sectionName: nope}", &rules("{name: app, port: 80}")),
        route("default", "no-port", "{name: gw, port: 9999}", &rules("{name: app, port: 80}")),
        route("other", "other-ns", "{name: gw, namespace: default}", &rules("{name: app, port: 80}")),
        route("default", "bad-host", "{name: gw}", &format!("  hostnames: [other.example.com]\n{}", rules("{name: app, port: 80}"))),
        route("default", "no-grant", "{name: gw}", &rules("{name: db, namespace: data, port: 80}")),
        route("default", "granted", "{name: gw}", &rules("{name: granted, namespace: shared, port: 80}")),
        route("default", "bad-kind", "{name: gw}", &rules("{name: x, group: example.com, kind: Bucket}")),
        route("default", "missing", "{name: gw}", &rules("{name: nothing, port: 80}")),
        route("default", "bad-regex", "{name: gw}", "  rules: [{matches: [{path: {type: RegularExpression, value: '/(['}}], backendRefs: [{name: app, port: 80}]}]\n"),
    ];
    let all = status_of_files(&[
        ("gw.yaml", format!("{GATEWAY_CLASS}---\n{gateway}")),
        ("backend.yaml", format!("{BACKEND}---\n{other_ns_backend}")),
        ("routes.yaml", routes.join("---\n")),
    ]);
    let check = |name: &str, ns: &str, accepted: (&str, &str), resolved: (&str, &str)| {
        let c = parent_conditions(&all, ns, name);
        assert_eq!(
            condition(&c, "Accepted"),
            (accepted.0.into(), accepted.1.into()),
            "{name} Accepted"
        );
        assert_eq!(
            condition(&c, "ResolvedRefs"),
            (resolved.0.into(), resolved.1.into()),
            "{name} ResolvedRefs"
        );
    };
    let ok = ("True", "ResolvedRefs");
    check("ok", "default", ("True", "Accepted"), ok);
    check("no-section", "default", ("False", "NoMatchingParent"), ok);
    check("no-port", "default", ("False", "NoMatchingParent"), ok);
    // Its backend would be `app` in its own namespace, which does not exist.
    check(
        "other-ns",
        "other",
        ("False", "NotAllowedByListeners"),
        ("False", "BackendNotFound"),
    );
    check(
        "bad-host",
        "default",
        ("False", "NoMatchingListenerHostname"),
        ok,
    );
    check(
        "no-grant",
        "default",
        ("True", "Accepted"),
        ("False", "RefNotPermitted"),
    );
    check("granted", "default", ("True", "Accepted"), ok);
    check(
        "bad-kind",
        "default",
        ("True", "Accepted"),
        ("False", "InvalidKind"),
    );
    check(
        "missing",
        "default",
        ("True", "Accepted"),
        ("False", "BackendNotFound"),
    );
    check("bad-regex", "default", ("False", "UnsupportedValue"), ok);

    // The parentRef echoes what the route asked for, with defaults filled in, and names us.
    let st = find_status(&all, "HTTPRoute", Some("default"), "no-section");
    let p = &st["status"]["parents"][0];
    assert_eq!(p["controllerName"], "sluice.dev/gateway-controller");
    assert_eq!(p["parentRef"]["sectionName"], "nope");
    assert_eq!(p["parentRef"]["namespace"], "default");
    assert_eq!(p["parentRef"]["group"], "gateway.networking.k8s.io");

    // attachedRoutes counts the routes accepted on the listener (unresolved backends do not
    // matter): ok, no-grant, granted, bad-kind, missing. Not bad-host (no hostname
    // intersects) nor bad-regex (not accepted).
    let gw = find_status(&all, "Gateway", Some("default"), "gw");
    assert_eq!(listener(&gw, "http")["attachedRoutes"], 5);
}

/// Listener reasons: UnsupportedProtocol, ProtocolConflict, HostnameConflict,
/// InvalidRouteKinds, RefNotPermitted for a cross-namespace certificate, and the namespace
/// selector of allowedRoutes.
#[test]
fn listener_conditions() {
    let ca = TestCa::new();
    let gateway = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default, generation: 3}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: ok, protocol: HTTP, port: 8080}
  - {name: sctp, protocol: SCTP, port: 8081}
  - {name: h1, protocol: HTTP, port: 8082, hostname: a.example.com}
  - {name: h2, protocol: HTTP, port: 8082, hostname: a.example.com}
  - {name: p1, protocol: HTTP, port: 8083}
  - name: p2
    protocol: HTTPS
    port: 8083
    tls: {certificateRefs: [{name: cert}]}
  - name: kinds
    protocol: HTTP
    port: 8084
    allowedRoutes: {kinds: [{kind: TCPRoute}]}
  - name: cross-cert
    protocol: HTTPS
    port: 8443
    tls: {certificateRefs: [{name: cert, namespace: certs}]}
  - name: selected
    protocol: HTTP
    port: 8085
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {matchLabels: {team: blue}}
";
    let namespaces = "apiVersion: v1
kind: Namespace
metadata: {name: blue-ns, labels: {team: blue}}
---
apiVersion: v1
kind: Namespace
metadata: {name: red-ns, labels: {team: red}}
";
    let all = status_of_files(&[
        ("gw.yaml", format!("{GATEWAY_CLASS}---\n{gateway}")),
        ("ns.yaml", namespaces.to_string()),
        (
            "cert.yaml",
            format!(
                "{}---\n{}",
                ca.secret("default", "cert", &["x.example.com"]),
                ca.secret("certs", "cert", &["x.example.com"])
            ),
        ),
        (
            "routes.yaml",
            format!(
                "{}---\n{}",
                route(
                    "blue-ns",
                    "blue",
                    "{name: gw, namespace: default, sectionName: selected}",
                    ""
                ),
                route(
                    "red-ns",
                    "red",
                    "{name: gw, namespace: default, sectionName: selected}",
                    ""
                )
            ),
        ),
    ]);
    let gw = find_status(&all, "Gateway", Some("default"), "gw");
    let cond = |l: &str, t: &str| condition(&listener(&gw, l)["conditions"], t);
    assert_eq!(
        cond("ok", "Programmed"),
        ("True".into(), "Programmed".into())
    );
    assert_eq!(
        cond("sctp", "Accepted"),
        ("False".into(), "UnsupportedProtocol".into())
    );
    assert_eq!(
        listener(&gw, "sctp")["supportedKinds"],
        serde_json::json!([])
    );
    assert_eq!(
        cond("h1", "Conflicted"),
        ("True".into(), "HostnameConflict".into())
    );
    assert_eq!(
        cond("h2", "Conflicted"),
        ("True".into(), "HostnameConflict".into())
    );
    assert_eq!(
        cond("p1", "Conflicted"),
        ("True".into(), "ProtocolConflict".into())
    );
    assert_eq!(
        cond("p2", "Conflicted"),
        ("True".into(), "ProtocolConflict".into())
    );
    assert_eq!(cond("p2", "Programmed").0, "False");
    assert_eq!(
        cond("kinds", "ResolvedRefs"),
        ("False".into(), "InvalidRouteKinds".into())
    );
    assert_eq!(
        cond("cross-cert", "ResolvedRefs"),
        ("False".into(), "RefNotPermitted".into())
    );
    assert_eq!(
        cond("ok", "Conflicted"),
        ("False".into(), "NoConflicts".into())
    );
    assert_eq!(
        condition(&gw["status"]["conditions"], "Accepted"),
        ("True".into(), "ListenersNotValid".into())
    );
    assert_eq!(
        condition(&gw["status"]["conditions"], "Programmed"),
        ("True".into(), "Programmed".into())
    );
    // observedGeneration follows metadata.generation.
    assert_eq!(gw["status"]["conditions"][0]["observedGeneration"], 3);
    // Namespace selector.
    assert_eq!(
        condition(&parent_conditions(&all, "blue-ns", "blue"), "Accepted").0,
        "True"
    );
    assert_eq!(
        condition(&parent_conditions(&all, "red-ns", "red"), "Accepted"),
        ("False".into(), "NotAllowedByListeners".into())
    );
    assert_eq!(listener(&gw, "selected")["attachedRoutes"], 1);
}

/// Only our GatewayClass is accepted; Gateways of other classes get no status from us.
#[test]
fn other_controllers_are_left_alone() {
    let other = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: theirs}
spec: {controllerName: example.com/other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: theirs, namespace: default}
spec:
  gatewayClassName: theirs
  listeners: [{name: http, protocol: HTTP, port: 80}]
";
    let all = status_of_files(&[("gw.yaml", format!("{GATEWAY_CLASS}---\n{other}"))]);
    let kinds: Vec<String> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(kinds, vec!["GatewayClass sluice"]);
    let gc = find_status(&all, "GatewayClass", None, "sluice");
    assert_eq!(
        condition(&gc["status"]["conditions"], "Accepted"),
        ("True".into(), "Accepted".into())
    );
}

/// Addresses: spec.addresses, then the pool, then --bind. Two Gateways on one address and port:
/// the newer one is not programmed.
#[test]
fn addresses_and_address_conflicts() {
    let gw = |name: &str, addr: Option<&str>, ts: &str| {
        let addresses = addr
            .map(|a| format!("  addresses: [{{type: IPAddress, value: '{a}'}}]\n"))
            .unwrap_or_default();
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: default, creationTimestamp: '{ts}'}}
spec:
  gatewayClassName: sluice
{addresses}  listeners: [{{name: http, protocol: HTTP, port: 8080}}]
"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let text = [
        GATEWAY_CLASS.to_string(),
        gw("older", Some("127.0.50.1"), "2026-01-01T00:00:00Z"),
        gw("newer", Some("127.0.50.1"), "2026-02-01T00:00:00Z"),
        gw("pooled-a", None, "2026-03-01T00:00:00Z"),
        gw("pooled-b", None, "2026-03-02T00:00:00Z"),
    ]
    .join("---\n");
    std::fs::write(dir.path().join("gw.yaml"), text).unwrap();
    let all = gateway_json(
        &["status", "-o", "json", "--address-pool", "127.0.50.0/29"],
        dir.path(),
    );
    let addr = |n: &str| {
        find_status(&all, "Gateway", Some("default"), n)["status"]["addresses"][0]["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(addr("older"), "127.0.50.1");
    // The pool skips the address requested by another Gateway.
    assert_eq!(addr("pooled-a"), "127.0.50.2");
    assert_eq!(addr("pooled-b"), "127.0.50.3");
    let older = find_status(&all, "Gateway", Some("default"), "older");
    assert_eq!(
        condition(&older["status"]["conditions"], "Programmed").0,
        "True"
    );
    let newer = find_status(&all, "Gateway", Some("default"), "newer");
    assert_eq!(
        condition(&newer["status"]["conditions"], "Programmed"),
        ("False".into(), "AddressNotUsable".into())
    );
    assert_eq!(
        condition(&listener(&newer, "http")["conditions"], "Accepted"),
        ("False".into(), "PortUnavailable".into())
    );
}

/// Manifests an API server would refuse: the error names the file, the object and the field,
/// and the command exits non-zero.
#[test]
fn invalid_manifests_name_file_object_and_field() {
    let cases = [
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  rules:\n  - matches: [{path: {type: Fuzzy, value: /}}]\n",
            "HTTPRoute default/r: .spec.rules[0].matches[0].path.type:",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  rules:\n  - backendRefs: [{name: app}]\n",
            "HTTPRoute default/r: .spec.rules[0].backendRefs[0].port: port is required",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  gatewayClassName: sluice\n  listeners: [{name: a, protocol: HTTP, port: 70000}]\n",
            "Gateway default/g: .spec.listeners[0].port: port 70000",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  gatewayClassName: sluice\n  listners: []\n",
            "Gateway default/g: .spec: missing field `listeners`",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  rules:\n  - backendRefs: [{name: a, port: 80}, {name: b, port: 80, weigth: 3}]\n",
            "HTTPRoute default/r: .spec.rules[0].backendRefs[1].weigth: unknown field \"weigth\" (did you mean \"weight\"?); expected one of: filters, group, kind, name, namespace, port, weight",
        ),
        // The file, then the parser's message with its line and column: no object or field
        // placeholders.
        ("kind: [broken\n", "bad.yaml (document 1): invalid YAML: "),
        ("a: b\nkind: [broken\n", "at line 3 column 1"),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  rules:\n  - matches: [{path: {value: no-slash}}]\n",
            ".spec.rules[0].matches[0].path.value: \"no-slash\" must be an absolute path",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  gatewayClassName: sluice\n  infrastructure: {labels: {team: \"-bad-\"}}\n  listeners: [{name: a, protocol: HTTP, port: 80}]\n",
            "Gateway default/g: .spec.infrastructure.labels[\"team\"]: \"-bad-\" is not a label value",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  gatewayClassName: sluice\n  infrastructure: {annotations: {\"Example.com/x\": y}}\n  listeners: [{name: a, protocol: HTTP, port: 80}]\n",
            "Gateway default/g: .spec.infrastructure.annotations[\"Example.com/x\"]: keys are",
        ),
    ];
    for (text, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.yaml"), text).unwrap();
        let out = std::process::Command::new(gateway_bin())
            .args(["status", "--manifests"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "accepted invalid manifest:\n{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bad.yaml (document 1)"), "no file in: {err}");
        assert!(err.contains(want), "want {want:?} in: {err}");
    }
}

/// `gateway status` prints readable text by default.
#[test]
fn status_text_output() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gw.yaml"),
        format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
    )
    .unwrap();
    let out = std::process::Command::new(gateway_bin())
        .args(["status", "--manifests"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Gateway default/gw [127.0.0.1]"), "{text}");
    assert!(
        text.contains("listener http (attachedRoutes 0): Accepted=True"),
        "{text}"
    );
    let yaml = std::process::Command::new(gateway_bin())
        .args(["status", "-o", "yaml", "--manifests"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&yaml.stdout);
    assert!(
        text.contains("kind: Gateway") && text.contains("type: Programmed"),
        "{text}"
    );
}

/// `gateway render` prints the ServiceAccount, Service and Deployment of each accepted Gateway,
/// carrying `spec.infrastructure` labels and annotations; a refused Gateway gets none.
#[test]
fn render_prints_the_resources_of_accepted_gateways() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gw.yaml"),
        format!(
            "{GATEWAY_CLASS}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  gatewayClassName: sluice
  infrastructure:
    labels: {{team: payments}}
    annotations: {{example.com/owner: ops}}
  listeners:
  - {{name: http, port: 80, protocol: HTTP}}
  - {{name: alt, port: 8080, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: refused, namespace: default}}
spec:
  gatewayClassName: sluice
  infrastructure: {{parametersRef: {{group: example.com, kind: Params, name: p}}}}
  listeners: [{{name: http, port: 81, protocol: HTTP}}]
"
        ),
    )
    .unwrap();
    let list = gateway_json(
        &["render", "-o", "json", "--image", "registry.example/gw:1"],
        dir.path(),
    );
    let items = list["items"].as_array().unwrap();
    let kinds: Vec<&str> = items.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "Service",
            "Deployment",
            "PodDisruptionBudget"
        ],
        "{list}"
    );
    for o in items {
        assert_eq!(o["metadata"]["name"], "edge-sluice");
        assert_eq!(o["metadata"]["labels"]["team"], "payments");
        assert_eq!(
            o["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"],
            "edge"
        );
        assert_eq!(o["metadata"]["annotations"]["example.com/owner"], "ops");
    }
    let ports: Vec<i64> = items[1]["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert_eq!(ports, [80, 8080]);
    let pod = &items[2]["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["team"], "payments");
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        "registry.example/gw:1"
    );
    assert_eq!(pod["spec"]["serviceAccountName"], "edge-sluice");
}

/// `gateway status` on a folder with a misspelled kind, a GatewayClass of another controller
/// and a Service without endpoints prints a warning for each; `--strict` makes them an error.
#[test]
fn status_warns_about_what_is_not_served_and_strict_fails() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "gw.yaml",
        &format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
    );
    write(
        "istio.yaml",
        "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: istio}
spec: {controllerName: istio.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: other, namespace: default}
spec:
  gatewayClassName: istio
  listeners: [{name: http, protocol: HTTP, port: 80}]
",
    );
    write(
        "routes.yaml",
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoutes
metadata: {name: typo, namespace: default}
spec:
  parentRefs: [{name: gw}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: app, port: 80}]}]
",
    );
    write("svc.yaml", &service("default", "app", &[]));
    write(
        "ported.yaml",
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec: {hosts: [reviews]}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {name: jwt, namespace: default}
spec: {}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: default}
spec: {parentRefs: [{name: gw}]}
",
    );

    let run = |strict: bool| {
        let mut cmd = std::process::Command::new(gateway_bin());
        cmd.arg("status").arg("--manifests").arg(dir.path());
        if strict {
            cmd.arg("--strict");
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, text) = run(false);
    assert_eq!(code, Some(0), "{text}");
    for needle in [
        "HTTPRoutes",
        "did you mean HTTPRoute",
        "routes.yaml",
        "GatewayClass istio: .spec.controllerName: names controller \"istio.io/gateway-controller\"",
        "Service default/app",
        "no ready endpoints",
        "VirtualService default/reviews",
        "SecurityPolicy default/jwt",
        "GRPCRoute default/grpc",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    let (code, text) = run(true);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--strict"), "{text}");
}

/// With no Gateway of ours at all, status says that nothing is served and why.
#[test]
fn status_says_when_no_gateway_is_ours() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gw.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: eg}
spec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: eg
  listeners: [{name: http, protocol: HTTP, port: 80}]
",
    )
    .unwrap();
    let out = std::process::Command::new(gateway_bin())
        .args(["status", "--strict", "--manifests"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("no Gateway of ours: GatewayClass eg names controller gateway.envoyproxy.io/gatewayclass-controller"),
        "{text}"
    );
}

/// A listener of a protocol we do not serve never takes a port from one we serve: SCTP beside
/// HTTP on one port is the one in conflict. TCP beside HTTP, and TLS beside HTTPS (which the
/// spec lets an implementation call compatible; the engine serves one protocol per port), both
/// served, are both in conflict.
#[test]
fn unsupported_listeners_never_displace_served_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    std::fs::write(
        dir.path().join("gw.yaml"),
        format!(
            "{GATEWAY_CLASS}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: sluice
  listeners:
  - {{name: http, protocol: HTTP, port: 8080}}
  - {{name: sctp, protocol: SCTP, port: 8080}}
  - {{name: http2, protocol: HTTP, port: 8081}}
  - {{name: tcp, protocol: TCP, port: 8081}}
  - {{name: https, protocol: HTTPS, port: 8443, hostname: a.example.com, tls: {{certificateRefs: [{{name: cert}}]}}}}
  - {{name: tls, protocol: TLS, port: 8443, hostname: b.example.com, tls: {{mode: Passthrough}}}}
---
{}",
            ca.secret("default", "cert", &["a.example.com"])
        ),
    )
    .unwrap();
    let all = status_of_dir(dir.path());
    let gw = find_status(&all, "Gateway", Some("default"), "gw");
    let http = listener(&gw, "http");
    assert_eq!(
        condition(&http["conditions"], "Programmed"),
        ("True".into(), "Programmed".into()),
        "{http}"
    );
    assert_eq!(
        condition(&http["conditions"], "Conflicted").0,
        "False",
        "{http}"
    );
    let udp = listener(&gw, "sctp");
    assert_eq!(
        condition(&udp["conditions"], "Conflicted"),
        ("True".into(), "ProtocolConflict".into())
    );
    assert_eq!(
        condition(&udp["conditions"], "Accepted"),
        ("False".into(), "ProtocolConflict".into())
    );
    for both in ["http2", "tcp", "https", "tls"] {
        let l = listener(&gw, both);
        assert_eq!(
            condition(&l["conditions"], "Conflicted"),
            ("True".into(), "ProtocolConflict".into()),
            "{both}: {l}"
        );
    }
    assert_eq!(
        condition(&gw["status"]["conditions"], "Accepted"),
        ("True".into(), "ListenersNotValid".into())
    );
}
