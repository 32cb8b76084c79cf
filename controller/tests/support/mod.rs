//! Test support for the controller against a real API server (`scripts/cluster.sh up
//! --api-only`, which `scripts/test.sh` starts): the kube-rs client and kubectl, the real
//! controller and gateway binaries as processes, echo backends on the cluster's backend
//! address. Each test has its own controller name, GatewayClass, namespace and address pool,
//! so tests run in parallel on one API server without seeing each other.
#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::Api;

pub fn kubeconfig() -> PathBuf {
    let path = std::env::var("SLUICE_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/sluice/cluster/run/kubeconfig")
        });
    assert!(
        path.exists(),
        "no API server: these tests need one; start it with `scripts/cluster.sh up --api-only` \
         (scripts/test.sh does) or set SLUICE_KUBECONFIG ({} is missing)",
        path.display()
    );
    path
}

/// The address the cluster script puts on a bridge of its own for endpoints (the API server
/// refuses loopback endpoint addresses).
pub fn backend_ip() -> IpAddr {
    std::env::var("SLUICE_BACKEND_ADDR")
        .unwrap_or_else(|_| "10.244.1.1".into())
        .parse()
        .expect("SLUICE_BACKEND_ADDR is an IP address")
}

pub async fn client() -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig()).expect("kubeconfig reads");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig is usable");
    kube::Client::try_from(config).expect("client")
}

fn kubectl_bin() -> String {
    if let Ok(k) = std::env::var("SLUICE_KUBECTL") {
        return k;
    }
    let cached = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/sluice/cluster/bin/v1.34.4/kubectl");
    if cached.exists() {
        return cached.to_string_lossy().into_owned();
    }
    "kubectl".into()
}

