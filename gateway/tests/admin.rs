//! The admin listener and the access log.
#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

use sluice_testing::*;

#[tokio::test(flavor = "multi_thread")]
async fn metrics_config_status_and_access_log() {
    let app = echo("app").await;
    let route_yaml = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /app}}]
    backendRefs: [{name: app, port: 80}]
";
    let gw = Gateway::start(&[
        (
            "gw.yaml",
            format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
        ),
        ("route.yaml", route_yaml.to_string()),
        ("app.yaml", service("default", "app", &[app.addr])),
    ])
    .await;
    let c = client_for(gw.addr(8080), &[]);
    for _ in 0..3 {
        assert_eq!(get_json(&c, &gw.url(8080, "/app/x")).await.0, 200);
    }
    assert_eq!(get_json(&c, &gw.url(8080, "/nothing")).await.0, 404);

    let metrics = gw
        .metrics_with(&[
            r#"sluice_http_requests_total{backend="default/app:80",code="200",gateway="default/gw",listener="http",route="default/app"} 3"#.into(),
            r#"code="404""#.into(),
        ])
        .await;
    assert!(
        metrics.contains("sluice_http_request_duration_seconds_bucket"),
        "{metrics}"
    );

    let config = gw.admin_json("/config").await;
    let bind = &config["binds"][0];
    assert_eq!(bind["address"], format!("{}:8080", gw.ip));
    let route = &bind["listeners"][0]["virtualHosts"][0]["routes"][0];
    assert_eq!(route["route"], "default/app");
    assert_eq!(route["match"]["path"]["value"], "/app");
    assert_eq!(route["backends"][0]["endpoints"][0], app.addr.to_string());

    let status = gw.admin_json("/status").await;
    for obj in status.as_array().unwrap() {
        assert!(
            obj["apiVersion"].is_string()
                && obj["kind"].is_string()
                && obj["metadata"]["name"].is_string()
        );
    }
    let gwst = find_status(&status, "Gateway", Some("default"), "gw");
    assert_eq!(
        condition(&gwst["status"]["conditions"], "Programmed").0,
        "True"
    );
    assert_eq!(gwst["status"]["listeners"][0]["attachedRoutes"], 1);

    // One JSON line per request on stdout.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let lines = loop {
        let lines: Vec<serde_json::Value> = gw
            .stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() >= 4 || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(lines.len(), 4, "{lines:?}");
    let first = &lines[0];
    assert_eq!(first["status"], 200);
    assert_eq!(first["route"], "default/app");
    assert_eq!(first["backend"], "default/app:80");
    assert_eq!(first["upstream"], app.addr.to_string());
    assert_eq!(first["path"], "/app/x");
    assert_eq!(lines[3]["status"], 404);

    // Unknown admin paths list the endpoints.
    assert!(gw.admin_text("/nope").await.contains("/ready"));

    // After a reload that renames the route, requests on the same connection count under the
    // new name: label sets resolved for the old configuration are not reused.
    let version = gw.config_version().await;
    gw.write(
        "route.yaml",
        &route_yaml.replace("{name: app, namespace", "{name: renamed, namespace"),
    );
    gw.wait_version_above(version).await;
    for _ in 0..2 {
        assert_eq!(get_json(&c, &gw.url(8080, "/app/x")).await.0, 200);
    }
    let lines: Vec<String> = [("default/app", 3), ("default/renamed", 2)]
        .iter()
        .map(|(route, count)| {
            format!(
                r#"sluice_http_requests_total{{backend="default/app:80",code="200",gateway="default/gw",listener="http",route="{route}"}} {count}"#
            )
        })
        .collect();
    gw.metrics_with(&lines).await;
}

/// What the gateway answers itself (no route, a Service without ready endpoints, a backend
/// that refuses connections) carries a plain-text reason and no `server` header; upstream
/// failures are one structured, rate-limited log line; the access log has a numeric duration,
/// the user agent and a request id that the backend sees too; stderr has no ANSI colours when it
/// is not a terminal.
#[tokio::test(flavor = "multi_thread")]
async fn gateway_answers_request_ids_and_log_lines() {
    let app = echo("app").await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let routes = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /app}}]
    backendRefs: [{name: app, port: 80}]
  - matches: [{path: {value: /empty}}]
    backendRefs: [{name: empty, port: 80}]
  - matches: [{path: {value: /refused}}]
    backendRefs: [{name: refused, port: 80}]
