//! Live reload: changes to the manifests folder apply without a restart and without failing a
//! request; invalid changes are reported and the last good configuration stays in force.
#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_testing::*;

fn route_to(backend: &str, header_value: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {{set: [{{name: x-config, value: '{header_value}'}}]}}
    backendRefs: [{{name: {backend}, port: 80}}]
"
    )
}

async fn start_two_backends() -> (EchoServer, EchoServer, Gateway) {
    let v1 = echo("v1").await;
    let v2 = echo("v2").await;
    let gw = Gateway::start_with(
        &[
            (
                "gw.yaml",
                format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
            ),
            ("route.yaml", route_to("v1", "0")),
            (
                "svc.yaml",
                format!(
                    "{}---\n{}",
                    service("default", "v1", &[v1.addr]),
                    service("default", "v2", &[v2.addr])
                ),
            ),
        ],
        &["--access-log", "off"],
    )
    .await;
    (v1, v2, gw)
}

/// 30 configuration changes (and two invalid ones) while 8 clients send requests: not one
/// request fails, and every change is observed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_load_fails_no_request() {
    let (_v1, _v2, gw) = start_two_backends().await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        let url = gw.url(8080, &format!("/load/{i}"));
        let client = client_for(gw.addr(8080), &[]);
        tasks.push(tokio::spawn(async move {
            // Bounded in count and time: at most 100k requests per client.
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("status {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(format!("error {e}")),
                }
            }
        }));
    }
    let probe = client_for(gw.addr(8080), &[]);
    let mut version = gw.config_version().await;
    for i in 1..=30 {
        let backend = if i % 2 == 0 { "v1" } else { "v2" };
        gw.write("route.yaml", &route_to(backend, &i.to_string()));
        version = gw.wait_version_above(version).await;
        let r = probe.get(gw.url(8080, "/probe")).send().await.unwrap();
        assert_eq!(
            r.headers()["x-config"],
            i.to_string().as_str(),
            "change {i} is served"
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["service"], backend);
        if i % 15 == 0 {
            // An invalid change in the middle of the load is rejected.
            gw.write("route.yaml", "kind: [broken\n");
            gw.wait_stderr("manifests rejected").await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "load too small to mean anything"
    );
}

/// Requests in flight when the route changes finish on the configuration they started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_flight_requests_survive_reload_and_listener_removal() {
    let (v1, _v2, gw) = start_two_backends().await;
    let client = client_for(gw.addr(8080), &[]);
    let mut inflight = Vec::new();
    for i in 0..10 {
        let c = client.clone();
        let url = gw.url(8080, &format!("/slow/{i}?delay=800ms"));
        inflight.push(tokio::spawn(async move {
            c.get(url).send().await.map(|r| r.status().as_u16())
        }));
    }
    // Wait until every slow request has reached the backend, then remove the listener's port
    // and the route's backend from the configuration.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while v1.count("/slow/") < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "slow requests did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let version = gw.config_version().await;
    let moved = http_gateway("gw").replace("port: 8080", "port: 8081");
    gw.write("gw.yaml", &format!("{GATEWAY_CLASS}---\n{moved}"));
    gw.write("route.yaml", &route_to("v2", "moved"));
    gw.wait_version_above(version).await;
    for t in inflight {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
    // The old port is closed, the new one serves.
    assert!(
        reqwest::get(gw.url(8080, "/")).await.is_err(),
        "old listener still accepts"
    );
    let (code, body, _) = get_json(&client_for(gw.addr(8081), &[]), &gw.url(8081, "/")).await;
    assert_eq!((code, body["service"].as_str()), (200, Some("v2")));
}

/// An invalid change is reported with file, object and field; the last good configuration
/// keeps serving; fixing the file applies it.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_change_keeps_last_good_configuration() {
    let (_v1, _v2, gw) = start_two_backends().await;
    let c = client_for(gw.addr(8080), &[]);
    let bad = route_to("v2", "bad").replace(
        "type: ResponseHeaderModifier",
        "type: ResponseHeaderMangler",
    );
    gw.write("route.yaml", &bad);
    let line = gw.wait_stderr("ResponseHeaderMangler").await;
    assert!(line.contains("route.yaml"), "{line}");
    assert!(line.contains("HTTPRoute default/app"), "{line}");
    assert!(line.contains(".spec.rules[0].filters[0].type"), "{line}");
    let w = gw.admin_json("/warnings").await;
    assert!(w["lastRejectedReload"]
        .as_str()
        .unwrap()
        .contains(".spec.rules[0].filters[0].type"));
    let (code, body, h) = get_json(&c, &gw.url(8080, "/")).await;
    assert_eq!((code, body["service"].as_str()), (200, Some("v1")));
    assert_eq!(h["x-config"], "0");
    let metrics = gw.admin_text("/metrics").await;
    assert!(
        metrics.contains("sluice_config_reloads_total{result=\"rejected\"} 1"),
        "{metrics}"
    );

    let version = gw.config_version().await;
    gw.write("route.yaml", &route_to("v2", "fixed"));
    gw.wait_version_above(version).await;
    let (_, body, h) = get_json(&c, &gw.url(8080, "/")).await;
    assert_eq!(
        (body["service"].as_str(), h["x-config"].to_str().unwrap()),
        (Some("v2"), "fixed")
    );
    assert!(gw.admin_json("/warnings").await["lastRejectedReload"].is_null());
}