/// Runs kubectl with `stdin`; panics with its output when it fails.
pub fn kubectl(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn apply(yaml: &str) {
    kubectl(&["apply", "-f", "-"], yaml);
}

/// Polls `check` every 50 ms until it gives a value, for at most `secs` seconds.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not after {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn resource(kind: &str) -> ApiResource {
    let (group, version, plural) = match kind {
        "GatewayClass" => ("gateway.networking.k8s.io", "v1", "gatewayclasses"),
        "Gateway" => ("gateway.networking.k8s.io", "v1", "gateways"),
        "HTTPRoute" => ("gateway.networking.k8s.io", "v1", "httproutes"),
        "GRPCRoute" => ("gateway.networking.k8s.io", "v1", "grpcroutes"),
        "TLSRoute" => ("gateway.networking.k8s.io", "v1", "tlsroutes"),
        "TCPRoute" => ("gateway.networking.k8s.io", "v1", "tcproutes"),
        "UDPRoute" => ("gateway.networking.k8s.io", "v1", "udproutes"),
        "Lease" => ("coordination.k8s.io", "v1", "leases"),
        "ServiceAccount" => ("", "v1", "serviceaccounts"),
        "Service" => ("", "v1", "services"),
        "ConfigMap" => ("", "v1", "configmaps"),
        "Deployment" => ("apps", "v1", "deployments"),
        "PodDisruptionBudget" => ("policy", "v1", "poddisruptionbudgets"),
        other => panic!("no resource for {other}"),
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// An object as JSON, or None when it does not exist.
pub async fn get(kind: &str, namespace: Option<&str>, name: &str) -> Option<serde_json::Value> {
    let client = client().await;
    let ar = resource(kind);
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    };
    let o = api.get_opt(name).await.expect("API server answers")?;
    Some(serde_json::to_value(o).unwrap())
}

/// Waits until an object no longer exists.
pub async fn wait_deleted(kind: &str, namespace: &str, name: &str) {
    wait_for(
        20,
        &format!("{kind} {namespace}/{name} deleted"),
        || async {
            get(kind, Some(namespace), name)
                .await
                .is_none()
                .then_some(())
        },
    )
    .await
}

/// `(status, reason)` of condition `ty` in a conditions list.
pub fn condition(conds: &serde_json::Value, ty: &str) -> Option<(String, String)> {
    conds.as_array()?.iter().find(|c| c["type"] == ty).map(|c| {
        (
            c["status"].as_str().unwrap_or("").to_string(),
            c["reason"].as_str().unwrap_or("").to_string(),
        )
    })
}

/// A test's own corner of the cluster.
pub struct Scope {
    pub name: String,
    pub namespace: String,
    pub controller_name: String,
    pub class: String,
    /// Addresses handed to this test's Gateways.
    pub pool: String,
}

impl Scope {
    /// `n` picks the address pool (127.0.`n`.0/24): unique per test. Names carry the test
    /// process's id: an API server without kube-controller-manager never finishes deleting a
    /// namespace, so a later run on the same server must not reuse one.
    pub fn new(name: &str, n: u8) -> Scope {
        let run = std::process::id();
        let s = Scope {
            name: name.to_string(),
            namespace: format!("t-{name}-{run}"),
            controller_name: format!("sluice.dev/test-{name}-{run}"),
            class: format!("sluice-test-{name}-{run}"),
            pool: format!("127.0.{n}.0/24"),
        };
        apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {}}}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {}}}\n\
             spec: {{controllerName: {}}}\n",
            s.namespace, s.class, s.controller_name
        ));
        s
    }

    /// The first address of the pool, which the first Gateway gets.
    pub fn first_address(&self) -> IpAddr {
        let base = self.pool.trim_end_matches(".0/24");
        format!("{base}.1").parse().unwrap()
    }

    pub fn gateway(&self, name: &str, listeners: &str) -> String {
        self.gateway_of_class(name, listeners, &self.class)
    }

    /// A Gateway of another GatewayClass (one that is not ours, say).
    pub fn gateway_of_class(&self, name: &str, listeners: &str, class: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {{name: {name}, namespace: {}}}\n\
             spec:\n  gatewayClassName: {class}\n  listeners:\n{listeners}",
            self.namespace
        )
    }

    /// A Service (port 80) and its EndpointSlice `<name>-abc` at `addrs`.
    pub fn service(&self, name: &str, addrs: &[SocketAddr]) -> String {
        sluice_testing::service(&self.namespace, name, addrs)
    }

    pub fn route(&self, name: &str, gateway: &str, backend: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: {name}, namespace: {}}}\n\
             spec:\n  parentRefs: [{{name: {gateway}}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /{name}}}}}]\n    backendRefs: [{{name: {backend}, port: 80}}]\n",
            self.namespace
        )
    }

    pub async fn gateway_status(&self, name: &str) -> serde_json::Value {
        get("Gateway", Some(&self.namespace), name)
            .await
            .map(|g| g["status"].clone())
            .unwrap_or_default()
    }

    /// Waits until Gateway `name` is Programmed and has an address; returns the address.
    pub async fn programmed(&self, name: &str) -> IpAddr {
        wait_for(20, &format!("Gateway {name} Programmed"), || async {
            let st = self.gateway_status(name).await;
            let programmed = condition(&st["conditions"], "Programmed")?;
            (programmed.0 == "True").then_some(())?;
            st["addresses"][0]["value"].as_str()?.parse().ok()
        })
        .await
    }

    /// Waits until route `name`'s entry of our controller has `ty` with `status`/`reason`.
    pub async fn route_condition(&self, name: &str, ty: &str, status: &str, reason: &str) {
        let want = (status.to_string(), reason.to_string());
        wait_for(
            20,
            &format!("HTTPRoute {name} {ty}={status} ({reason})"),
            || async {
                let r = get("HTTPRoute", Some(&self.namespace), name).await?;
                let parent = r["status"]["parents"]
                    .as_array()?
                    .iter()
                    .find(|p| p["controllerName"] == self.controller_name.as_str())?
                    .clone();
                (condition(&parent["conditions"], ty)? == want).then_some(())
            },
        )
        .await
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        for args in [
            vec![
                "delete",
                "namespace",
                &self.namespace,
                "--wait=false",
                "--ignore-not-found",
            ],
            vec!["delete", "gatewayclass", &self.class, "--ignore-not-found"],
        ] {
            let _ = Command::new(kubectl_bin())
                .arg("--kubeconfig")
                .arg(kubeconfig())
                .args(args)
                .output();
        }
    }
}

/// A process of ours with its stderr collected.
pub struct Proc {
    child: Child,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .env("RUST_LOG", "info,controller::status=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let r = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Proc { child, stderr }
    }

    /// Waits (bounded) for a stderr line containing `needle`; returns it.
    pub async fn wait_log(&self, needle: &str) -> String {
        wait_for(30, &format!("log line {needle:?}"), || async {
            self.stderr
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned()
        })
        .await
    }

