//! Test support for every crate's integration tests: a manifests folder, the real `gateway`
//! binary on its own loopback address, in-process echo backends on real sockets, test CAs and
//! clients. Tests fail loudly on what they do not expect, so this crate unwraps.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use conformance::echo::{EchoServer, Identity};

pub mod conformance_env;

/// A loopback address of its own for each gateway, so tests can run in parallel with fixed
/// listener ports. The whole of 127.0.0.0/8 routes to loopback on Linux.
pub fn unique_ip() -> IpAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Spread test binaries apart by process id, tests within one binary by a counter.
    let pid = std::process::id();
    IpAddr::V4(Ipv4Addr::new(
        127,
        10 + (pid % 200) as u8,
        (n % 250) as u8 + 1,
        1 + (pid / 200 % 250) as u8,
    ))
}

pub async fn echo(name: &str) -> EchoServer {
    echo_in("default", name).await
}

/// An echo backend serving TLS with a certificate from `ca` for `names`.
pub async fn tls_echo(name: &str, ca: &TestCa, names: &[&str]) -> EchoServer {
    let (cert, key) = ca.issue(names);
    conformance::echo::serve(
        "127.0.0.1:0".parse().unwrap(),
        Identity {
            namespace: "default".into(),
            service: name.into(),
            pod: format!("{name}-0"),
            ..Identity::default()
        },
        Some(conformance::echo::TlsFiles {
            cert_pem: cert.into_bytes(),
            key_pem: key.into_bytes(),
            client_ca_pem: None,
        }),
    )
    .await
    .expect("TLS echo backend starts")
}

pub async fn echo_in(namespace: &str, name: &str) -> EchoServer {
    conformance::echo::serve(
        "127.0.0.1:0".parse().unwrap(),
        Identity {
            namespace: namespace.into(),
            service: name.into(),
            pod: format!("{name}-0"),
            ..Identity::default()
        },
        None,
    )
    .await
    .expect("echo backend starts")
}

/// An HTTPRoute in `default` that sends everything to Service `backend` port 80. `parents` are
/// parentRefs as YAML flow mappings (`"name: gw, sectionName: foo"`); `hostnames` may be empty.
pub fn backend_route(name: &str, parents: &[&str], hostnames: &[&str], backend: &str) -> String {
    let parents: Vec<String> = parents.iter().map(|p| format!("{{{p}}}")).collect();
    let hostnames = if hostnames.is_empty() {
        String::new()
    } else {
        let quoted: Vec<String> = hostnames.iter().map(|h| format!("'{h}'")).collect();
        format!("  hostnames: [{}]\n", quoted.join(", "))
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{}]
{hostnames}  rules: [{{backendRefs: [{{name: {backend}, port: 80}}]}}]
",
        parents.join(", ")
    )
}

/// A Service with one port (80, named http) and an EndpointSlice pointing at `addrs`.
pub fn service(namespace: &str, name: &str, addrs: &[SocketAddr]) -> String {
    let port = addrs.first().map(|a| a.port()).unwrap_or(1);
    let endpoints: Vec<String> = addrs
        .iter()
        .map(|a| {
            format!(
                "- addresses: [\"{}\"]\n  conditions: {{ready: true}}",
                a.ip()
            )
        })
        .collect();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ports:
  - {{name: http, port: 80, targetPort: {port}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-abc
  namespace: {namespace}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports:
- {{name: http, port: {port}}}
endpoints:
{}
",
        endpoints.join("\n")
    )
}

pub const GATEWAY_CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
";

/// A Gateway with one HTTP listener named `http` on port 8080 allowing routes from all
/// namespaces.
pub fn http_gateway(name: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: default}}
spec:
  gatewayClassName: sluice
  listeners:
  - name: http
    protocol: HTTP
    port: 8080
    allowedRoutes: {{namespaces: {{from: All}}}}
"
    )
}

/// A running `gateway run` process.
pub struct Gateway {
    pub ip: IpAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    child: Child,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

/// The `gateway` binary cargo built for this test run: beside the `deps` folder that holds the
/// test executable (`target/debug/deps/<test>` → `target/debug/gateway`). Cargo builds it
/// before the gateway crate's integration tests; `SLUICE_GATEWAY_BIN` names another.
pub fn gateway_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("SLUICE_GATEWAY_BIN") {
            return p;
        }
        let exe = std::env::current_exe().expect("the test executable's path");
        let dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("the test executable is in target/<profile>/deps");
        let bin = dir.join("gateway");
        assert!(
            bin.exists(),
            "no gateway binary at {} (build it with cargo build -p gateway)",
            bin.display()
        );
        bin.to_string_lossy().into_owned()
    })
}

