//! Extended HTTPRoute features through the real binary: timeouts, retries, CORS, h2c backends
//! and misdirected-request detection. Timing is proven with the echo backend's `?delay=` and
//! `/retry/` endpoints, never with sleeps in the test.
#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

use sluice_testing::*;

fn gateway_files(route: &str, backends: &[(&str, &EchoServer)]) -> Vec<(String, String)> {
    let mut files = vec![
        (
            "gw.yaml".to_string(),
            format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
        ),
        ("route.yaml".to_string(), route.to_string()),
    ];
    for (name, e) in backends {
        files.push((format!("{name}.yaml"), service("default", name, &[e.addr])));
    }
    files
}

/// `timeouts.request` and `timeouts.backendRequest` answer 504 when the backend is slower.
#[tokio::test(flavor = "multi_thread")]
async fn timeouts() {
    let app = echo("app").await;
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: timeouts, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /request}}]
    timeouts: {request: 300ms}
    backendRefs: [{name: app, port: 80}]
  - matches: [{path: {value: /backend}}]
    timeouts: {request: 5s, backendRequest: 300ms}
    backendRefs: [{name: app, port: 80}]
  - matches: [{path: {value: /none}}]
    timeouts: {request: 0s}
    backendRefs: [{name: app, port: 80}]
";
    let gw = Gateway::start(&gateway_files(route, &[("app", &app)])).await;
    let c = client_for(gw.addr(8080), &[]);
    for path in ["/request", "/backend"] {
        let (code, _, _) = get_json(&c, &gw.url(8080, &format!("{path}?delay=2s"))).await;
        assert_eq!(code, 504, "{path} slower than its timeout");
        let (code, _, _) = get_json(&c, &gw.url(8080, &format!("{path}?delay=10ms"))).await;
        assert_eq!(code, 200, "{path} within its timeout");
    }
    // 0s disables the timeout.
    let (code, _, _) = get_json(&c, &gw.url(8080, "/none?delay=500ms")).await;
    assert_eq!(code, 200);
}

/// GEP-1731 retries on listed codes, up to `attempts`, and on connection failures.
#[tokio::test(flavor = "multi_thread")]
async fn retries() {
    let app = echo("app").await;
    let fresh = echo("fresh").await;
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: retries, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /retry}}]
    retry: {codes: [503], attempts: 2, backoff: 10ms}
    backendRefs: [{name: app, port: 80}]
  - matches: [{path: {value: /retry/none}}]
    backendRefs: [{name: app, port: 80}]
  - matches: [{path: {value: /retry/fresh}}]
    retry: {attempts: 1}
    backendRefs: [{name: fresh, port: 80}]
  - matches: [{path: {value: /retry/slow}}]
    retry: {attempts: 2}
    timeouts: {backendRequest: 200ms}
    backendRefs: [{name: app, port: 80}]
";
    let gw = Gateway::start(&gateway_files(route, &[("app", &app), ("fresh", &fresh)])).await;
    let c = client_for(gw.addr(8080), &[]);
    let get = |q: &str| {
        let url = gw.url(8080, &format!("/retry/?{q}"));
        let c = c.clone();
        async move { get_json(&c, &url).await.0 }
    };
    // Two failures, two retries: the third attempt succeeds.
    assert_eq!(get("uuid=a&succeedAfter=2&responseCode=503").await, 200);
    assert_eq!(app.count("/retry/?uuid=a&"), 3);
    // Three failures exhaust the retries: the last answer is passed on.
    let code = get("uuid=b&succeedAfter=3&responseCode=503").await;
    assert_eq!((code, app.count("/retry/?uuid=b&")), (503, 3));
    // Codes not listed are not retried.
    assert_eq!(get("uuid=c&succeedAfter=1&responseCode=500").await, 500);
    assert_eq!(app.count("/retry/?uuid=c&"), 1);
    // A connection closed without an answer is retried.
    assert_eq!(get("uuid=d&succeedAfter=1").await, 200);
    // Also when it was a new connection, not one from the pool: nothing had gone to `fresh`.
    let url = gw.url(8080, "/retry/fresh/?uuid=f&succeedAfter=1");
    assert_eq!(get_json(&c, &url).await.0, 200);
    assert_eq!(fresh.count("/retry/fresh/?uuid=f&"), 2);
    // A backend that timed out is not asked again: it may still be working on the request.
    let url = gw.url(8080, "/retry/slow/?uuid=g&delay=1s");
    assert_eq!(get_json(&c, &url).await.0, 504);
    assert_eq!(app.count("/retry/slow/?uuid=g&"), 1);
    // Without a retry policy, the failure is the answer.
    let url = gw.url(8080, "/retry/none/?uuid=e&succeedAfter=1&responseCode=503");
    assert_eq!(get_json(&c, &url).await.0, 503);
}