";
    let gw = Gateway::start(&[
        (
            "gw.yaml",
            format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
        ),
        ("route.yaml", routes.to_string()),
        (
            "svc.yaml",
            format!(
                "{}---\n{}---\n{}",
                service("default", "app", &[app.addr]),
                service("default", "empty", &[]),
                service("default", "refused", &[closed_addr])
            ),
        ),
    ])
    .await;
    let c = client_for(gw.addr(8080), &[]);
    for (path, code, reason) in [
        ("/nothing", 404, "no route"),
        ("/empty", 503, "no ready endpoint"),
        ("/refused", 503, "upstream connect error"),
    ] {
        let r = c.get(gw.url(8080, path)).send().await.unwrap();
        assert_eq!(r.status(), code, "{path}");
        assert!(
            r.headers().get("server").is_none(),
            "{path}: {:?}",
            r.headers()
        );
        assert_eq!(
            r.headers()["content-type"],
            "text/plain; charset=utf-8",
            "{path}"
        );
        let body = r.text().await.unwrap();
        assert!(body.contains(reason), "{path}: {body:?}");
    }

    // Upstream failures: structured, rate-limited lines, not one per request.
    for _ in 0..50 {
        let r = c.get(gw.url(8080, "/refused")).send().await.unwrap();
        assert_eq!(r.status(), 503);
    }
    let line = gw.wait_stderr("upstream connect error").await;
    assert!(line.contains(r#"backend="default/refused:80""#), "{line}");
    assert!(
        line.contains(&format!(r#"upstream="{closed_addr}""#)),
        "{line}"
    );
    assert!(line.contains(r#"cause="Connection refused"#), "{line}");
    let stderr = gw.stderr.lock().unwrap().clone();
    let failures = stderr
        .iter()
        .filter(|l| l.contains("upstream connect error"))
        .count();
    assert!(
        (1..51).contains(&failures),
        "51 failed requests, {failures} log lines"
    );
    assert!(
        stderr.iter().all(|l| !l.contains('\u{1b}')),
        "ANSI escapes on a stderr that is not a terminal: {stderr:?}"
    );

    // Request ids: made when absent and passed to the backend, kept when given.
    let (_, seen, _) = get_json_with(
        &c,
        &gw.url(8080, "/app/id"),
        &[("user-agent", "sluice-test/1.0")],
    )
    .await;
    let made = seen["headers"][conformance::echo::canonical("x-request-id")][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(made.len(), 36, "{made}");
    let (_, seen, _) = get_json_with(
        &c,
        &gw.url(8080, "/app/given"),
        &[("x-request-id", "abc-123")],
    )
    .await;
    assert_eq!(
        seen["headers"][conformance::echo::canonical("x-request-id")][0],
        "abc-123"
    );

    let first = gw
        .wait_access_log("/app/id", |l| l["path"] == "/app/id")
        .await;
    let second = gw
        .wait_access_log("/app/given", |l| l["path"] == "/app/given")
        .await;
    assert_eq!(first["request_id"], made.as_str());
    assert_eq!(first["user_agent"], "sluice-test/1.0");
    assert!(
        first["duration_ms"].is_f64() || first["duration_ms"].is_u64(),
        "{first}"
    );
    assert_eq!(second["request_id"], "abc-123");
}

/// `/config` shows filters as plain JSON in the Gateway API's field names, never Rust `Debug`
/// text.
#[tokio::test(flavor = "multi_thread")]
async fn config_shows_filters_as_plain_json() {
    let app = echo("app").await;
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /old}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-env, value: prod}]
        remove: [x-debug]
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
    backendRefs: [{name: app, port: 80}]
  - matches: [{path: {value: /moved}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, statusCode: 301}
";
    let gw = Gateway::start(&[
        (
            "gw.yaml",
            format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
        ),
        ("route.yaml", route.to_string()),
        ("app.yaml", service("default", "app", &[app.addr])),
    ])
    .await;
    let config = gw.admin_json("/config").await;
    let routes = &config["binds"][0]["listeners"][0]["virtualHosts"][0]["routes"];
    let find = |p: &str| {
        routes
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["match"]["path"]["value"] == p)
            .cloned()
            .unwrap_or_else(|| panic!("no route for {p} in {routes}"))
    };
    let old = find("/old");
    assert_eq!(
        old["requestHeaders"],
        serde_json::json!({"set": [{"name": "x-env", "value": "prod"}], "add": [], "remove": ["x-debug"]})
    );
    assert_eq!(old["rewrite"]["path"]["type"], "ReplacePrefixMatch");
    assert_eq!(old["rewrite"]["path"]["replacePrefixMatch"], "/new");
    let moved = find("/moved");
    assert_eq!(moved["redirect"]["scheme"], "https");
    assert_eq!(moved["redirect"]["statusCode"], 301);
    let text = config.to_string();
    for debug in ["HeaderModifier {", "Redirect {", "Some(", "PathModifier"] {
        assert!(
            !text.contains(debug),
            "Debug text {debug:?} in /config: {text}"
        );
    }
}

/// `gateway run --help` names every admin endpoint the admin listener serves, and the
/// endpoint list an unknown admin path answers with is the same.
#[tokio::test(flavor = "multi_thread")]
async fn help_lists_every_admin_endpoint() {
    let out = std::process::Command::new(gateway_bin())
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    let gw = Gateway::start(&[(
        "gw.yaml",
        format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
    )])
    .await;
    let listed = gw.admin_text("/nope").await;
    for endpoint in [
        "/ready",
        "/status",
        "/config",
        "/infrastructure",
        "/warnings",
        "/metrics",
    ] {
        assert!(help.contains(endpoint), "--help lacks {endpoint}:\n{help}");
        assert!(
            listed.contains(endpoint),
            "/nope lacks {endpoint}: {listed}"
        );
        assert_ne!(
            gw.admin_text(endpoint).await,
            listed,
            "{endpoint} is not served"
        );
    }
}

/// With `--log-level debug`, each request is a tracing span carrying its gateway, listener,
/// route, rule and backend, and the engine's events about the request are emitted in it; a
/// reload is an `apply` span with its version.
#[tokio::test(flavor = "multi_thread")]
async fn debug_logs_carry_request_and_reload_spans() {
    let web = echo("web").await;
    let files = [
        (
            "gw.yaml",
            format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
        ),
        ("web.yaml", service("default", "web", &[web.addr])),
        (
            "route.yaml",
            backend_route("web", &["name: gw"], &[], "web"),
        ),
    ];
    let gw = Gateway::start_with(&files, &["--log-level", "debug"]).await;
    let apply = gw.wait_stderr("apply{version=1}").await;
    assert!(apply.contains("apply{version=1}"), "{apply}");
    let (code, _, _) = get_json(&reqwest::Client::new(), &gw.url(8080, "/")).await;
    assert_eq!(code, 200);
    let line = gw.wait_stderr("request done").await;
    for field in [
        "request{",
        "gateway=default/gw",
        "listener=http",
        "route=default/web",
        "rule=0",
        "backend=default/web:80",
        "status=200",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
}
