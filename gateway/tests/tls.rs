//! HTTPS listeners: TLS termination with certificates from Secrets, SNI selection among
//! listeners sharing a port, HTTP/2 by ALPN, and HTTP beside HTTPS.
#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

use sluice_testing::*;

fn https_gateway() -> String {
    "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: sluice
  listeners:
  - name: foo
    protocol: HTTPS
    port: 8443
    hostname: foo.example.com
    tls: {certificateRefs: [{name: foo-cert}]}
  - name: wild
    protocol: HTTPS
    port: 8443
    hostname: '*.example.com'
    tls: {certificateRefs: [{name: wild-cert}]}
  - name: plain
    protocol: HTTP
    port: 8080
"
    .to_string()
}

fn routes() -> String {
    format!(
        "{}---\n{}",
        backend_route("foo", &["name: gw, sectionName: foo"], &[], "foo"),
        backend_route(
            "wild",
            &[
                "name: gw, sectionName: wild",
                "name: gw, sectionName: plain"
            ],
            &[],
            "wild"
        )
    )
}

/// The HTTPS Gateway above, with foo-cert issued by `foo_ca` and wild-cert by `wild_ca`, and
/// its two echo backends.
async fn start_https(foo_ca: &TestCa, wild_ca: &TestCa) -> (Gateway, EchoServer, EchoServer) {
    let foo_echo = echo("foo").await;
    let wild_echo = echo("wild").await;
    let gw = Gateway::start(&[
        (
            "gw.yaml",
            format!("{GATEWAY_CLASS}---\n{}", https_gateway()),
        ),
        ("routes.yaml", routes()),
        (
            "foo-cert.yaml",
            foo_ca.secret("default", "foo-cert", &["foo.example.com"]),
        ),
        (
            "wild-cert.yaml",
            wild_ca.secret("default", "wild-cert", &["*.example.com"]),
        ),
        (
            "svc.yaml",
            format!(
                "{}---\n{}",
                service("default", "foo", &[foo_echo.addr]),
                service("default", "wild", &[wild_echo.addr])
            ),
        ),
    ])
    .await;
    (gw, foo_echo, wild_echo)
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_selects_certificate_and_listener() {
    let ca = TestCa::new();
    let (gw, _foo, _wild) = start_https(&ca, &ca).await;
    // HTTP/1.1 over TLS: the certificate verifies for each name and the request reaches the
    // listener's route.
    let c1 = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca.reqwest_cert())
        .resolve("foo.example.com", gw.addr(8443))
        .resolve("bar.example.com", gw.addr(8443))
        .http1_only()
        .build()
        .unwrap();
    let r = c1
        .get("https://foo.example.com:8443/a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["service"], "foo");
    assert_eq!(
        body["headers"]["X-Forwarded-Proto"],
        serde_json::json!(["https"])
    );
    // The client address reaches the backend through the TLS layer too.
    assert_eq!(
        body["headers"]["X-Forwarded-For"],
        serde_json::json!(["127.0.0.1"])
    );
    let r = c1
        .get("https://bar.example.com:8443/b")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["service"],
        "wild"
    );

    // Keep-alive over TLS: the second request reuses the connection (no new connect) and is
    // answered, also after the gateway waited for it between requests.
    let ca_file = gw.path("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let out = std::process::Command::new("curl")
        .args(["--http1.1", "-s", "--cacert"])
        .arg(&ca_file)
        .args(["--resolve", &format!("foo.example.com:8443:{}", gw.ip)])
        .args(["-w", " %{http_code}:%{num_connects}\n"])
        .args([
            "https://foo.example.com:8443/one",
            "https://foo.example.com:8443/two",
        ])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let codes: Vec<&str> = text.lines().filter_map(|l| l.rsplit(' ').next()).collect();
    assert_eq!(codes, ["200:1", "200:0"], "{text}");

    // HTTP/2 negotiated by ALPN.
    let c2 = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca.reqwest_cert())
        .resolve("foo.example.com", gw.addr(8443))
        .build()
        .unwrap();
    let r = c2
        .get("https://foo.example.com:8443/h2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["service"], "foo");
    assert_eq!(body["host"], "foo.example.com:8443");

    // Plain HTTP on the other port of the same Gateway.
    let c = client_for(gw.addr(8080), &["x.example.com"]);
    let (code, body, _) = get_json(&c, "http://x.example.com:8080/").await;
    assert_eq!((code, body["service"].as_str()), (200, Some("wild")));
}

/// The certificate presented for foo.example.com is foo-cert, not the wildcard: a client that
/// trusts only the exact certificate's CA chain for that name still succeeds, and the wildcard
/// certificate (issued by another CA) is used for other names.
#[tokio::test(flavor = "multi_thread")]
async fn exact_listener_certificate_wins_over_wildcard() {
    let ca_foo = TestCa::new();
    let ca_wild = TestCa::new();
    let (gw, _foo, _wild) = start_https(&ca_foo, &ca_wild).await;
    let only = |ca: &TestCa| {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca.reqwest_cert())
            .resolve("foo.example.com", gw.addr(8443))
            .resolve("bar.example.com", gw.addr(8443))
            .build()
            .unwrap()
    };
    assert!(only(&ca_foo)
        .get("https://foo.example.com:8443/")
        .send()
        .await
        .is_ok());
    assert!(only(&ca_wild)
        .get("https://foo.example.com:8443/")
        .send()
        .await
        .is_err());
    assert!(only(&ca_wild)
        .get("https://bar.example.com:8443/")
        .send()
        .await
        .is_ok());
    assert!(only(&ca_foo)
        .get("https://bar.example.com:8443/")
        .send()
        .await
        .is_err());
}