/// Adding and deleting files applies too.
#[tokio::test(flavor = "multi_thread")]
async fn files_added_and_deleted() {
    let (_v1, v2, gw) = start_two_backends().await;
    let c = client_for(gw.addr(8080), &["extra.example"]);
    assert_eq!(
        get_json(&c, "http://extra.example:8080/extra").await.1["service"],
        "v1"
    );
    let extra = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: extra, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [extra.example]
  rules: [{backendRefs: [{name: v2, port: 80}]}]
";
    let version = gw.config_version().await;
    gw.write("extra.yaml", extra);
    let version = gw.wait_version_above(version).await;
    assert_eq!(
        get_json(&c, "http://extra.example:8080/extra").await.1["service"],
        "v2"
    );
    assert_eq!(v2.count("/extra"), 1);
    std::fs::remove_file(gw.path("extra.yaml")).unwrap();
    gw.wait_version_above(version).await;
    assert_eq!(
        get_json(&c, "http://extra.example:8080/extra").await.1["service"],
        "v1"
    );
}

/// Starting on an invalid folder fails with the same kind of message.
#[test]
fn startup_with_invalid_manifests_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gw.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: edge}\nspec:\n  gatewayClassName: sluice\n  listeners: [{name: a, protocol: HTTP, port: 0}]\n",
    )
    .unwrap();
    let ip = unique_ip();
    let out = std::process::Command::new(gateway_bin())
        .args(["run", "--manifests"])
        .arg(dir.path())
        .args(["--admin-addr", &format!("{ip}:9901")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gw.yaml (document 1): Gateway edge/g: .spec.listeners[0].port: port 0 is not in 1-65535"), "{err}");
}

/// A port taken by another process: the listener says so in status, the rest is served.
#[tokio::test(flavor = "multi_thread")]
async fn listener_port_in_use_is_reported() {
    let ip = unique_ip();
    let _squatter = std::net::TcpListener::bind((ip, 8081)).unwrap();
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: sluice
  addresses: [{{type: IPAddress, value: '{ip}'}}]
  listeners:
  - {{name: free, protocol: HTTP, port: 8080}}
  - {{name: taken, protocol: HTTP, port: 8081}}
"
    );
    let gw = Gateway::start(&[("gw.yaml", format!("{GATEWAY_CLASS}---\n{gateway}"))]).await;
    let st = gw.status_of("Gateway", Some("default"), "gw").await;
    let l = |name: &str| {
        st["status"]["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        condition(&l("taken")["conditions"], "Accepted"),
        ("False".into(), "PortUnavailable".into())
    );
    assert_eq!(
        condition(&l("taken")["conditions"], "Programmed").0,
        "False"
    );
    assert_eq!(condition(&l("free")["conditions"], "Programmed").0, "True");
    assert_eq!(
        condition(&st["status"]["conditions"], "Programmed").0,
        "True"
    );
    // No route attached: the open listener answers 404.
    assert_eq!(
        reqwest::get(format!("http://{ip}:8080/"))
            .await
            .unwrap()
            .status(),
        404
    );
}

/// SIGTERM: the gateway stops accepting, lets the request in flight finish, and exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests() {
    let (v1, _v2, mut gw) = start_two_backends().await;
    let c = client_for(gw.addr(8080), &[]);
    let url = gw.url(8080, "/slow?delay=500ms");
    let slow = tokio::spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while v1.count("/slow") < 1 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(slow.await.unwrap().unwrap(), 200);
    let code = gw.wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(0));
}

/// A keep-alive connection serves request after request; once its listener is removed, the
/// connection is closed while it waits for the next request.
#[tokio::test(flavor = "multi_thread")]
async fn idle_keepalive_connections_close_when_their_listener_goes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_v1, _v2, gw) = start_two_backends().await;
    let mut conn = tokio::net::TcpStream::connect(gw.addr(8080)).await.unwrap();
    // Reads one response with a Content-Length body.
    async fn response(conn: &mut tokio::net::TcpStream) -> String {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed mid-response");
            data.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&data).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .expect("content-length");
                if body.len() >= len {
                    return head.to_string();
                }
            }
        }
    }
    for i in 0..3 {
        conn.write_all(
            format!("GET /keepalive/{i} HTTP/1.1\r\nHost: example.com\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let head = response(&mut conn).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let version = gw.config_version().await;
    let moved = http_gateway("gw").replace("port: 8080", "port: 8081");
    gw.write("gw.yaml", &format!("{GATEWAY_CLASS}---\n{moved}"));
    gw.wait_version_above(version).await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
        .await
        .expect("the idle connection was left open")
        .unwrap_or(0);
    assert_eq!(n, 0, "expected the connection to close");
}
