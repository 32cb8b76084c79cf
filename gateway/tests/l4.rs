//! TLSRoute and TCPRoute through the real gateway binary with real sockets: TLS passed through
//! by SNI (the backend's certificate and handshake reach the client), TLS terminated by the
//! gateway, both on one port (mixed), TCP with weights and half-close, what a connection
//! without a route gets, the per-connection metrics and log line, and a TCPRoute rewritten
//! while connections keep coming.
#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use conformance::echo::Identity;
use sluice_testing::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn identity(name: &str) -> Identity {
    Identity {
        namespace: "default".into(),
        service: name.into(),
        pod: format!("{name}-0"),
        ..Identity::default()
    }
}

async fn tcp_echo(name: &str) -> conformance::l4_echo::L4Server {
    conformance::l4_echo::serve_tcp("127.0.0.1:0".parse().unwrap(), identity(name), None)
        .await
        .unwrap()
}

/// Answers each connection, once the client has finished sending, with how many bytes it sent:
/// only a half-closed connection gets an answer.
async fn counting_backend() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut all = Vec::new();
                if c.read_to_end(&mut all).await.is_ok() {
                    let _ = c.write_all(format!("got {}\n", all.len()).as_bytes()).await;
                }
            });
        }
    });
    addr
}

/// The TCP echo's answer to `TEST` through `addr` (after its welcome line), parsed.
async fn tcp_test(
    stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
) -> serde_json::Value {
    let mut s = BufReader::new(stream);
    let mut welcome = String::new();
    s.read_line(&mut welcome).await.unwrap();
    assert_eq!(welcome, "Gateway API Test TCP Server\n");
    s.get_mut().write_all(b"TEST\n").await.unwrap();
    let mut line = String::new();
    s.read_line(&mut line).await.unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

fn gateway(ca: &TestCa) -> String {
    format!(
        "{GATEWAY_CLASS}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: sluice
  listeners:
  - name: passthrough
    protocol: TLS
    port: 8443
    hostname: '*.pass.example.com'
    tls: {{mode: Passthrough}}
  - name: terminate
    protocol: TLS
    port: 8443
    hostname: '*.term.example.com'
    tls: {{mode: Terminate, certificateRefs: [{{name: term-cert}}]}}
  - name: tcp
    protocol: TCP
    port: 9000
  - name: halfclose
    protocol: TCP
    port: 9001
---
{}",
        ca.secret("default", "term-cert", &["*.term.example.com"])
    )
}

fn tcp_route(backends: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {{name: tcp, namespace: default}}
spec:
  parentRefs: [{{name: gw, sectionName: tcp}}]
  rules:
  - backendRefs: [{backends}]
"
    )
}

const ROUTES: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: pass, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: passthrough}]
  hostnames: [abc.pass.example.com]
  rules:
  - backendRefs: [{name: tls-backend, port: 443}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: term, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: terminate}]
  hostnames: ['*.term.example.com']
  rules:
  - backendRefs: [{name: tcp-one, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: halfclose, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: halfclose}]
  rules:
  - backendRefs: [{name: counting, port: 80}]
";

async fn tls_connect(
    ca: &TestCa,
    addr: SocketAddr,
    name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(ca.rustls_client_config());
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    connector.connect(name, tcp).await
}