/// A certificate reference that does not resolve: the listener is not programmed and says why;
/// the rest of the Gateway keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn missing_certificate_secret() {
    let wild = echo("wild").await;
    let ca = TestCa::new();
    let gw = Gateway::start(&[
        (
            "gw.yaml",
            format!("{GATEWAY_CLASS}---\n{}", https_gateway()),
        ),
        ("routes.yaml", routes()),
        (
            "wild-cert.yaml",
            ca.secret("default", "wild-cert", &["*.example.com"]),
        ),
        ("svc.yaml", service("default", "wild", &[wild.addr])),
    ])
    .await;
    let st = gw.status_of("Gateway", Some("default"), "gw").await;
    let listeners = st["status"]["listeners"].as_array().unwrap();
    let foo = listeners.iter().find(|l| l["name"] == "foo").unwrap();
    assert_eq!(
        condition(&foo["conditions"], "ResolvedRefs"),
        ("False".into(), "InvalidCertificateRef".into())
    );
    assert_eq!(condition(&foo["conditions"], "Programmed").0, "False");
    assert_eq!(
        condition(&st["status"]["conditions"], "Accepted"),
        ("True".into(), "ListenersNotValid".into())
    );
    // foo.example.com is now served by the wildcard listener.
    let c = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca.reqwest_cert())
        .resolve("foo.example.com", gw.addr(8443))
        .build()
        .unwrap();
    let r = c.get("https://foo.example.com:8443/").send().await.unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["service"],
        "wild"
    );
}

/// The certificate an HTTPS request to `host` was answered with (DER), and the backend.
async fn served_certificate(gw: &Gateway, ca: &TestCa, host: &str) -> (Vec<u8>, String) {
    let c = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca.reqwest_cert())
        .tls_info(true)
        .resolve(host, gw.addr(8443))
        .build()
        .unwrap();
    let r = c.get(format!("https://{host}:8443/")).send().await.unwrap();
    let der = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .expect("a peer certificate");
    let body: serde_json::Value = r.json().await.unwrap();
    (der, body["service"].as_str().unwrap_or("").to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_secret_on_reload_keeps_the_last_valid_certificate() {
    let ca = TestCa::new();
    let (gw, _foo, _wild) = start_https(&ca, &ca).await;
    let (before, svc) = served_certificate(&gw, &ca, "foo.example.com").await;
    assert_eq!(svc, "foo");

    // A reload where foo-cert's key does not belong to its certificate.
    let (cert, _) = ca.issue(&["foo.example.com"]);
    let (_, other_key) = ca.issue(&["foo.example.com"]);
    let indent = |s: &str| {
        s.lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let v = gw.config_version().await;
    gw.write(
        "foo-cert.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: foo-cert, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}\n  tls.key: |\n{}\n",
            indent(&cert),
            indent(&other_key)
        ),
    );
    gw.wait_version_above(v).await;

    // HTTPS keeps answering on that listener with the previous certificate.
    let (after, svc) = served_certificate(&gw, &ca, "foo.example.com").await;
    assert_eq!(svc, "foo", "the foo listener still serves its routes");
    assert_eq!(after, before, "the last valid certificate is served");

    // Status and warnings report the Secret's problem.
    let st = gw.status_of("Gateway", Some("default"), "gw").await;
    let foo = listener(&st, "foo");
    assert_eq!(
        condition(&foo["conditions"], "ResolvedRefs"),
        ("False".into(), "InvalidCertificateRef".into())
    );
    assert_eq!(condition(&foo["conditions"], "Programmed").0, "True");
    let msg = foo["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ResolvedRefs")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("last valid certificate"), "{msg}");
    let warnings = gw.admin_json("/warnings").await;
    assert!(
        warnings["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["object"] == "Secret default/foo-cert"
                && w["message"].as_str().unwrap().contains("last valid")),
        "{warnings}"
    );

    // A valid Secret again: its new certificate is served.
    let v = gw.config_version().await;
    gw.write(
        "foo-cert.yaml",
        &ca.secret("default", "foo-cert", &["foo.example.com"]),
    );
    gw.wait_version_above(v).await;
    let (renewed, svc) = served_certificate(&gw, &ca, "foo.example.com").await;
    assert_eq!(svc, "foo");
    assert_ne!(renewed, before, "the renewed certificate is served");
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_never_valid_leaves_the_listener_unserved() {
    let wild = echo("wild").await;
    let ca = TestCa::new();
    let gw = Gateway::start(&[
        (
            "gw.yaml",
            format!("{GATEWAY_CLASS}---\n{}", https_gateway()),
        ),
        ("routes.yaml", routes()),
        (
            "foo-cert.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: foo-cert, namespace: default}\ntype: kubernetes.io/tls\nstringData: {tls.crt: not a certificate, tls.key: not a key}\n".to_string(),
        ),
        (
            "wild-cert.yaml",
            ca.secret("default", "wild-cert", &["*.example.com"]),
        ),
        ("svc.yaml", service("default", "wild", &[wild.addr])),
    ])
    .await;
    let st = gw.status_of("Gateway", Some("default"), "gw").await;
    let foo = listener(&st, "foo");
    assert_eq!(
        condition(&foo["conditions"], "ResolvedRefs"),
        ("False".into(), "InvalidCertificateRef".into())
    );
    assert_eq!(condition(&foo["conditions"], "Programmed").0, "False");
    // foo.example.com falls to the wildcard listener.
    let (_, svc) = served_certificate(&gw, &ca, "foo.example.com").await;
    assert_eq!(svc, "wild");
}