/// CORS: preflights are answered by the gateway (allowed origins with the CORS headers, others
/// refused with 403); actual requests from allowed origins get the allow-origin header.
#[tokio::test(flavor = "multi_thread")]
async fn cors() {
    let app = echo("app").await;
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cors, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - filters:
    - type: CORS
      cors:
        allowOrigins: ['https://www.foo.com', 'https://*.foobar.com']
        allowMethods: [GET, POST]
        allowHeaders: [x-header-1, x-header-2]
        exposeHeaders: [x-exposed]
        maxAge: 3600
        allowCredentials: true
    backendRefs: [{name: app, port: 80}]
";
    let gw = Gateway::start(&gateway_files(route, &[("app", &app)])).await;
    let c = client_for(gw.addr(8080), &[]);
    let preflight = |origin: &str| {
        c.request(reqwest::Method::OPTIONS, gw.url(8080, "/cors"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let r = preflight("https://www.foo.com").await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://www.foo.com");
    assert_eq!(h["access-control-allow-methods"], "GET, POST");
    assert_eq!(h["access-control-allow-headers"], "x-header-1, x-header-2");
    assert_eq!(h["access-control-max-age"], "3600");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(
        app.count("/cors"),
        0,
        "the gateway answers preflights itself"
    );
    let r = preflight("https://api.foobar.com").await.unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://api.foobar.com"
    );
    // A disallowed origin: refused by the gateway with no CORS headers; the preflight never
    // reaches the backend.
    let r = preflight("https://evil.example").await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert!(r.headers().get("server").is_none());
    assert_eq!(
        app.count("/cors"),
        0,
        "a refused preflight reaches no backend"
    );
    // An actual request from an allowed origin.
    let (code, _, headers) = get_json_with(
        &c,
        &gw.url(8080, "/cors"),
        &[("origin", "https://www.foo.com")],
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://www.foo.com"
    );
    assert_eq!(headers["access-control-expose-headers"], "x-exposed");
}

/// A Gateway routing everything to one echo backend whose Service port has `app_protocol`.
async fn start_with_app_protocol(app_protocol: &str) -> (Gateway, EchoServer) {
    let app = echo("app").await;
    let svc = service("default", "app", &[app.addr]).replace(
        "{name: http, port: 80,",
        &format!("{{name: http, port: 80, appProtocol: {app_protocol},"),
    );
    let route = backend_route("app", &["name: gw"], &[], "app");
    let mut files = gateway_files(&route, &[]);
    files.push(("app.yaml".to_string(), svc));
    (Gateway::start(&files).await, app)
}

/// A Service port with appProtocol kubernetes.io/h2c is reached over HTTP/2 cleartext.
#[tokio::test(flavor = "multi_thread")]
async fn h2c_backend() {
    let (gw, _app) = start_with_app_protocol("kubernetes.io/h2c").await;
    let c = client_for(gw.addr(8080), &[]);
    let (code, body, _) = get_json(&c, &gw.url(8080, "/")).await;
    assert_eq!((code, body["proto"].as_str()), (200, Some("HTTP/2.0")));
}

/// A Gateway with an HTTPS listener on port 8443 for each of `names` (`<name>.example.com`,
/// with the certificate of the same name).
fn https_gateway(names: &[&str]) -> String {
    let listeners: String = names
        .iter()
        .map(|n| {
            format!(
                "  - {{name: {n}, protocol: HTTPS, port: 8443, hostname: {n}.example.com, \
                 tls: {{certificateRefs: [{{name: {n}}}]}}}}\n"
            )
        })
        .collect();
    format!(
        "{GATEWAY_CLASS}---\napiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: sluice
  listeners:
{listeners}"
    )
}

/// `https_gateway(listeners)`, with routes from the foo and bar listeners to the foo and bar
/// backends (`backends`, in that order), and the certificates of both names issued by `ca`.
fn foo_bar_files(
    ca: &TestCa,
    listeners: &[&str],
    backends: [&EchoServer; 2],
) -> Vec<(&'static str, String)> {
    let [foo_echo, bar_echo] = backends;
    vec![
        ("gw.yaml", https_gateway(listeners)),
        (
            "routes.yaml",
            format!(
                "{}---\n{}",
                backend_route("foo", &["name: gw, sectionName: foo"], &[], "foo"),
                backend_route("bar", &["name: gw, sectionName: bar"], &[], "bar")
            ),
        ),
        (
            "certs.yaml",
            format!(
                "{}---\n{}",
                ca.secret("default", "foo", &["foo.example.com"]),
                ca.secret("default", "bar", &["bar.example.com"])
            ),
        ),
        (
            "svc.yaml",
            format!(
                "{}---\n{}",
                service("default", "foo", &[foo_echo.addr]),
                service("default", "bar", &[bar_echo.addr])
            ),
        ),
    ]
}

/// HTTPS: a request whose Host selects another listener than its SNI did is answered 421.
#[tokio::test(flavor = "multi_thread")]
async fn misdirected_requests_get_421() {
    let ca = TestCa::new();
    let foo = echo("foo").await;
    let bar = echo("bar").await;
    let gw = Gateway::start(&foo_bar_files(&ca, &["foo", "bar"], [&foo, &bar])).await;
    let ca_file = gw.path("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    // Both protocols read the SNI the handshake kept in the connection's TLS digest.
    let curl = |version: &str, host_header: &str| {
        let out = std::process::Command::new("curl")
            .args([
                version,
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cacert",
            ])
            .arg(&ca_file)
            .args(["--resolve", &format!("foo.example.com:8443:{}", gw.ip)])
            .args(["-H", &format!("Host: {host_header}")])
            .arg("https://foo.example.com:8443/")
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    for version in ["--http1.1", "--http2"] {
        assert_eq!(curl(version, "foo.example.com"), "200", "{version}");
        assert_eq!(curl(version, "bar.example.com"), "421", "{version}");
    }
    assert_eq!(bar.count("/"), 0);
}

/// A listener that joins a port later still protects the connections already open on it: a
/// keep-alive connection made for foo, asked for bar after bar's listener was added, gets 421.
#[tokio::test(flavor = "multi_thread")]
async fn misdirected_after_a_listener_joins_the_port() {
    let ca = TestCa::new();
    let foo = echo("foo").await;
    let bar = echo("bar").await;
    let gw = Gateway::start(&foo_bar_files(&ca, &["foo"], [&foo, &bar])).await;
    // One TLS connection, held by the test itself: every request below goes over it.
    let tcp = tokio::net::TcpStream::connect(gw.addr(8443)).await.unwrap();
    let mut conn = tokio_rustls::TlsConnector::from(ca.rustls_client_config())
        .connect("foo.example.com".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(http1_get(&mut conn, "foo.example.com").await, 200);

    let version = gw.config_version().await;
    gw.write("gw.yaml", &https_gateway(&["foo", "bar"]));
    gw.wait_version_above(version).await;
    assert_eq!(http1_get(&mut conn, "bar.example.com").await, 421);
    assert_eq!(http1_get(&mut conn, "foo.example.com").await, 200);
    assert_eq!(bar.count("/"), 0);
}

/// Sends `GET /` with `host` on a kept-alive HTTP/1.1 connection and reads the whole response
/// (which must have a Content-Length); returns its status.
async fn http1_get<S>(conn: &mut S, host: &str) -> u16
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(format!("GET / HTTP/1.1\r\nhost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed after {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a Content-Length");
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed in the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap()
}

/// WebSocket upgrades pass through to a backend whose port says kubernetes.io/ws.
#[tokio::test(flavor = "multi_thread")]
async fn websocket_backend() {
    let (gw, _app) = start_with_app_protocol("kubernetes.io/ws").await;
    let reply = websocket_echo(gw.addr(8080), "ws.example", "/ws", "hello over the gateway").await;
    assert_eq!(reply.as_deref(), Ok("hello over the gateway"));
    // A plain request on the same route still works.
    let (code, _, _) = get_json(&client_for(gw.addr(8080), &[]), &gw.url(8080, "/plain")).await;
    assert_eq!(code, 200);
}
