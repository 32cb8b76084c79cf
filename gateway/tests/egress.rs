//! The egress gateway through the real binary: allow-lists for HTTP (absolute form) and CONNECT,
//! wildcard depth, IP-literal and Host/SNI mismatch refusal, audit mode, live policy changes
//! and the explain command. Destinations are local servers reached through static endpoints.
#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

use std::net::SocketAddr;
use std::sync::Arc;

use sluice_testing::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn policy(http: SocketAddr, tls: SocketAddr, extra_rule: &str) -> String {
    format!(
        "apiVersion: policy.sluice.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: outbound, namespace: default}}
spec:
  sources: [{{cidr: 127.0.0.0/8}}]
  rules:
  - name: api
    hosts: [api.example.test]
    ports: [80]
    protocols: [HTTP]
    staticEndpoints: ['{http}']
  - name: secure
    hosts: ['*.secure.test']
    ports: [443]
    protocols: [HTTPS]
    staticEndpoints: ['{tls}']
  - name: audited
    action: Audit
    hosts: [audited.test]
    staticEndpoints: ['{http}']
{extra_rule}"
    )
}

struct Egress {
    gw: Gateway,
    proxy: SocketAddr,
    ca: TestCa,
    http: EchoServer,
}

async fn start(extra_rule: &str) -> Egress {
    let ca = TestCa::new();
    let http = echo("api").await;
    let tls = tls_echo("secure", &ca, &["www.secure.test", "other.secure.test"]).await;
    let ip = unique_ip();
    let proxy = SocketAddr::new(ip, 3128);
    let gw = Gateway::start_with(
        &[("egress.yaml", policy(http.addr, tls.addr, extra_rule))],
        &["--egress-listen", &proxy.to_string()],
    )
    .await;
    // The proxy listens once the gateway is ready; the first connection proves it.
    Egress {
        gw,
        proxy,
        ca,
        http,
    }
}

