//! The admin listener and the access log.

mod common;

use common::*;

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

    let metrics = gw.admin_text("/metrics").await;
    assert!(
        metrics.contains(r#"sluice_http_requests_total{backend="default/app:80",code="200",gateway="default/gw",listener="http",route="default/app"} 3"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"code="404""#), "{metrics}");
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
    let metrics = gw.admin_text("/metrics").await;
    for (route, count) in [("default/app", 3), ("default/renamed", 2)] {
        let line = format!(
            r#"sluice_http_requests_total{{backend="default/app:80",code="200",gateway="default/gw",listener="http",route="{route}"}} {count}"#
        );
        assert!(metrics.contains(&line), "no {line} in:\n{metrics}");
    }
}
