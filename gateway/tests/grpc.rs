//! GRPCRoute through the real gateway binary with a real tonic client over h2c: unary calls
//! routed by service and method, server-streaming and bidirectional streams, a backend's own
//! status and trailers passed through, the gateway's gRPC answers (UNIMPLEMENTED without a
//! route, UNAVAILABLE without a backend, DEADLINE_EXCEEDED past `grpc-timeout`), and a route
//! rewritten under load without a failed call.
#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use conformance::echo::Identity;
use conformance::grpc_echo::pb::grpc_echo_client::GrpcEchoClient;
use conformance::grpc_echo::pb::EchoRequest;
use conformance::grpc_echo::{serve, GrpcEchoServerHandle, SERVICE};
use sluice_testing::*;
use tonic::transport::Channel;

fn identity(name: &str) -> Identity {
    Identity {
        namespace: "default".into(),
        service: name.into(),
        pod: format!("{name}-0"),
        ..Identity::default()
    }
}

async fn grpc_echo(name: &str) -> GrpcEchoServerHandle {
    serve("127.0.0.1:0".parse().unwrap(), identity(name))
        .await
        .unwrap()
}

/// A backend with the standard health service (server streaming `Watch`) and reflection
/// (a bidirectional stream), over h2c.
async fn health_backend() -> (SocketAddr, tonic_health::server::HealthReporter) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("app", tonic_health::ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .build_v1()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(reflection)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, reporter)
}

/// Accepts connections and never answers on them.
async fn stalled_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    addr
}

/// Records whether each connection starts with the HTTP/2 preface (a GRPCRoute's mirror
/// must speak HTTP/2 to its backend), then closes it.
async fn preface_backend() -> (SocketAddr, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let h2 = Arc::new(AtomicU32::new(0));
    let seen = h2.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut conn, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 24];
                if conn.read_exact(&mut first).await.is_ok()
                    && &first == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, h2)
}

/// A loopback port nothing listens on.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn route(echo_backend: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: grpc, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{method: {{service: {SERVICE}, method: Echo}}, headers: [{{name: x-target, value: down}}]}}]
    backendRefs: [{{name: down, port: 80}}]
  - matches: [{{method: {{service: {SERVICE}, method: Echo}}}}]
    filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{name: mirror, port: 80}}}}}}]
    backendRefs: [{{name: {echo_backend}, port: 80}}]
  - matches: [{{method: {{service: {SERVICE}, method: EchoTwo}}}}]
    backendRefs: [{{name: stalled, port: 80}}]
  - matches: [{{method: {{service: grpc.health.v1.Health}}}}, {{method: {{service: grpc.reflection.v1.ServerReflection}}}}]
    backendRefs: [{{name: health, port: 80}}]