fn proxied(e: &Egress) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", e.proxy)).unwrap())
        .tls_built_in_root_certs(false)
        .add_root_certificate(e.ca.reqwest_cert())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn http_and_connect_allow_lists() {
    let e = start("").await;
    let c = proxied(&e);
    // Allowed plain HTTP in absolute form, sent to the static endpoint.
    let r = c.get("http://api.example.test/hello").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (body["service"].as_str(), body["path"].as_str()),
        (Some("api"), Some("/hello"))
    );
    assert_eq!(body["host"], "api.example.test");
    // Denied: another name, another port, and the allowed name over HTTPS (not allowed).
    let r = c.get("http://evil.example.test/").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers()["x-sluice-egress-reason"]
        .to_str()
        .unwrap()
        .starts_with("denied"));
    assert_eq!(
        c.get("http://api.example.test:8080/")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert!(c.get("https://api.example.test/").send().await.is_err());

    // CONNECT to a wildcard name: TLS end to end with the destination's certificate.
    let r = c
        .get("https://www.secure.test/tunnel")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["service"], "secure");
    assert_eq!(body["tls"]["serverName"], "www.secure.test");
    // `*.secure.test` does not allow `secure.test`.
    assert!(c.get("https://secure.test/").send().await.is_err());

    // IP literals need a CIDR rule, even when the IP is where an allowed name points.
    let r = c
        .get(format!("http://{}/", e.http.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers()["x-sluice-egress-reason"]
        .to_str()
        .unwrap()
        .contains("IP"));

    // Every decision is counted.
    let metrics = e.gw.admin_text("/metrics").await;
    assert!(metrics.contains(r#"sluice_egress_decisions_total{decision="allowed",policy="default/outbound",rule="api"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"decision="denied""#), "{metrics}");
}

/// Absolute-form with a Host header naming another destination, and a CONNECT tunnel whose TLS
/// ClientHello names another host, are refused.
#[tokio::test(flavor = "multi_thread")]
async fn host_and_sni_mismatch_are_refused() {
    let e = start("").await;
    // Host header mismatch.
    let mut s = tokio::net::TcpStream::connect(e.proxy).await.unwrap();
    s.write_all(b"GET http://api.example.test/ HTTP/1.1\r\nHost: evil.example.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");

    // CONNECT www.secure.test, then a ClientHello for other.secure.test (also allowed by the
    // wildcard, and covered by the destination's certificate): refused all the same.
    let handshake = |sni: &'static str| {
        let ca = e.ca.cert_pem.clone();
        let proxy = e.proxy;
        async move {
            let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
            s.write_all(
                b"CONNECT www.secure.test:443 HTTP/1.1\r\nHost: www.secure.test:443\r\n\r\n",
            )
            .await
            .unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
            tokio_rustls::TlsConnector::from(rustls_client_config(&ca))
                .connect(sni.try_into().unwrap(), s)
                .await
                .map(|_| ())
        }
    };
    assert!(handshake("www.secure.test").await.is_ok());
    assert!(handshake("other.secure.test").await.is_err());

    // The refused tunnel is recorded as denied, with its reason, in the access log and the
    // metric; the matching one as allowed. The metric has no per-destination series.
    let refused =
        e.gw.wait_access_log("the refused tunnel", |l| {
            l["egress"] == "connect" && l["decision"] == "denied"
        })
        .await;
    assert_eq!(refused["destination"], "www.secure.test:443");
    let reason = refused["reason"].as_str().unwrap();
    assert!(
        reason.contains("other.secure.test") && reason.contains("does not match the CONNECT host"),
        "{reason}"
    );
    let metrics = e.gw.admin_text("/metrics").await;
    assert!(metrics.contains(r#"sluice_egress_decisions_total{decision="denied",policy="default/outbound",rule="secure"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"sluice_egress_decisions_total{decision="allowed",policy="default/outbound",rule="secure"} 1"#), "{metrics}");
    assert!(!metrics.contains("destination="), "{metrics}");
}

/// A ClientHello split across TLS records cannot hide its server name from the CONNECT check:
/// a first record without the whole ClientHello is refused, whatever the rest says.
#[tokio::test(flavor = "multi_thread")]
async fn split_client_hello_in_a_tunnel_is_refused() {
    let e = start("").await;
    // The ClientHello a real client sends for other.secure.test.
    let name = rustls::pki_types::ServerName::try_from("other.secure.test").unwrap();
    let mut conn = rustls::ClientConnection::new(e.ca.rustls_client_config(), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    assert_eq!(hello[0], 22, "a handshake record");
    // The same handshake message in two records: 40 bytes, then the rest.
    let body = &hello[5..];
    let record = |part: &[u8]| {
        let mut r = vec![22, hello[1], hello[2]];
        r.extend_from_slice(&(part.len() as u16).to_be_bytes());
        r.extend_from_slice(part);
        r
    };
    let mut split = record(&body[..40]);
    split.extend(record(&body[40..]));

    let mut s = tokio::net::TcpStream::connect(e.proxy).await.unwrap();
    s.write_all(b"CONNECT www.secure.test:443 HTTP/1.1\r\nHost: www.secure.test:443\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    s.write_all(&split).await.unwrap();
    // The tunnel closes without a byte from the destination.
    let mut rest = Vec::new();
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the tunnel closes");
    assert!(
        got.is_err() || rest.is_empty(),
        "{} bytes came back",
        rest.len()
    );

    let l =
        e.gw.wait_access_log("the refused tunnel", |l| {
            l["egress"] == "connect" && l["decision"] == "denied"
        })
        .await;
    let reason = l["reason"].as_str().unwrap();
    assert!(reason.contains("names no server"), "{reason}");
}

/// Audit rules allow and say so in the access log.
#[tokio::test(flavor = "multi_thread")]
async fn audit_rules_allow_and_log() {
    let e = start("").await;
    let r = proxied(&e)
        .get("http://audited.test/x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let l =
        e.gw.wait_access_log("the audited request", |l| {
            l["destination"] == "audited.test:80"
        })
        .await;
    assert_eq!(l["decision"], "audit");
    assert_eq!(l["rule"], "audited");
    assert_eq!(l["policy"], "default/outbound");
}

/// A policy change applies live; a policy that becomes invalid reports the field in its status
/// and the log, and its last valid version stays in force.
#[tokio::test(flavor = "multi_thread")]
async fn policies_reload_live() {
    let e = start("").await;
    let c = proxied(&e);
    assert_eq!(
        c.get("http://new.example.test/")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let v = e.gw.config_version().await;
    let tls_addr = "127.0.0.1:9"; // not used by this test
    let text = policy(
        e.http.addr,
        tls_addr.parse().unwrap(),
        "  - name: new\n    hosts: [new.example.test]\n",
    );
    e.gw.write("egress.yaml", &text);
    let v = e.gw.wait_version_above(v).await;
    assert_eq!(
        c.get("http://new.example.test/")
            .send()
            .await
            .unwrap()
            .status(),
        502,
        "allowed now; DNS cannot resolve it"
    );
    e.gw.write(
        "egress.yaml",
        &text.replace("hosts: [new.example.test]", "hosts: ['bad host']"),
    );
    let line = e.gw.wait_stderr("bad host").await;
    assert!(
        line.contains("EgressPolicy default/outbound") && line.contains(".spec.rules[3].hosts[0]"),
        "{line}"
    );
    e.gw.wait_version_above(v).await;
    let st =
        e.gw.status_of("EgressPolicy", Some("default"), "outbound")
            .await;
    assert_eq!(
        condition(&st["status"]["conditions"], "Accepted"),
        ("False".into(), "Invalid".into())
    );
    let msg = st["status"]["conditions"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains(".spec.rules[3].hosts[0]") && msg.contains("last valid generation 2"),
        "{msg}"
    );
    // The last valid version (generation 2, with the `new` rule) is still enforced.
    for (url, code) in [
        ("http://api.example.test/", 200),
        ("http://new.example.test/", 502),
        ("http://evil.example.test/", 403),
    ] {
        assert_eq!(c.get(url).send().await.unwrap().status(), code, "{url}");
    }
}

/// Every EgressPolicy has a status. One that was never valid is not enforced and says so;
/// the valid ones keep deciding.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_policy_is_reported_and_the_others_keep_deciding() {
    let http = echo("api").await;
    let ip = unique_ip();
    let proxy = SocketAddr::new(ip, 3128);
    let broken = "apiVersion: policy.sluice.dev/v1alpha1
kind: EgressPolicy
metadata: {name: broken, namespace: default}
spec:
  rules:
  - name: partners
    cidrs: [10.0.0.0/33]
";
    let gw = Gateway::start_with(
        &[
            (
                "egress.yaml",
                policy(http.addr, "127.0.0.1:9".parse().unwrap(), ""),
            ),
            ("broken.yaml", broken.to_string()),
        ],
        &["--egress-listen", &proxy.to_string()],
    )
    .await;
    let good = gw
        .status_of("EgressPolicy", Some("default"), "outbound")
        .await;
    assert_eq!(
        condition(&good["status"]["conditions"], "Accepted"),
        ("True".into(), "Accepted".into())
    );
    let bad = gw
        .status_of("EgressPolicy", Some("default"), "broken")
        .await;
    assert_eq!(
        condition(&bad["status"]["conditions"], "Accepted"),
        ("False".into(), "Invalid".into())
    );
    let msg = bad["status"]["conditions"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains(".spec.rules[0].cidrs[0]") && msg.contains("not enforced"),
        "{msg}"
    );
    let warnings = gw.admin_json("/warnings").await;
    assert!(
        warnings["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["object"] == "EgressPolicy default/broken"),
        "{warnings}"
    );
    let c = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap())
        .build()
        .unwrap();
    let r = c.get("http://api.example.test/").send().await.unwrap();
    assert_eq!(r.status(), 200, "the valid policy still allows");
    let r = c.get("http://evil.example.test/").send().await.unwrap();
    assert_eq!(r.status(), 403);
}

/// `gateway egress check` explains decisions without traffic.
#[tokio::test(flavor = "multi_thread")]
async fn explain_command() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        policy(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            "",
        ),
    )
    .unwrap();
    let check = |to: &str, protocol: &str| {
        std::process::Command::new(gateway_bin())
            .args([
                "egress",
                "check",
                "--from",
                "127.0.0.1",
                "--to",
                to,
                "--protocol",
                protocol,
                "--manifests",
            ])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = check("www.secure.test:443", "HTTPS");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("ALLOWED: 127.0.0.1 -> www.secure.test:443"),
        "{text}"
    );
    assert!(
        text.contains("by EgressPolicy default/outbound, rule secure"),
        "{text}"
    );
    assert!(text.contains("static endpoints 127.0.0.1:2"), "{text}");
    let out = check("secure.test:443", "HTTPS");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("DENIED"));
    let out = check("audited.test:80", "HTTP");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ALLOWED (audit)"));
}

/// The TLS passthrough listener decides on the SNI without terminating TLS.
#[tokio::test(flavor = "multi_thread")]
async fn tls_passthrough_by_sni() {
    let ca = TestCa::new();
    let http = echo("api").await;
    let tls = tls_echo("secure", &ca, &["www.secure.test"]).await;
    let ip = unique_ip();
    let sni_addr = SocketAddr::new(ip, 443);
    let gw = Gateway::start_with(
        &[("egress.yaml", policy(http.addr, tls.addr, ""))],
        &["--egress-tls-listen", &sni_addr.to_string()],
    )
    .await;
    let client = |name: &str| {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca.reqwest_cert())
            .resolve(name, sni_addr)
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap()
    };
    let r = client("www.secure.test")
        .get("https://www.secure.test/sni")
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (body["service"].as_str(), body["tls"]["serverName"].as_str()),
        (Some("secure"), Some("www.secure.test"))
    );
    // Not allowed: the connection is closed before any TLS answer.
    assert!(client("evil.test")
        .get("https://evil.test/")
        .send()
        .await
        .is_err());
    let metrics = gw.admin_text("/metrics").await;
    assert!(
        metrics.contains(r#"sluice_egress_decisions_total{decision="denied",policy="",rule=""} 1"#),
        "{metrics}"
    );
}

/// Policy changes under load: allowed requests never fail while the policies change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn policy_changes_under_load_fail_no_allowed_request() {
    let e = start("").await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (stop, failures, ok) = (stop.clone(), failures.clone(), ok.clone());
        let c = proxied(&e);
        tasks.push(tokio::spawn(async move {
            for _ in 0..50_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match c.get("http://api.example.test/load").send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("status {}", r.status())),
                    Err(err) => failures.lock().unwrap().push(err.to_string()),
                }
            }
        }));
    }
    let mut v = e.gw.config_version().await;
    for i in 0..15 {
        let extra = format!("  - name: extra-{i}\n    hosts: [extra-{i}.example.test]\n");
        e.gw.write(
            "egress.yaml",
            &policy(e.http.addr, "127.0.0.1:9".parse().unwrap(), &extra),
        );
        v = e.gw.wait_version_above(v).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed, first {:?}",
        failures.len(),
        failures.first()
    );
    assert!(ok.load(std::sync::atomic::Ordering::Relaxed) > 50);
}