    pub fn log_count(&self, needle: &str) -> usize {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A failing test shows what its processes said.
        if std::thread::panicking() {
            eprintln!("--- stderr of pid {} ---\n{}", self.child.id(), self.logs());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "no {name} binary at {} (cargo build --workspace)",
        bin.display()
    );
    bin
}

/// A free port on loopback (for a controller that must come back on the same address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A kubeconfig for the API server that acts as `user` (impersonation: the admin
/// credentials of the cluster script may act as anyone), written to `path`.
pub fn impersonating_kubeconfig(path: &std::path::Path, user: &str, groups: &[&str]) {
    let mut kc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(kubeconfig()).unwrap()).unwrap();
    for u in kc["users"].as_sequence_mut().unwrap() {
        u["user"]["as"] = user.into();
        u["user"]["as-groups"] = groups.iter().map(|g| serde_yaml::Value::from(*g)).collect();
    }
    std::fs::write(path, serde_yaml::to_string(&kc).unwrap()).unwrap();
}

/// A controller with its own kubeconfig and namespace.
pub fn controller_as(
    scope: &Scope,
    kubeconfig: &std::path::Path,
    namespace: &str,
    extra: &[&str],
) -> Proc {
    let mut cmd = Command::new(bin("controller"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--controller-name", &scope.controller_name])
        .args(["--namespace", namespace])
        .args(["--address-pool", &scope.pool])
        .args(["--discovery-addr", "127.0.0.1:0"])
        .args(extra);
    Proc::spawn(cmd)
}

/// The controller of `scope`; `extra` are further flags.
pub fn controller(scope: &Scope, discovery_port: u16, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(bin("controller"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["--controller-name", &scope.controller_name])
        .args(["--namespace", &scope.namespace])
        .args(["--address-pool", &scope.pool])
        .args(["--discovery-addr", &format!("127.0.0.1:{discovery_port}")])
        .args(extra);
    Proc::spawn(cmd)
}

/// Writes the discovery certificate the controller issued for Gateway `name` (its Secret
/// `<name>-sluice-discovery`, cluster mode) into `dir`: `ca.crt`, `tls.crt`, `tls.key`.
pub async fn discovery_certificate(scope: &Scope, name: &str, dir: &std::path::Path) {
    let secret = wait_for(20, "the discovery Secret", || async {
        let api: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(client().await, &scope.namespace);
        api.get_opt(&format!("{name}-sluice-discovery"))
            .await
            .ok()
            .flatten()
    })
    .await;
    for (k, v) in secret.data.unwrap() {
        std::fs::write(dir.join(k), v.0).unwrap();
    }
}

/// A gateway process asking the controller at `discovery_port` for Gateway `asks_for`, with
/// the certificate files in `tls_dir` (see `discovery_certificate`).
pub fn gateway_as(
    scope: &Scope,
    asks_for: &str,
    discovery_port: u16,
    cache: &std::path::Path,
    tls_dir: &std::path::Path,
) -> Proc {
    let mut cmd = Command::new(bin("gateway"));
    cmd.args([
        "run",
        "--controller",
        &format!("https://127.0.0.1:{discovery_port}"),
    ])
    .args(["--gateway", &format!("{}/{asks_for}", scope.namespace)])
    .args([
        "--admin-addr",
        "127.0.0.1:0",
        "--access-log",
        "off",
        "--threads",
        "1",
    ])
    .arg("--snapshot-cache")
    .arg(cache)
    .arg("--controller-ca")
    .arg(tls_dir.join("ca.crt"))
    .arg("--client-cert")
    .arg(tls_dir.join("tls.crt"))
    .arg("--client-key")
    .arg(tls_dir.join("tls.key"));
    Proc::spawn(cmd)
}

/// An echo backend on the backend address; answers with its pod name `pod`.
pub async fn echo(pod: &str) -> conformance::echo::EchoServer {
    conformance::echo::serve(
        SocketAddr::new(backend_ip(), 0),
        conformance::echo::Identity {
            pod: pod.into(),
            ..Default::default()
        },
        None,
    )
    .await
    .expect("echo backend starts on the backend address (scripts/cluster.sh up --api-only)")
}

/// The pod name of the echo backend that answered GET `url`, or the status code as text
/// when it was not a backend's answer.
pub async fn who(url: &str) -> String {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    match client.get(url).send().await {
        Ok(r) if r.status() == 200 => {
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            v["pod"].as_str().unwrap_or("").to_string()
        }
        Ok(r) => r.status().as_u16().to_string(),
        Err(e) => format!("error: {e}"),
    }
}