"
    )
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_route_end_to_end() {
    let one = grpc_echo("grpc-one").await;
    let two = grpc_echo("grpc-two").await;
    let (health_addr, reporter) = health_backend().await;
    let stalled = stalled_backend().await;
    let (mirror, mirrored_h2) = preface_backend().await;
    // The Services' ports say nothing of HTTP/2 (no appProtocol): a GRPCRoute's backends are
    // spoken to in HTTP/2 all the same.
    let files = vec![
        (
            "gw.yaml".to_string(),
            format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
        ),
        ("route.yaml".to_string(), route("grpc-one")),
        (
            "one.yaml".to_string(),
            service("default", "grpc-one", &[one.addr]),
        ),
        (
            "two.yaml".to_string(),
            service("default", "grpc-two", &[two.addr]),
        ),
        (
            "health.yaml".to_string(),
            service("default", "health", &[health_addr]),
        ),
        (
            "stalled.yaml".to_string(),
            service("default", "stalled", &[stalled]),
        ),
        (
            "down.yaml".to_string(),
            service("default", "down", &[closed_port()]),
        ),
        (
            "mirror.yaml".to_string(),
            service("default", "mirror", &[mirror]),
        ),
    ];
    let gw = Gateway::start(&files).await;
    let status = find_status(
        &gw.admin_json("/status").await,
        "GRPCRoute",
        Some("default"),
        "grpc",
    );
    assert_eq!(
        condition(&status["status"]["parents"][0]["conditions"], "Accepted"),
        ("True".into(), "Accepted".into())
    );
    let ch = channel(gw.addr(8080)).await;
    let mut echo = GrpcEchoClient::new(ch.clone());

    // Unary, routed by service and method; the backend saw the method and the authority.
    let resp = echo.echo(EchoRequest {}).await.unwrap().into_inner();
    let a = resp.assertions.unwrap();
    assert_eq!(a.fully_qualified_method, format!("/{SERVICE}/Echo"));
    assert_eq!(a.context.unwrap().pod, "grpc-one-0");
    assert_eq!(a.authority, gw.addr(8080).to_string());
    // Its mirrored copy went to the mirror backend over HTTP/2.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while mirrored_h2.load(Ordering::Relaxed) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no HTTP/2 mirror connection in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // No rule for EchoThree: the gateway answers UNIMPLEMENTED in gRPC's form (its own message,
    // not a client's reading of an HTTP 404).
    let err = echo.echo_three(EchoRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err}");
    assert!(err.message().contains("no route"), "{err}");

    // The rule's backend refuses connections: UNAVAILABLE.
    let mut req = tonic::Request::new(EchoRequest {});
    req.metadata_mut()
        .insert("x-target", "down".parse().unwrap());
    let err = echo.echo(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(err.message().contains("upstream connect error"), "{err}");

    // The backend never answers and the call's deadline is 300 ms: the gateway gives up at the
    // deadline and answers DEADLINE_EXCEEDED itself. (A raw HTTP/2 client: tonic's own timer
    // would race the gateway's.) The answer is gRPC's: HTTP 200, the status in the headers.
    let raw = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let call = |method: &str, timeout: Option<&str>| {
        let mut req = raw
            .post(format!("http://{}/{SERVICE}/{method}", gw.addr(8080)))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            // One empty message: no compression, length 0.
            .body(vec![0u8; 5]);
        if let Some(t) = timeout {
            req = req.header("grpc-timeout", t);
        }
        req.send()
    };
    let started = std::time::Instant::now();
    let resp = call("EchoTwo", Some("300m")).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    assert_eq!(resp.headers()["grpc-status"], "4", "{:?}", resp.headers());
    let resp = call("EchoThree", None).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "12", "{:?}", resp.headers());

    // The backend's own status and message come through in its trailers.
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let err = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "unknown".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");

    // Server streaming: the watch sees SERVING, then the change to NOT_SERVING.
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "app".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    reporter
        .set_service_status("app", tonic_health::ServingStatus::NotServing)
        .await;
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the change reaches the client")
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    drop(watch);

    // A bidirectional stream: two requests on one stream, two answers.
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut reflection = ServerReflectionClient::new(ch.clone());
    let list = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    tx.send(list()).await.unwrap();
    let mut answers = reflection
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for round in 0..2 {
        let resp = answers.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(l)) = resp.message_response else {
            panic!("round {round}: {resp:?}");
        };
        assert!(
            l.service
                .iter()
                .any(|s| s.name == "grpc.reflection.v1.ServerReflection"),
            "{l:?}"
        );
        if round == 0 {
            tx.send(list()).await.unwrap();
        }
    }
    drop(tx);
    assert!(
        answers.message().await.unwrap().is_none(),
        "the stream ends"
    );

    // Under load on multiplexed connections, the route's backend is switched five times: no
    // call fails, and the new backend answers after each switch.
    let failures = Arc::new(AtomicU32::new(0));
    let calls = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let mut client = GrpcEchoClient::new(ch.clone());
        let (failures, calls, stop) = (failures.clone(), calls.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = client.echo(EchoRequest {}).await;
                calls.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = r {
                    eprintln!("failed call under reload: {e}");
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for i in 0..5 {
        let backend = if i % 2 == 0 { "grpc-two" } else { "grpc-one" };
        let v = gw.config_version().await;
        gw.write("route.yaml", &route(backend));
        gw.wait_version_above(v).await;
        let pod = echo
            .echo(EchoRequest {})
            .await
            .unwrap()
            .into_inner()
            .assertions
            .unwrap()
            .context
            .unwrap()
            .pod;
        assert_eq!(pod, format!("{backend}-0"), "after switch {i}");
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert!(calls.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "calls failed during reloads"
    );
}

/// An HTTPRoute and a GRPCRoute claiming one hostname on a listener: the older attaches, the
/// other is not accepted there and says why; on another listener both are accepted.
#[test]
fn http_and_grpc_routes_cannot_share_a_hostname() {
    let gw = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: shared, protocol: HTTP, port: 8080, hostname: '*.example.com'}
  - {name: other, protocol: HTTP, port: 8081, hostname: 'grpc.example.org'}
";
    let routes = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default, creationTimestamp: '2026-01-01T00:00:00Z'}
spec:
  parentRefs: [{name: gw, sectionName: shared}]
  hostnames: ['*.example.com']
  rules: [{backendRefs: [{name: app, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: api, namespace: default, creationTimestamp: '2026-01-02T00:00:00Z'}
spec:
  parentRefs: [{name: gw, sectionName: shared}]
  hostnames: [api.example.com]
  rules: [{backendRefs: [{name: app, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: separate, namespace: default, creationTimestamp: '2026-01-03T00:00:00Z'}
spec:
  parentRefs: [{name: gw, sectionName: other}]
  rules: [{backendRefs: [{name: app, port: 80}]}]
";
    let app = service("default", "app", &["127.0.0.1:9".parse().unwrap()]);
    let all = status_of_files(&[
        ("gw.yaml", format!("{GATEWAY_CLASS}---\n{gw}")),
        ("routes.yaml", routes.to_string()),
        ("app.yaml", app),
    ]);
    let accepted = |kind: &str, name: &str| {
        let st = find_status(&all, kind, Some("default"), name);
        let c = &st["status"]["parents"][0]["conditions"];
        let msg = c
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Accepted")
            .map(|c| c["message"].as_str().unwrap_or("").to_string())
            .unwrap_or_default();
        (condition(c, "Accepted"), msg)
    };
    assert_eq!(
        accepted("HTTPRoute", "web").0,
        ("True".into(), "Accepted".into())
    );
    let (api, msg) = accepted("GRPCRoute", "api");
    assert_eq!(api, ("False".into(), "HostnameConflict".into()));
    assert!(msg.contains("HTTPRoute default/web"), "{msg}");
    assert_eq!(
        accepted("GRPCRoute", "separate").0,
        ("True".into(), "Accepted".into())
    );
    let gw = find_status(&all, "Gateway", Some("default"), "gw");
    assert_eq!(listener(&gw, "shared")["attachedRoutes"], 1);
    assert_eq!(listener(&gw, "other")["attachedRoutes"], 1);
}

/// GRPCRoute's precedence, not HTTPRoute's path order: a match naming the service beats one
/// naming only the method, which beats one naming neither, whatever the rule order.
#[tokio::test(flavor = "multi_thread")]
async fn service_then_method_then_nothing() {
    let any = grpc_echo("any").await;
    let method = grpc_echo("by-method").await;
    let svc = grpc_echo("by-service").await;
    let route = format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: order, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - backendRefs: [{{name: any, port: 80}}]
  - matches: [{{method: {{method: EchoTwo}}}}, {{method: {{method: EchoThree}}}}]
    backendRefs: [{{name: by-method, port: 80}}]
  - matches: [{{method: {{service: {SERVICE}, method: EchoThree}}}}]
    backendRefs: [{{name: by-service, port: 80}}]
"
    );
    let gw = Gateway::start(&[
        (
            "gw.yaml".to_string(),
            format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
        ),
        ("route.yaml".to_string(), route),
        (
            "any.yaml".to_string(),
            service("default", "any", &[any.addr]),
        ),
        (
            "m.yaml".to_string(),
            service("default", "by-method", &[method.addr]),
        ),
        (
            "s.yaml".to_string(),
            service("default", "by-service", &[svc.addr]),
        ),
    ])
    .await;
    let mut client = GrpcEchoClient::new(channel(gw.addr(8080)).await);
    let pod = |r: tonic::Response<conformance::grpc_echo::pb::EchoResponse>| {
        r.into_inner().assertions.unwrap().context.unwrap().pod
    };
    assert_eq!(pod(client.echo(EchoRequest {}).await.unwrap()), "any-0");
    assert_eq!(
        pod(client.echo_two(EchoRequest {}).await.unwrap()),
        "by-method-0"
    );
    assert_eq!(
        pod(client.echo_three(EchoRequest {}).await.unwrap()),
        "by-service-0"
    );
}

/// A gRPC echo backend over TLS (ALPN h2) with a certificate from `ca` for `names`; it asks
/// for client certificates and verifies those signed by `client_ca` (it accepts clients
/// without one).
async fn grpc_tls_echo(
    name: &str,
    ca: &TestCa,
    names: &[&str],
    client_ca: &TestCa,
) -> GrpcEchoServerHandle {
    let (cert, key) = ca.issue(names);
    let files = conformance::echo::TlsFiles {
        cert_pem: cert.into_bytes(),
        key_pem: key.into_bytes(),
        client_ca_pem: Some(client_ca.cert_pem.clone().into_bytes()),
    };
    conformance::grpc_echo::serve_tls("127.0.0.1:0".parse().unwrap(), identity(name), &files)
        .await
        .unwrap()
}

/// A GRPCRoute's backends behind BackendTLSPolicies: HTTP/2 over TLS with ALPN h2, the
/// policy hostname as SNI, through pingora's TLS (hostname verified) and through the engine's
/// own connector (subjectAltNames verified); a certificate from another CA fails the call as
/// UNAVAILABLE; each policy lists the Gateway as its ancestor. Both connectors present the
/// Gateway's backend client certificate (`spec.tls.backend.clientCertificateRef`); a second
/// Gateway without one, routing to the same backends, presents none (its calls share no
/// connection with the first's).
#[tokio::test(flavor = "multi_thread")]
async fn grpc_route_to_tls_backends_by_backend_tls_policy() {
    let ca = TestCa::new();
    let client_ca = TestCa::new();
    let by_host = grpc_tls_echo("by-host", &ca, &["grpc.example.com"], &client_ca).await;
    let by_san = grpc_tls_echo("by-san", &ca, &["san.example.com"], &client_ca).await;
    let other_ca = TestCa::new();
    let untrusted = grpc_tls_echo("untrusted", &other_ca, &["grpc.example.com"], &client_ca).await;
    let route = format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: grpc-tls, namespace: default}}
spec:
  parentRefs: [{{name: gw}}, {{name: plain}}]
  rules:
  - matches: [{{method: {{service: {SERVICE}, method: Echo}}}}]
    backendRefs: [{{name: by-host, port: 80}}]
  - matches: [{{method: {{service: {SERVICE}, method: EchoTwo}}}}]
    backendRefs: [{{name: by-san, port: 80}}]
  - matches: [{{method: {{service: {SERVICE}, method: EchoThree}}}}]
    backendRefs: [{{name: untrusted, port: 80}}]
"
    );
    let with_client_cert = http_gateway("gw").replace(
        "  gatewayClassName: sluice\n",
        "  gatewayClassName: sluice\n  tls: {backend: {clientCertificateRef: {name: backend-client}}}\n",
    );
    let plain = http_gateway("plain").replace("port: 8080", "port: 8081");
    let files = vec![
        (
            "gw.yaml".to_string(),
            format!(
                "{GATEWAY_CLASS}---\n{with_client_cert}---\n{plain}---\n{}",
                client_ca.secret("default", "backend-client", &["gateway.example.com"])
            ),
        ),
        ("route.yaml".to_string(), route),
        (
            "ca.yaml".to_string(),
            ca.config_map("default", "backend-ca"),
        ),
        (
            "policies.yaml".to_string(),
            [
                backend_tls_policy("by-host", "by-host", "grpc.example.com", &[]),
                backend_tls_policy("by-san", "by-san", "sni.example.com", &["san.example.com"]),
                backend_tls_policy("untrusted", "untrusted", "grpc.example.com", &[]),
            ]
            .join("---\n"),
        ),
        (
            "services.yaml".to_string(),
            [
                service("default", "by-host", &[by_host.addr]),
                service("default", "by-san", &[by_san.addr]),
                service("default", "untrusted", &[untrusted.addr]),
            ]
            .join("---\n"),
        ),
    ];
    let gw = Gateway::start(&files).await;
    let status = gw.admin_json("/status").await;
    assert_policies_accepted(&status, &["by-host", "by-san", "untrusted"], "gw");
    let mut echo = GrpcEchoClient::new(channel(gw.addr(8080)).await);

    // pingora's TLS: the certificate is valid for the policy hostname, which is the SNI.
    let a = echo
        .echo(EchoRequest {})
        .await
        .unwrap()
        .into_inner()
        .assertions
        .unwrap();
    assert_eq!(a.context.unwrap().pod, "by-host-0");
    let tls = a.tls_assertions.expect("the backend saw TLS");
    assert_eq!(tls.negotiated_protocol, "h2");
    assert_eq!(tls.server_name, "grpc.example.com");
    assert_eq!(
        tls.peer_certificates.len(),
        1,
        "the Gateway's client certificate"
    );

    // The engine's connector: SNI is the hostname, the certificate carries the listed SAN
    // only. Several calls share the HTTP/2 connection.
    for _ in 0..3 {
        let a = echo
            .echo_two(EchoRequest {})
            .await
            .unwrap()
            .into_inner()
            .assertions
            .unwrap();
        assert_eq!(a.context.unwrap().pod, "by-san-0");
        let tls = a.tls_assertions.expect("the backend saw TLS");
        assert_eq!(tls.negotiated_protocol, "h2");
        assert_eq!(tls.server_name, "sni.example.com");
        assert_eq!(
            tls.peer_certificates.len(),
            1,
            "the Gateway's client certificate"
        );
    }

    // The Gateway without a backend client certificate: the same backends see none.
    let mut plain = GrpcEchoClient::new(channel(gw.addr(8081)).await);
    for (a, pod) in [
        (plain.echo(EchoRequest {}).await, "by-host-0"),
        (plain.echo_two(EchoRequest {}).await, "by-san-0"),
    ] {
        let a = a.unwrap().into_inner().assertions.unwrap();
        assert_eq!(a.context.unwrap().pod, pod);
        let tls = a.tls_assertions.expect("the backend saw TLS");
        assert!(tls.peer_certificates.is_empty(), "{pod}: {tls:?}");
    }

    // A certificate the policy's CA did not sign: the call fails, in gRPC's form.
    let err = echo.echo_three(EchoRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
}

/// The gateway's own gRPC answers are trailers-only: one HEADERS frame with `grpc-status` that
/// ends the stream, as grpc-go requires (it fails a call whose stream ends with a DATA frame
/// and no trailers as INTERNAL). Read with the h2 crate, which shows the frames tonic hides.
#[tokio::test(flavor = "multi_thread")]
async fn gateway_grpc_answers_are_trailers_only() {
    let files = vec![
        (
            "gw.yaml".to_string(),
            format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
        ),
        (
            "route.yaml".to_string(),
            format!(
                "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: grpc, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{method: {{service: {SERVICE}, method: Echo}}}}]
    backendRefs: [{{name: down, port: 80}}]
"
            ),
        ),
        (
            "down.yaml".to_string(),
            service("default", "down", &[closed_port()]),
        ),
    ];
    let gw = Gateway::start(&files).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr(8080)).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    // No rule for EchoThree (UNIMPLEMENTED); Echo's backend refuses connections (UNAVAILABLE).
    for (method, code) in [("EchoThree", "12"), ("Echo", "14")] {
        let mut client = client.clone().ready().await.unwrap();
        let req = http::Request::post(format!("http://{}/{SERVICE}/{method}", gw.addr(8080)))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (resp, mut send) = client.send_request(req, false).unwrap();
        // An empty EchoRequest: the 5-byte gRPC frame header.
        send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
            .unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200, "{method}");
        assert_eq!(resp.headers()["grpc-status"], code, "{method}");
        assert!(
            resp.body().is_end_stream(),
            "{method}: the HEADERS frame did not end the stream"
        );
    }
}