/// GET /hello over HTTPS to abc.pass.example.com through the gateway's port 8443 (a
/// passthrough listener), trusting `ca`; the client (its connection stays open until it is
/// dropped) and the echo's answer.
async fn passthrough_get(ca: &TestCa, gw: &Gateway) -> (reqwest::Client, serde_json::Value) {
    let c = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca.reqwest_cert())
        .resolve("abc.pass.example.com", gw.addr(8443))
        .build()
        .unwrap();
    let body = c
        .get("https://abc.pass.example.com:8443/hello")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (c, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_and_tcp_routes() {
    let ca = TestCa::new();
    let tls_backend = tls_echo("tls-backend", &ca, &["abc.pass.example.com"]).await;
    let tls_backend_b = tls_echo("tls-backend-b", &ca, &["abc.pass.example.com"]).await;
    let one = tcp_echo("tcp-one").await;
    let two = tcp_echo("tcp-two").await;
    let counting = counting_backend().await;
    let files = vec![
        ("gw.yaml".to_string(), gateway(&ca)),
        ("routes.yaml".to_string(), ROUTES.to_string()),
        (
            "tcp.yaml".to_string(),
            tcp_route("{name: tcp-one, port: 80}"),
        ),
        (
            "svc.yaml".to_string(),
            [
                service("default", "tls-backend", &[tls_backend.addr])
                    .replace("port: 80,", "port: 443,"),
                service("default", "tls-backend-b", &[tls_backend_b.addr])
                    .replace("port: 80,", "port: 443,"),
                service("default", "tcp-one", &[one.addr]),
                service("default", "tcp-two", &[two.addr]),
                service("default", "counting", &[counting]),
            ]
            .join("---\n"),
        ),
    ];
    let gw = Gateway::start(&files).await;
    let all = gw.admin_json("/status").await;
    for (kind, name) in [
        ("TLSRoute", "pass"),
        ("TLSRoute", "term"),
        ("TCPRoute", "tcp"),
        ("TCPRoute", "halfclose"),
    ] {
        let st = find_status(&all, kind, Some("default"), name);
        let conds = &st["status"]["parents"][0]["conditions"];
        assert_eq!(
            condition(conds, "Accepted"),
            ("True".into(), "Accepted".into()),
            "{kind} {name}"
        );
        assert_eq!(condition(conds, "ResolvedRefs").0, "True", "{kind} {name}");
    }
    let gws = find_status(&all, "Gateway", Some("default"), "gw");
    for l in ["passthrough", "terminate", "tcp", "halfclose"] {
        assert_eq!(listener(&gws, l)["attachedRoutes"], 1, "{l}");
        assert_eq!(
            condition(&listener(&gws, l)["conditions"], "Programmed").0,
            "True"
        );
    }
    assert_eq!(
        listener(&gws, "passthrough")["supportedKinds"][0]["kind"],
        "TLSRoute"
    );
    assert_eq!(
        listener(&gws, "tcp")["supportedKinds"][0]["kind"],
        "TCPRoute"
    );

    // Passthrough: the backend's certificate (for abc.pass.example.com, which the gateway has
    // none of) completes the handshake, and the backend saw the client's SNI.
    let (c, body) = passthrough_get(&ca, &gw).await;
    assert_eq!(body["service"], "tls-backend");
    assert_eq!(body["path"], "/hello");
    assert_eq!(body["tls"]["serverName"], "abc.pass.example.com");
    // Its connection ends (and is counted) when the client lets it go.
    drop(c);

    // No route for this name on the passthrough listener, no listener at all for that one:
    // the connection is closed without an answer.
    for name in ["other.pass.example.com", "nothing.example.org"] {
        let r = tls_connect(&ca, gw.addr(8443), name).await;
        assert!(r.is_err(), "{name}: the handshake must fail");
    }

    // Bytes that are not TLS: closed without an answer.
    let mut plain = TcpStream::connect(gw.addr(8443)).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut answer)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the gateway answered non-TLS bytes: {answer:?}"
    );

    // Terminate, on the same port: the gateway's certificate, then the plaintext to the TCP
    // echo, which did not see TLS.
    let tls = tls_connect(&ca, gw.addr(8443), "x.term.example.com")
        .await
        .unwrap();
    let answer = tcp_test(tls).await;
    assert_eq!(answer["service"], "tcp-one");

    // TCP: the echo answers through the gateway.
    let answer = tcp_test(TcpStream::connect(gw.addr(9000)).await.unwrap()).await;
    assert_eq!(answer["service"], "tcp-one");

    // Half-close: the client finishes sending and still reads the answer.
    let mut s = TcpStream::connect(gw.addr(9001)).await.unwrap();
    s.write_all(&[7u8; 100_000]).await.unwrap();
    s.shutdown().await.unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "got 100000\n");

    // Weights 3:1 over 200 connections.
    let v = gw.config_version().await;
    gw.write(
        "tcp.yaml",
        &tcp_route("{name: tcp-one, port: 80, weight: 3}, {name: tcp-two, port: 80, weight: 1}"),
    );
    gw.wait_version_above(v).await;
    let mut ones = 0;
    for _ in 0..200 {
        let a = tcp_test(TcpStream::connect(gw.addr(9000)).await.unwrap()).await;
        if a["service"] == "tcp-one" {
            ones += 1;
        }
    }
    assert!(
        (140..=160).contains(&ones),
        "tcp-one got {ones} of 200, want 150 ± 10"
    );

    // Metrics and the access log: one line per connection, with its decision and bytes.
    gw.metrics_with(&[
        "sluice_l4_connections_total{backend=\"default/tls-backend:443\",decision=\"forwarded\",gateway=\"default/gw\",listener=\"passthrough\",route=\"default/pass\"} 1".into(),
        "decision=\"no_route\",gateway=\"default/gw\",listener=\"passthrough\"".into(),
        "decision=\"no_listener\"".into(),
        "decision=\"bad_client_hello\"".into(),
        "sluice_l4_bytes_total{direction=\"received\",gateway=\"default/gw\",route=\"default/halfclose\"} 100000".into(),
    ])
    .await;
    let line = gw
        .wait_access_log("the passthrough connection", |l| {
            l["protocol"] == "tls-passthrough" && l["decision"] == "forwarded"
        })
        .await;
    assert_eq!(line["sni"], "abc.pass.example.com");
    assert_eq!(line["route"], "default/pass");
    assert!(line["bytes_sent"].as_u64().unwrap() > 0, "{line}");

    // Reload under load: connections keep coming while the route's backends change five
    // times; none fails.
    let failures = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = gw.addr(9000);
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (failures, stop) = (failures.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let ok = match tokio::time::timeout(Duration::from_secs(5), async {
                        let s = TcpStream::connect(addr).await?;
                        let mut s = BufReader::new(s);
                        let mut welcome = String::new();
                        s.read_line(&mut welcome).await?;
                        Ok::<_, std::io::Error>(welcome == "Gateway API Test TCP Server\n")
                    })
                    .await
                    {
                        Ok(Ok(ok)) => ok,
                        _ => false,
                    };
                    if !ok {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    for i in 0..5 {
        let backend = if i % 2 == 0 { "tcp-two" } else { "tcp-one" };
        let v = gw.config_version().await;
        gw.write(
            "tcp.yaml",
            &tcp_route(&format!("{{name: {backend}, port: 80}}")),
        );
        gw.wait_version_above(v).await;
        let a = tcp_test(TcpStream::connect(gw.addr(9000)).await.unwrap()).await;
        assert_eq!(a["service"], backend, "after switch {i}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for t in load {
        total += t.await.unwrap();
    }
    assert!(total > 0);
    assert_eq!(
        failures.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "connections failed during reloads"
    );

    // The same for TLS passthrough: HTTPS requests on new connections keep coming while the
    // TLSRoute's backend changes five times; none fails, and the new backend answers each time.
    let https = |_: ()| {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca.reqwest_cert())
            .resolve("abc.pass.example.com", gw.addr(8443))
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let failures = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (failures, stop, c) = (failures.clone(), stop.clone(), https(()));
            tokio::spawn(async move {
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let ok = c
                        .get("https://abc.pass.example.com:8443/")
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    if !ok {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    let c = https(());
    for i in 0..5 {
        let backend = if i % 2 == 0 {
            "tls-backend-b"
        } else {
            "tls-backend"
        };
        let v = gw.config_version().await;
        gw.write(
            "routes.yaml",
            &ROUTES.replace(
                "backendRefs: [{name: tls-backend, port: 443}]",
                &format!("backendRefs: [{{name: {backend}, port: 443}}]"),
            ),
        );
        gw.wait_version_above(v).await;
        let body: serde_json::Value = c
            .get("https://abc.pass.example.com:8443/")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["service"], backend, "after switch {i}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for t in load {
        total += t.await.unwrap();
    }
    assert!(total > 0);
    assert_eq!(
        failures.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "passthrough connections failed during reloads"
    );
}

/// UDPRoute: datagrams of one client socket stay on one backend (a session), replies come from
/// the address the client sent to, new sockets are spread by weight, and a session is counted
/// and logged when its listener goes away.
#[tokio::test(flavor = "multi_thread")]
async fn udp_sessions() {
    let one = conformance::l4_echo::serve_udp("127.0.0.1:0".parse().unwrap(), identity("udp-one"))
        .await
        .unwrap();
    let two = conformance::l4_echo::serve_udp("127.0.0.1:0".parse().unwrap(), identity("udp-two"))
        .await
        .unwrap();
    let gw_yaml = format!(
        "{GATEWAY_CLASS}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: sluice
  listeners:
  - {{name: udp, protocol: UDP, port: 5300}}
"
    );
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {name: udp, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{name: udp-one, port: 80, weight: 1}, {name: udp-two, port: 80, weight: 1}]
";
    let gw = Gateway::start(&[
        ("gw.yaml".to_string(), gw_yaml),
        ("route.yaml".to_string(), route.to_string()),
        (
            "svc.yaml".to_string(),
            [
                service("default", "udp-one", &[one.addr]),
                service("default", "udp-two", &[two.addr]),
            ]
            .join("---\n")
            .replace(
                "{name: http, port: 80,",
                "{name: http, protocol: UDP, port: 80,",
            ),
        ),
    ])
    .await;
    let addr = gw.addr(5300);
    let ask = |socket: Arc<tokio::net::UdpSocket>, payload: &'static str| async move {
        socket.send(payload.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 2048];
        let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&buf[..n]).unwrap()
    };
    // A connected socket only takes datagrams from the address it sent to.
    let socket = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    socket.connect(addr).await.unwrap();
    let first = ask(socket.clone(), "hello").await;
    assert_eq!(first["request"], "hello");
    for _ in 0..10 {
        let again = ask(socket.clone(), "again").await;
        assert_eq!(
            again["service"], first["service"],
            "a session keeps its backend"
        );
    }
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let s = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        s.connect(addr).await.unwrap();
        let v = ask(s, "x").await;
        *counts
            .entry(v["service"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    // 41 sessions in all (the first one's too), split 1:1 by the weights' even sequence.
    for b in ["udp-one", "udp-two"] {
        let n = counts.get(b).copied().unwrap_or(0);
        assert!((19..=21).contains(&n), "{counts:?}");
    }

    // Datagrams from new sockets keep coming while the route's weights change five times:
    // every one is answered.
    let failures = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (failures, stop) = (failures.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    s.connect(addr).await.unwrap();
                    s.send(b"load").await.unwrap();
                    let mut buf = vec![0u8; 2048];
                    let answered =
                        tokio::time::timeout(Duration::from_secs(5), s.recv(&mut buf)).await;
                    if !matches!(answered, Ok(Ok(n)) if n > 0) {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    for i in 0..5u32 {
        let v = gw.config_version().await;
        gw.write(
            "route.yaml",
            &route.replace(
                "weight: 1}, {name: udp-two",
                &format!("weight: {}}}, {{name: udp-two", i + 2),
            ),
        );
        gw.wait_version_above(v).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for t in load {
        total += t.await.unwrap();
    }
    assert!(total > 0);
    assert_eq!(
        failures.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "datagrams unanswered during reloads"
    );

    // A reload that takes the session's backend out of its route moves the session: the next
    // datagram of the same socket opens a new one, to the backend the route has now.
    let other = if first["service"] == "udp-one" {
        "udp-two"
    } else {
        "udp-one"
    };
    let v = gw.config_version().await;
    gw.write(
        "route.yaml",
        &route.replace(
            "[{name: udp-one, port: 80, weight: 1}, {name: udp-two, port: 80, weight: 1}]",
            &format!("[{{name: {other}, port: 80}}]"),
        ),
    );
    gw.wait_version_above(v).await;
    let moved = ask(socket.clone(), "after the reload").await;
    assert_eq!(moved["service"], other);

    // The listener goes away: its sessions end, each counted and logged.
    let v = gw.config_version().await;
    gw.write("route.yaml", "");
    gw.write(
        "gw.yaml",
        &format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
    );
    gw.wait_version_above(v).await;
    gw.metrics_with(&["decision=\"drained\",gateway=\"default/gw\",listener=\"udp\"".into()])
        .await;
    let line = gw
        .wait_access_log("a UDP session", |l| l["protocol"] == "udp")
        .await;
    assert_eq!(line["route"], "default/udp");
    assert!(line["bytes_received"].as_u64().unwrap() > 0, "{line}");
}

/// A TCP echo that also serves TLS with a certificate from `ca` for `names`, verifying client
/// certificates signed by `client_ca` (clients without one are accepted); the address of its
/// TLS listener.
async fn tcp_tls_echo(
    name: &str,
    ca: &TestCa,
    names: &[&str],
    client_ca: &TestCa,
) -> (conformance::l4_echo::L4Server, SocketAddr) {
    let (cert, key) = ca.issue(names);
    let files = conformance::echo::TlsFiles {
        cert_pem: cert.into_bytes(),
        key_pem: key.into_bytes(),
        client_ca_pem: Some(client_ca.cert_pem.clone().into_bytes()),
    };
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = conformance::l4_echo::serve_tcp(any, identity(name), Some((any, files)))
        .await
        .unwrap();
    let tls = server.tls_addr.unwrap();
    (server, tls)
}

/// BackendTLSPolicy on TLSRoute backends: behind a Terminate listener the gateway opens TLS
/// to the backend with the policy's hostname as SNI and its CA; a backend whose certificate
/// that CA did not sign gets no bytes (the connection is closed); behind a Passthrough listener
/// the policy changes nothing (the client's own TLS reaches the backend). The policies list
/// the Gateway as their ancestor. The re-encrypted connection presents the Gateway's backend
/// client certificate.
#[tokio::test(flavor = "multi_thread")]
async fn tls_terminate_reencrypts_by_backend_tls_policy() {
    let ca = TestCa::new();
    let client_ca = TestCa::new();
    let (_secure, secure_tls) =
        tcp_tls_echo("secure", &ca, &["backend.example.com"], &client_ca).await;
    let other_ca = TestCa::new();
    let (_untrusted, untrusted_tls) =
        tcp_tls_echo("untrusted", &other_ca, &["backend.example.com"], &client_ca).await;
    let passed = tls_echo("passed", &ca, &["abc.pass.example.com"]).await;
    let routes = "apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: secure, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: terminate}]
  hostnames: [secure.term.example.com]
  rules:
  - backendRefs: [{name: secure, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: untrusted, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: terminate}]
  hostnames: [untrusted.term.example.com]
  rules:
  - backendRefs: [{name: untrusted, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: pass, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: passthrough}]
  hostnames: [abc.pass.example.com]
  rules:
  - backendRefs: [{name: passed, port: 80}]
";
    let gw_yaml = gateway(&ca).replace(
        "  gatewayClassName: sluice\n",
        "  gatewayClassName: sluice\n  tls: {backend: {clientCertificateRef: {name: backend-client}}}\n",
    );
    let files = vec![
        (
            "gw.yaml".to_string(),
            format!(
                "{gw_yaml}---\n{}",
                client_ca.secret("default", "backend-client", &["gateway.example.com"])
            ),
        ),
        ("routes.yaml".to_string(), routes.to_string()),
        (
            "ca.yaml".to_string(),
            ca.config_map("default", "backend-ca"),
        ),
        (
            "policies.yaml".to_string(),
            ["secure", "untrusted", "passed"]
                .map(|n| backend_tls_policy(n, n, "backend.example.com", &[]))
                .join("---\n"),
        ),
        (
            "svc.yaml".to_string(),
            [
                service("default", "secure", &[secure_tls]),
                service("default", "untrusted", &[untrusted_tls]),
                service("default", "passed", &[passed.addr]),
            ]
            .join("---\n"),
        ),
    ];
    let gw = Gateway::start(&files).await;
    let all = gw.admin_json("/status").await;
    assert_policies_accepted(&all, &["secure", "untrusted", "passed"], "gw");

    // Terminated here, TLS again to the backend: it saw the policy's hostname as SNI.
    let tls = tls_connect(&ca, gw.addr(8443), "secure.term.example.com")
        .await
        .unwrap();
    let answer = tcp_test(tls).await;
    assert_eq!(answer["service"], "secure");
    assert_eq!(answer["isTLS"], true, "{answer}");
    assert_eq!(
        answer["tls"]["serverName"], "backend.example.com",
        "{answer}"
    );
    assert_eq!(
        answer["tls"]["peerCertificates"].as_array().map(Vec::len),
        Some(1),
        "the Gateway's client certificate: {answer}"
    );

    // The untrusted backend: the client's handshake with the gateway completes, then the
    // connection ends without a byte of the backend's.
    let mut tls = tls_connect(&ca, gw.addr(8443), "untrusted.term.example.com")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut got)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "bytes reached the client through an unverified backend: {got:?}"
    );

    // Passthrough: the client's TLS session is the backend's; the policy does not apply.
    let (_c, body) = passthrough_get(&ca, &gw).await;
    assert_eq!(body["service"], "passed");
    assert_eq!(body["tls"]["serverName"], "abc.pass.example.com");

    gw.metrics_with(&[
        "backend=\"default/secure:80\",decision=\"forwarded\"".into(),
        "backend=\"default/untrusted:80\",decision=\"backend_tls_failed\"".into(),
    ])
    .await;
}