/// TLS origination: plain HTTP in, TLS out with the requested name as SNI, verified against the
/// CA named by the rule.
#[tokio::test(flavor = "multi_thread")]
async fn tls_origination() {
    let ca = TestCa::new();
    let other_ca = TestCa::new();
    let tls = tls_echo("secure", &ca, &["www.secure.test", "bad.secure.test"]).await;
    let indent = |s: &str| {
        s.lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let cms = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: egress-ca, namespace: default}}\ndata:\n  ca.crt: |\n{}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: wrong-ca, namespace: default}}\ndata:\n  ca.crt: |\n{}\n",
        indent(&ca.cert_pem),
        indent(&other_ca.cert_pem)
    );
    let policy = format!(
        "apiVersion: policy.sluice.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: originate, namespace: default}}
spec:
  rules:
  - name: good
    hosts: [www.secure.test]
    protocols: [HTTP]
    staticEndpoints: ['{0}']
    tlsOrigination: {{caCertificateRefs: [{{name: egress-ca}}]}}
  - name: untrusted
    hosts: [bad.secure.test]
    protocols: [HTTP]
    staticEndpoints: ['{0}']
    tlsOrigination: {{caCertificateRefs: [{{name: wrong-ca}}]}}
",
        tls.addr
    );
    let ip = unique_ip();
    let proxy = SocketAddr::new(ip, 3128);
    let gw = Gateway::start_with(
        &[("cm.yaml", cms), ("policy.yaml", policy)],
        &["--egress-listen", &proxy.to_string()],
    )
    .await;
    let c = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{proxy}")).unwrap())
        .build()
        .unwrap();
    let r = c
        .get("http://www.secure.test/originated")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["tls"]["serverName"], "www.secure.test");
    assert_eq!(body["path"], "/originated");
    // A destination whose certificate the rule's CA did not sign is not reached.
    assert_eq!(
        c.get("http://bad.secure.test/")
            .send()
            .await
            .unwrap()
            .status(),
        502
    );
    drop(gw);
}

/// SIGTERM drains the egress listener like the Gateway listeners: a request in flight through
/// it finishes, new connections are refused, and the process exits.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_the_egress_listener() {
    let mut e = start("").await;
    let c = proxied(&e);
    let slow = tokio::spawn(async move {
        c.get("http://api.example.test/slow?delay=1s")
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while e.http.count("/slow") < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the request never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &e.gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The egress listener closes: new connections are refused while the request finishes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::net::TcpStream::connect(e.proxy).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the egress listener still accepts after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        slow.await.unwrap().unwrap(),
        200,
        "the request in flight finishes"
    );
    assert_eq!(e.gw.wait_exit(std::time::Duration::from_secs(15)), Some(0));
}