fn capture(r: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    lines
}

impl Gateway {
    /// Writes `files` into a fresh folder and starts the gateway on it; waits for `/ready`.
    pub async fn start<N: AsRef<str>>(files: &[(N, String)]) -> Gateway {
        Self::start_with(files, &[]).await
    }

    pub async fn start_with<N: AsRef<str>>(files: &[(N, String)], extra_args: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name.as_ref()), text).unwrap();
        }
        let ip = unique_ip();
        let admin = SocketAddr::new(ip, 9901);
        let mut cmd = Command::new(gateway_bin());
        // RUST_LOG wins over --log-level: a test that asks for a level gets it.
        if extra_args.contains(&"--log-level") {
            cmd.env_remove("RUST_LOG");
        } else {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd
            .arg("run")
            .arg("--manifests")
            .arg(dir.path())
            .arg("--bind")
            .arg(ip.to_string())
            .arg("--admin-addr")
            .arg(admin.to_string())
            .args(extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gateway binary starts");
        let stdout = capture(child.stdout.take().unwrap());
        let stderr = capture(child.stderr.take().unwrap());
        let gw = Gateway {
            ip,
            admin,
            dir,
            child,
            stdout,
            stderr,
        };
        gw.wait_ready().await;
        gw
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client
                .get(format!("http://{}/ready", self.admin))
                .send()
                .await
            {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready in 30 s; stderr:\n{}",
                self.stderr.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip, port)
    }

    pub fn url(&self, port: u16, path: &str) -> String {
        format!("http://{}{path}", self.addr(port))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces a manifest file atomically (write then rename), as editors and tools do.
    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.path(name)).unwrap();
    }

    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        reqwest::get(format!("http://{}{path}", self.admin))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn admin_text(&self, path: &str) -> String {
        reqwest::get(format!("http://{}{path}", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `/metrics` once it holds every one of `lines`. A request is counted when its logging
    /// phase ends, which can be just after the client has the response: polled, for at most
    /// 5 s.
    pub async fn metrics_with(&self, lines: &[String]) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let metrics = self.admin_text("/metrics").await;
            if lines.iter().all(|l| metrics.contains(l.as_str())) {
                return metrics;
            }
            assert!(
                Instant::now() < deadline,
                "not all of {lines:?} within 5 s in:\n{metrics}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn config_version(&self) -> u64 {
        self.admin_json("/config").await["version"]
            .as_u64()
            .unwrap()
    }

    /// Waits until a configuration newer than `after` is served.
    pub async fn wait_version_above(&self, after: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.config_version().await;
            if v > after {
                return v;
            }
            assert!(Instant::now() < deadline, "no reload within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the gateway has logged a line containing `needle` on stderr.
    pub async fn wait_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The first JSON line on stdout (the access log) that `pred` accepts; waits up to 10 s.
    pub async fn wait_access_log(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.stdout.lock().unwrap().clone();
            if let Some(l) = lines
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| pred(l))
            {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no access-log line for {what} in 10 s: {lines:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The status object of `kind` `namespace/name` from `/status`.
    pub async fn status_of(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> serde_json::Value {
        let all = self.admin_json("/status").await;
        find_status(&all, kind, namespace, name)
    }
}

impl Gateway {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(Instant::now() < deadline, "gateway did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn find_status(
    all: &serde_json::Value,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> serde_json::Value {
    all.as_array()
        .unwrap()
        .iter()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == name
                && o["metadata"]["namespace"].as_str() == namespace
        })
        .unwrap_or_else(|| panic!("no status for {kind} {namespace:?}/{name} in {all:#}"))
        .clone()
}

/// The condition of `type` in a conditions array, as (status, reason).
/// The status of listener `name` in a Gateway's (or ListenerSet's) status object.
/// A BackendTLSPolicy in `default` for Service `service`, trusting the ConfigMap
/// `backend-ca` ([`TestCa::config_map`]), with `hostname` and, when given, Hostname SANs.
pub fn backend_tls_policy(name: &str, service: &str, hostname: &str, sans: &[&str]) -> String {
    let sans = if sans.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = sans
            .iter()
            .map(|s| format!("{{type: Hostname, hostname: {s}}}"))
            .collect();
        format!("\n    subjectAltNames: [{}]", list.join(", "))
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  targetRefs: [{{group: \"\", kind: Service, name: {service}}}]
  validation:
    caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: backend-ca}}]
    hostname: {hostname}{sans}
"
    )
}

/// Asserts that each BackendTLSPolicy in `default` named in `policies` lists Gateway `gateway`
/// as its first ancestor, Accepted.
pub fn assert_policies_accepted(status: &serde_json::Value, policies: &[&str], gateway: &str) {
    for name in policies {
        let p = find_status(status, "BackendTLSPolicy", Some("default"), name);
        let ancestor = &p["status"]["ancestors"][0];
        assert_eq!(ancestor["ancestorRef"]["name"], gateway, "{p}");
        assert_eq!(
            condition(&ancestor["conditions"], "Accepted"),
            ("True".into(), "Accepted".into()),
            "{name}"
        );
    }
}

pub fn listener<'a>(gw: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    gw["status"]["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == name))
        .unwrap_or_else(|| panic!("no listener {name} in {gw}"))
}

pub fn condition(conds: &serde_json::Value, ty: &str) -> (String, String) {
    let c = conds
        .as_array()
        .unwrap_or_else(|| panic!("not a conditions array: {conds}"))
        .iter()
        .find(|c| c["type"] == ty)
        .unwrap_or_else(|| panic!("no {ty} condition in {conds:#}"));
    (
        c["status"].as_str().unwrap().to_string(),
        c["reason"].as_str().unwrap().to_string(),
    )
}

/// Runs `gateway status -o json` on a folder of files and returns the status list.
pub fn status_of_files<N: AsRef<str>>(files: &[(N, String)]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name.as_ref()), text).unwrap();
    }
    status_of_dir(dir.path())
}

pub fn status_of_dir(dir: &Path) -> serde_json::Value {
    gateway_json(&["status", "-o", "json"], dir)
}

/// Runs `gateway ARGS --manifests DIR`, which must succeed, and parses what it prints as JSON.
pub fn gateway_json(args: &[&str], dir: &Path) -> serde_json::Value {
    let out = Command::new(gateway_bin())
        .args(args)
        .arg("--manifests")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gateway {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A client that sends every request for `hosts` to `addr` (so Host and SNI are the names).
pub fn client_for(addr: SocketAddr, hosts: &[&str]) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    for h in hosts {
        b = b.resolve(h, addr);
    }
    b.build().unwrap()
}

/// GETs `url` and returns (status, echo JSON or null, headers).
pub async fn get_json(
    client: &reqwest::Client,
    url: &str,
) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    get_json_with(client, url, &[]).await
}

/// `get_json` with request headers.
pub async fn get_json_with(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        headers,
    )
}

/// A CA and certificates it signs, for HTTPS listeners.
pub struct TestCa {
    pub cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sluice test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM) for `names`.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A kubernetes.io/tls Secret for `names`.
    pub fn secret(&self, namespace: &str, name: &str, names: &[&str]) -> String {
        let (cert, key) = self.issue(names);
        let indent = |s: &str| {
            s.lines()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        format!(
            "apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: {namespace}}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{}
  tls.key: |
{}
",
            indent(&cert),
            indent(&key)
        )
    }

    /// A ConfigMap with this CA's certificate as `ca.crt`, as BackendTLSPolicies reference.
    pub fn config_map(&self, namespace: &str, name: &str) -> String {
        let cert: Vec<String> = self.cert_pem.lines().map(|l| format!("    {l}")).collect();
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {namespace}}}\ndata:\n  ca.crt: |\n{}\n",
            cert.join("\n")
        )
    }

    pub fn reqwest_cert(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).unwrap()
    }

    /// A rustls client configuration that trusts this CA only.
    pub fn rustls_client_config(&self) -> Arc<rustls::ClientConfig> {
        rustls_client_config(&self.cert_pem)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// Opens a WebSocket to `addr` with `host` and `path`, sends `message` and returns the echo.
pub async fn websocket_echo(
    addr: SocketAddr,
    host: &str,
    path: &str,
    message: &str,
) -> Result<String, String> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{host}{path}"), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    if resp.status() != 101 {
        return Err(format!("status {}", resp.status()));
    }
    ws.send(Message::text(message))
        .await
        .map_err(|e| e.to_string())?;
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .map_err(|_| "no echo in 5 s".to_string())?
        .ok_or("closed")?
        .map_err(|e| e.to_string())?;
    let _ = ws.close(None).await;
    Ok(reply.into_text().map_err(|e| e.to_string())?.to_string())
}

/// A rustls client configuration (ring provider) that trusts the certificates in `ca_pem`.
pub fn rustls_client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}
