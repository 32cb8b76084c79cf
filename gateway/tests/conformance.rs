//! Our conformance runner: one case per upstream Gateway API conformance test name, in
//! `conformance/cases/*.yaml`, each run against the real gateway binary in standalone mode with
//! the echo backends. Prints a pass/fail table by test name and fails if any case fails.
//!
//! The cases and the base resources are written by us from the spec and each upstream test's
//! intent; they are not copies of the upstream suite (which runs in kind, see
//! `conformance/README.md`).
#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sluice_testing::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    manifests: String,
    #[serde(default)]
    requests: Vec<Req>,
    #[serde(default)]
    status: Vec<StatusCheck>,
    #[serde(default)]
    infrastructure: Vec<InfraCheck>,
    /// Later states: each replaces the case's manifests (when given), then is checked.
    #[serde(default)]
    steps: Vec<Step>,
    /// Services of the case's manifests (`name`, or `namespace/name`, in
    /// gateway-conformance-infra by default) that upstream backs with a TCP echo Deployment:
    /// the runner starts a TCP echo for each (Pod `<name>-0`) and adds the EndpointSlice of the
    /// Service's port `tcp`. (Deployments are not read: they only get a warning.)
    #[serde(default, rename = "tcpBackends")]
    tcp_backends: Vec<String>,
    /// The same for UDP echo Deployments (the EndpointSlice of the Service's port `udp`).
    #[serde(default, rename = "udpBackends")]
    udp_backends: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    manifests: Option<String>,
    #[serde(default)]
    requests: Vec<Req>,
    #[serde(default)]
    status: Vec<StatusCheck>,
    #[serde(default)]
    infrastructure: Vec<InfraCheck>,
}

/// The resources rendered for a Gateway (admin `/infrastructure`), found as the upstream test
/// finds them: by kind and the `gateway.networking.k8s.io/gateway-name` label in the Gateway's
/// namespace. `Pod` means the Deployment's Pod template.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InfraCheck {
    kind: String,
    #[serde(default = "infra")]
    namespace: String,
    gateway: String,
    /// Labels and annotations the object must have (others may be there too).
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    /// Keys the object must not have.
    #[serde(default)]
    absent_labels: Vec<String>,
}

fn default_gateway() -> String {
    "same-namespace".into()
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Req {
    /// Gateway name (in gateway-conformance-infra) or `namespace/name`.
    #[serde(default = "default_gateway")]
    gateway: String,
    port: Option<u16>,
    #[serde(default)]
    https: bool,
    host: Option<String>,
    /// TLS server name when it differs from the host.
    sni: Option<String>,
    #[serde(default = "root")]
    path: String,
    #[serde(default = "get")]
    method: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    expect: Expect,
    /// Send the request this many times (for weights).
    repeat: Option<u32>,
    /// Open a WebSocket on `path` instead and expect a message to be echoed.
    #[serde(default)]
    websocket: bool,
    /// Present a client certificate: `valid` (signed by the CA in the `client-ca` ConfigMaps)
    /// or `untrusted` (signed by another CA).
    client_cert: Option<String>,
    /// Make this gRPC call of the echo service instead (`Echo`, `EchoTwo`, `EchoThree`), over
    /// h2c with `host` as `:authority` and `headers` as metadata, as upstream's gRPC client.
    grpc: Option<String>,
    /// Open a TLS connection with `sni` (or `host`) that the gateway must close or reset
    /// before any TLS answer (upstream's `MakeTLSConnectionAndExpectEventuallyConnectionRejection`:
    /// EOF or a reset, not an alert, not a handshake).
    #[serde(default)]
    tls_reject: bool,
    /// Talk to the TCP echo through the gateway instead (upstream's
    /// `MakeTCPRequestAndExpectEventuallyValidResponse`): the welcome line, `PING`, `IS_TLS`,
    /// `TEST`; over TLS with `sni` when `tls` is set.
    #[serde(default)]
    tcp: bool,
    #[serde(default)]
    tls: bool,
    /// Send a datagram to the UDP echo through the gateway, from a new socket, and expect its
    /// JSON answer (upstream's `udpEchoSendOnce`); with `dns`, a DNS query instead, answered
    /// by the DNS backend (upstream's `dns.Exchange`).
    #[serde(default)]
    udp: bool,
    #[serde(default)]
    dns: bool,
}

fn root() -> String {
    "/".into()
}
fn get() -> String {
    "GET".into()
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Expect {
    status: Option<u16>,
    /// Any of these statuses is accepted (the upstream `StatusCodes` list).
    #[serde(default)]
    statuses: Vec<u16>,
    /// No backend may see this request (answered by the gateway itself).
    #[serde(default)]
    not_forwarded: bool,
    /// The Service that answered (echo `service` field).
    backend: Option<String>,
    namespace: Option<String>,
    /// Request target the backend saw.
    path: Option<String>,
    /// Host the backend saw.
    host: Option<String>,
    /// Request headers the backend saw.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    absent_headers: Vec<String>,
    #[serde(default)]
    response_headers: BTreeMap<String, String>,
    #[serde(default)]
    absent_response_headers: Vec<String>,
    location: Option<String>,
    /// The TLS server name the backend saw (backends reached over TLS).
    tls_server_name: Option<String>,
    /// Whether the backend saw a client certificate from the gateway.
    tls_client_certificate: Option<bool>,
    /// The request must fail (no TLS handshake, no answer).
    #[serde(default)]
    fails: bool,
    /// Backends that must receive a mirrored copy of the request.
    #[serde(default)]
    mirrored: Vec<String>,
    /// With `repeat`: the share of requests each backend answers, within ±`tolerance`.
    #[serde(default)]
    distribution: BTreeMap<String, f64>,
    /// How far a share may be from `distribution` (0.1 unless given).
    tolerance: Option<f64>,
    /// A request header whose value, as the backend saw it, must name the backend that answered
    /// (set per backendRef by a filter).
    backend_header: Option<String>,
    /// A gRPC call's status code, as tonic names it (`Ok` unless given); with `Ok`, `backend`
    /// is the prefix of the answering Pod's name and `namespace` its namespace, as upstream
    /// checks, and the echo must report the method called.
    grpc_code: Option<String>,
    /// TCP echo: whether the backend's own connection was TLS (its `IS_TLS` answer).
    is_tls: Option<bool>,
}

fn infra() -> String {
    "gateway-conformance-infra".into()
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StatusCheck {
    kind: String,
    #[serde(default = "infra")]
    namespace: String,
    name: String,
    /// For routes: the parent Gateway (`name` or `namespace/name`), and its sectionName.
    parent: Option<String>,
    /// For routes: the parent's kind (`Gateway` or `ListenerSet`); the parentRef in status must
    /// name it, with group gateway.networking.k8s.io and its namespace, explicitly.
    parent_kind: Option<String>,
    section: Option<String>,
    /// For Gateways: a listener.
    listener: Option<String>,
    attached_routes: Option<i64>,
    /// A Gateway's `status.attachedListenerSets`; an absent field counts as 0, as upstream reads it.
    attached_listener_sets: Option<i64>,
    /// Kinds a listener's `supportedKinds` must include (`[]`: it must be empty).
    supported_kinds: Option<Vec<String>>,
    /// Condition type → `True`, `False`, `True/Reason` or `False/Reason`.
    #[serde(default)]
    conditions: BTreeMap<String, String>,
    observed_generation: Option<i64>,
    /// No status at all is expected for this parent (not our Gateway) or object.
    #[serde(default)]
    absent: bool,
    /// Listeners of a Gateway, by name, in this order.
    listeners: Option<Vec<String>>,
}

struct Env {
    ca: TestCa,
    /// Client certificates: (valid, untrusted), each as certificate and key PEM.
    client_certs: (String, String),
    base: String,
    backends: Vec<(String, EchoServer)>,
    grpc_backends: Vec<(String, conformance::grpc_echo::GrpcEchoServerHandle)>,
    _tcp_backend: conformance::l4_echo::L4Server,
    _dns: tokio::task::JoinHandle<()>,
}

async fn environment() -> Env {
    use sluice_testing::conformance_env::{base_manifests, BACKENDS, GRPC_BACKENDS, TLS_BACKEND};
    let ca = TestCa::new();
    let mut backends = Vec::new();
    for (ns, name) in BACKENDS {
        backends.push((name.to_string(), echo_in(ns, name).await));
    }
    let mut grpc_backends = Vec::new();
    for (ns, name) in GRPC_BACKENDS {
        let identity = Identity {
            namespace: ns.to_string(),
            service: name.to_string(),
            pod: format!("{name}-0"),
            ..Identity::default()
        };
        let server = conformance::grpc_echo::serve("127.0.0.1:0".parse().unwrap(), identity)
            .await
            .unwrap();
        grpc_backends.push((name.to_string(), server));
    }
    // A TLS backend for BackendTLSPolicy cases, with a certificate for abc.example.com; it
    // trusts the same CA for client certificates.
    let (tls_ns, tls_name, tls_host) = TLS_BACKEND;
    let (tls_cert, tls_key) = ca.issue(&[tls_host]);
    let tls_echo = conformance::echo::serve(
        "127.0.0.1:0".parse().unwrap(),
        Identity {
            namespace: tls_ns.into(),
            service: tls_name.into(),
            pod: format!("{tls_name}-0"),
            ..Identity::default()
        },
        Some(conformance::echo::TlsFiles {
            cert_pem: tls_cert.into_bytes(),
            key_pem: tls_key.into_bytes(),
            client_ca_pem: Some(ca.cert_pem.clone().into_bytes()),
        }),
    )
    .await
    .unwrap();
    backends.push((tls_name.to_string(), tls_echo));
    let (ns2, name2, names2) = sluice_testing::conformance_env::TLS_BACKEND_2;
    let (cert2, key2) = ca.issue(names2);
    let tls_echo_2 = conformance::echo::serve(
        "127.0.0.1:0".parse().unwrap(),
        Identity {
            namespace: ns2.into(),
            service: name2.into(),
            pod: format!("{name2}-0"),
            ..Identity::default()
        },
        Some(conformance::echo::TlsFiles {
            cert_pem: cert2.into_bytes(),
            key_pem: key2.into_bytes(),
            client_ca_pem: None,
        }),
    )
    .await
    .unwrap();
    backends.push((name2.to_string(), tls_echo_2));
    let (tcp_ns, tcp_name, tcp_host) = sluice_testing::conformance_env::TCP_BACKEND;
    let (tcp_cert, tcp_key) = ca.issue(&[tcp_host]);
    let tcp_backend = conformance::l4_echo::serve_tcp(
        "127.0.0.1:0".parse().unwrap(),
        Identity {
            namespace: tcp_ns.into(),
            service: tcp_name.into(),
            pod: format!("{tcp_name}-0"),
            ..Identity::default()
        },
        Some((
            "127.0.0.1:0".parse().unwrap(),
            conformance::echo::TlsFiles {
                cert_pem: tcp_cert.into_bytes(),
                key_pem: tcp_key.into_bytes(),
                client_ca_pem: None,
            },
        )),
    )
    .await
    .unwrap();
    let tcp_addrs = (tcp_backend.addr, tcp_backend.tls_addr.unwrap());
    let (dns_addr, dns) = dns_backend().await;
    let addr = |name: &str| {
        if name == tcp_name {
            return tcp_addrs.0;
        }
        if name == sluice_testing::conformance_env::DNS_BACKEND.1 {
            return dns_addr;
        }
        if name == format!("{tcp_name}:tls") {
            return tcp_addrs.1;
        }
        backends
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e.addr)
            .or_else(|| {
                grpc_backends
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, g)| g.addr)
            })
            .unwrap_or_else(|| panic!("no backend {name}"))
    };
    let base = base_manifests(&ca, &addr);
    let (cert, key) = ca.issue(&["client.example.com"]);
    let other = TestCa::new();
    let (ucert, ukey) = other.issue(&["client.example.com"]);
    let client_certs = (format!("{cert}{key}"), format!("{ucert}{ukey}"));
    Env {
        ca,
        client_certs,
        base,
        backends,
        grpc_backends,
        _tcp_backend: tcp_backend,
        _dns: dns,
    }
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/cases")
}

/// Fills in `${PORT:<service>}` with the port of that echo backend, and `${POOL:<n>}` with the
/// n-th address of the case's address pool.
fn render(env: &Env, text: &str, pool: std::net::Ipv4Addr) -> String {
    sluice_testing::conformance_env::render(text, pool, &|name| {
        env.backends
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e.addr.port())
            .or_else(|| {
                env.grpc_backends
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, g)| g.addr.port())
            })
            .unwrap_or(0)
    })
}

/// Runs one case; returns the first failure.
async fn run_case(env: &Env, case: &Case) -> Result<(), String> {
    let pool = unique_ip();
    let IpAddr::V4(v4) = pool else { unreachable!() };
    let pool_base = std::net::Ipv4Addr::from(u32::from(v4) & 0xffff_ff00);
    let pool_net = format!("{pool_base}/24");
    // The case's own TCP echo backends, alive for as long as the case runs.
    let mut tcp_echoes = Vec::new();
    let mut slices = Vec::new();
    let backends = case
        .tcp_backends
        .iter()
        .map(|b| (b, "tcp"))
        .chain(case.udp_backends.iter().map(|b| (b, "udp")));
    for (b, proto) in backends {
        let (ns, name) = split_name(b, "gateway-conformance-infra");
        let id = Identity {
            namespace: ns.clone(),
            service: name.clone(),
            pod: format!("{name}-0"),
            ..Identity::default()
        };
        let any = "127.0.0.1:0".parse().unwrap();
        let echo = match proto {
            "tcp" => conformance::l4_echo::serve_tcp(any, id, None).await,
            _ => conformance::l4_echo::serve_udp(any, id).await,
        }
        .map_err(|e| format!("{proto} echo for {b}: {e}"))?;
        let protocol = proto.to_ascii_uppercase();
        slices.push(format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-echo\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports:\n- {{name: {proto}, port: {}, protocol: {protocol}}}\nendpoints:\n- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n",
            echo.addr.port(),
            echo.addr.ip()
        ));
        tcp_echoes.push(echo);
    }
    let gw = Gateway::start_with(
        &[
            ("base.yaml", env.base.clone()),
            ("case-backends.yaml", slices.join("---\n")),
            ("case.yaml", render(env, &case.manifests, pool_base)),
        ],
        &["--address-pool", &pool_net, "--access-log", "off"],
    )
    .await;
    check_state(env, &gw, &case.requests, &case.status, &case.infrastructure).await?;
    for (i, step) in case.steps.iter().enumerate() {
        if let Some(m) = &step.manifests {
            let v = gw.config_version().await;
            gw.write("case.yaml", &render(env, m, pool_base));
            gw.wait_version_above(v).await;
        }
        check_state(env, &gw, &step.requests, &step.status, &step.infrastructure)
            .await
            .map_err(|e| format!("step {}: {e}", i + 1))?;
    }
    Ok(())
}

async fn check_state(
    env: &Env,
    gw: &Gateway,
    requests: &[Req],
    status: &[StatusCheck],
    infrastructure: &[InfraCheck],
) -> Result<(), String> {
    let all = gw.admin_json("/status").await;
    for s in status {
        check_status(&all, s).map_err(|e| format!("{} {}/{}: {e}", s.kind, s.namespace, s.name))?;
    }
    if !infrastructure.is_empty() {
        let list = gw.admin_json("/infrastructure").await;
        for c in infrastructure {
            check_infra(&list, c)
                .map_err(|e| format!("{} of Gateway {}/{}: {e}", c.kind, c.namespace, c.gateway))?;
        }
    }
    for r in requests {
        check_request(env, &all, r).await.map_err(|e| {
            format!(
                "{} {}{}: {e}",
                r.method,
                r.host.as_deref().unwrap_or(""),
                r.path
            )
        })?;
    }
    Ok(())
}

fn split_name(s: &str, default_ns: &str) -> (String, String) {
    match s.split_once('/') {
        Some((ns, n)) => (ns.to_string(), n.to_string()),
        None => (default_ns.to_string(), s.to_string()),
    }
}

fn gateway_addr(all: &serde_json::Value, gateway: &str) -> Result<IpAddr, String> {
    let (ns, name) = split_name(gateway, "gateway-conformance-infra");
    let st = all
        .as_array()
        .and_then(|a| {
            a.iter().find(|o| {
                o["kind"] == "Gateway"
                    && o["metadata"]["namespace"] == ns
                    && o["metadata"]["name"] == name
            })
        })
        .ok_or(format!("no status for Gateway {ns}/{name}"))?;
    st["status"]["addresses"][0]["value"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .ok_or(format!("Gateway {ns}/{name} has no address"))
}

fn check_conditions(
    conds: &serde_json::Value,
    want: &BTreeMap<String, String>,
) -> Result<(), String> {
    for (ty, expect) in want {
        let c = conds
            .as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == ty.as_str()))
            .ok_or(format!("no {ty} condition in {conds}"))?;
        let got = format!(
            "{}/{}",
            c["status"].as_str().unwrap_or(""),
            c["reason"].as_str().unwrap_or("")
        );
        let ok = if expect.contains('/') {
            got == *expect
        } else {
            got.starts_with(&format!("{expect}/"))
        };
        if !ok {
            return Err(format!(
                "{ty} is {got} ({}), want {expect}",
                c["message"].as_str().unwrap_or("")
            ));
        }
    }
    Ok(())
}

fn check_infra(list: &serde_json::Value, c: &InfraCheck) -> Result<(), String> {
    let (kind, pod) = match c.kind.as_str() {
        "Pod" => ("Deployment", true),
        k => (k, false),
    };
    let obj = list["items"]
        .as_array()
        .and_then(|items| {
            items.iter().find(|o| {
                o["kind"] == kind
                    && o["metadata"]["namespace"] == c.namespace.as_str()
                    && o["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"]
                        == c.gateway.as_str()
            })
        })
        .ok_or("no such object")?;
    let meta = if pod {
        &obj["spec"]["template"]["metadata"]
    } else {
        &obj["metadata"]
    };
    for (field, want) in [("labels", &c.labels), ("annotations", &c.annotations)] {
        for (k, v) in want {
            if meta[field][k] != v.as_str() {
                return Err(format!("{field} {} lack {k}={v}", meta[field]));
            }
        }
    }
    for k in &c.absent_labels {
        if !meta["labels"][k].is_null() {
            return Err(format!("label {k} is still there: {}", meta["labels"]));
        }
    }
    Ok(())
}

/// Every condition's observedGeneration is `want`, when a generation is expected.
fn check_observed_generation(conds: &serde_json::Value, want: Option<i64>) -> Result<(), String> {
    let Some(g) = want else { return Ok(()) };
    for c in conds.as_array().into_iter().flatten() {
        if c["observedGeneration"] != g {
            return Err(format!(
                "observedGeneration {} want {g}",
                c["observedGeneration"]
            ));
        }
    }
    Ok(())
}

fn check_status(all: &serde_json::Value, s: &StatusCheck) -> Result<(), String> {
    let obj = all.as_array().and_then(|a| {
        a.iter().find(|o| {
            o["kind"] == s.kind.as_str()
                && o["metadata"]["name"] == s.name.as_str()
                && (s.kind == "GatewayClass" || o["metadata"]["namespace"] == s.namespace.as_str())
        })
    });
    match (s.kind.as_str(), obj) {
        (_, None) if s.absent => Ok(()),
        (_, None) => Err("no status".into()),
        ("BackendTLSPolicy", Some(o)) => {
            let ancestors = o["status"]["ancestors"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let a = ancestors
                .iter()
                .find(|a| {
                    s.parent.as_deref().is_none_or(|want| {
                        let (ns, n) = split_name(want, &s.namespace);
                        a["ancestorRef"]["name"] == n.as_str()
                            && a["ancestorRef"]["namespace"] == ns.as_str()
                    })
                })
                .ok_or(format!("no ancestor {:?} in {}", s.parent, o["status"]))?;
            check_conditions(&a["conditions"], &s.conditions)?;
            check_observed_generation(&a["conditions"], s.observed_generation)?;
            Ok(())
        }
        ("HTTPRoute" | "GRPCRoute" | "TLSRoute" | "TCPRoute" | "UDPRoute", Some(o)) => {
            let parents = o["status"]["parents"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let parent = parents.iter().find(|p| {
                let pr = &p["parentRef"];
                s.parent.as_deref().is_none_or(|want| {
                    let (ns, n) = split_name(want, &s.namespace);
                    pr["name"] == n.as_str() && pr["namespace"] == ns.as_str()
                }) && s
                    .parent_kind
                    .as_deref()
                    .is_none_or(|k| pr["kind"] == k && pr["group"] == "gateway.networking.k8s.io")
                    && s.section
                        .as_deref()
                        .is_none_or(|sec| pr["sectionName"] == sec)
            });
            match parent {
                None if s.absent => Ok(()),
                None => Err(format!(
                    "no parent status for {:?} in {}",
                    s.parent, o["status"]
                )),
                Some(_) if s.absent => Err(format!("unexpected parent status {}", o["status"])),
                Some(p) => {
                    check_conditions(&p["conditions"], &s.conditions)?;
                    check_observed_generation(&p["conditions"], s.observed_generation)?;
                    Ok(())
                }
            }
        }
        (_, Some(_)) if s.absent => Err("unexpected status".into()),
        (_, Some(o)) => {
            if let Some(l) = &s.listener {
                let ls = o["status"]["listeners"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let listener = ls
                    .iter()
                    .find(|x| x["name"] == l.as_str())
                    .ok_or(format!("no listener {l}"))?;
                check_conditions(&listener["conditions"], &s.conditions)?;
                if let Some(kinds) = &s.supported_kinds {
                    let got: Vec<String> = listener["supportedKinds"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|k| k["kind"].as_str().map(str::to_string))
                        .collect();
                    // As upstream compares them: an empty list means none, else each listed
                    // kind is supported (an implementation may support more).
                    let ok = if kinds.is_empty() {
                        got.is_empty()
                    } else {
                        kinds.iter().all(|k| got.contains(k))
                    };
                    if !ok {
                        return Err(format!(
                            "listener {l} supportedKinds {got:?} want {kinds:?}"
                        ));
                    }
                }
                if let Some(n) = s.attached_routes {
                    if listener["attachedRoutes"] != n {
                        return Err(format!(
                            "listener {l} attachedRoutes {} want {n}",
                            listener["attachedRoutes"]
                        ));
                    }
                }
            } else {
                check_conditions(&o["status"]["conditions"], &s.conditions)?;
            }
            if let Some(names) = &s.listeners {
                let got: Vec<String> = o["status"]["listeners"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| l["name"].as_str().map(str::to_string))
                    .collect();
                if &got != names {
                    return Err(format!("listeners {got:?} want {names:?}"));
                }
            }
            if let Some(n) = s.attached_listener_sets {
                let got = o["status"]["attachedListenerSets"].as_i64().unwrap_or(0);
                if got != n {
                    return Err(format!("attachedListenerSets {got} want {n}"));
                }
            }
            check_observed_generation(&o["status"]["conditions"], s.observed_generation)?;
            Ok(())
        }
    }
}

async fn check_request(env: &Env, all: &serde_json::Value, r: &Req) -> Result<(), String> {
    let n = r.repeat.unwrap_or(1);
    if n <= 1 && r.expect.distribution.is_empty() {
        return check_request_once(env, all, r).await.map(|_| ());
    }
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..n {
        let svc = check_request_once(env, all, r).await?;
        *counts.entry(svc).or_default() += 1;
    }
    for (svc, share) in &r.expect.distribution {
        let got = f64::from(counts.get(svc).copied().unwrap_or(0)) / f64::from(n);
        let tolerance = r.expect.tolerance.unwrap_or(0.1);
        if (got - share).abs() > tolerance {
            return Err(format!(
                "{svc} answered {got:.2} of {n} requests, want {share} ± {tolerance} ({counts:?})"
            ));
        }
    }
    for svc in counts.keys() {
        if !r.expect.distribution.contains_key(svc) {
            return Err(format!(
                "{svc} answered requests but should get none ({counts:?})"
            ));
        }
    }
    Ok(())
}

/// Sends one request, checks it, and returns the service that answered.
async fn check_request_once(env: &Env, all: &serde_json::Value, r: &Req) -> Result<String, String> {
    if let Some(method) = &r.grpc {
        return check_grpc_call(all, r, method).await;
    }
    if r.tls_reject {
        return check_tls_rejected(env, all, r).await;
    }
    if r.tcp {
        return check_tcp_echo(env, all, r).await;
    }
    if r.udp {
        return check_udp_echo(all, r).await;
    }
    if r.websocket {
        let ip = gateway_addr(all, &r.gateway)?;
        let addr = SocketAddr::new(ip, r.port.unwrap_or(80));
        let host = r.host.clone().unwrap_or_else(|| ip.to_string());
        let reply = websocket_echo(addr, &host, &r.path, "conformance").await?;
        return if reply == "conformance" {
            Ok(String::new())
        } else {
            Err(format!("echo {reply:?}"))
        };
    }
    let ip = gateway_addr(all, &r.gateway)?;
    let port = r.port.unwrap_or(if r.https { 443 } else { 80 });
    let addr = SocketAddr::new(ip, port);
    let host = r.host.clone().unwrap_or_else(|| ip.to_string());
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .http1_only();
    let url_host = if r.https {
        r.sni.clone().unwrap_or_else(|| host.clone())
    } else {
        host.clone()
    };
    if r.https {
        b = b
            .tls_built_in_root_certs(false)
            .add_root_certificate(env.ca.reqwest_cert());
    }
    if let Some(which) = r.client_cert.as_deref() {
        let pem = match which {
            "valid" => &env.client_certs.0,
            "untrusted" => &env.client_certs.1,
            other => return Err(format!("unknown clientCert {other:?}")),
        };
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).map_err(|e| e.to_string())?);
    }
    b = b.resolve(&url_host, addr);
    let client = b.build().map_err(|e| e.to_string())?;
    let scheme = if r.https { "https" } else { "http" };
    let url = format!("{scheme}://{url_host}:{port}{}", r.path);
    let mut req = client.request(r.method.parse().map_err(|e| format!("{e}"))?, &url);
    let seen_before: usize = env.backends.iter().map(|(_, b)| b.count(&r.path)).sum();
    if url_host != host || r.host.is_some() {
        let host_header = if (port == 80 && !r.https) || (port == 443 && r.https) {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        req = req.header("host", host_header);
    }
    for (k, v) in &r.headers {
        req = req.header(k, v);
    }
    let resp = match req.send().await {
        Err(_) if r.expect.fails => return Ok(String::new()),
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            return Err(format!("request failed: {msg}"));
        }
        Ok(_) if r.expect.fails => return Err("the request should have failed".into()),
        Ok(resp) => resp,
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    let e = &r.expect;
    if !e.statuses.is_empty() {
        if !e.statuses.contains(&status) {
            return Err(format!(
                "status {status}, want one of {:?}; body {body}",
                e.statuses
            ));
        }
    } else {
        let want_status = e.status.unwrap_or(200);
        if status != want_status {
            return Err(format!("status {status}, want {want_status}; body {body}"));
        }
    }
    if e.not_forwarded {
        let after: usize = env.backends.iter().map(|(_, b)| b.count(&r.path)).sum();
        if after != seen_before {
            return Err(format!(
                "{} request(s) for {} reached a backend; the gateway must answer itself",
                after - seen_before,
                r.path
            ));
        }
    }
    if let Some(b) = &e.backend {
        if body["service"] != b.as_str() {
            return Err(format!("answered by {}, want {b}", body["service"]));
        }
    }
    if let Some(ns) = &e.namespace {
        if body["namespace"] != ns.as_str() {
            return Err(format!("namespace {}, want {ns}", body["namespace"]));
        }
    }
    if let Some(p) = &e.path {
        if body["path"] != p.as_str() {
            return Err(format!("backend saw path {}, want {p}", body["path"]));
        }
    }
    if let Some(sni) = &e.tls_server_name {
        if body["tls"]["serverName"] != sni.as_str() {
            return Err(format!(
                "backend saw TLS server name {}, want {sni}",
                body["tls"]["serverName"]
            ));
        }
    }
    if let Some(want) = e.tls_client_certificate {
        let got = body["tls"]["peerCertificates"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        if got != want {
            return Err(format!(
                "backend saw a client certificate: {got}, want {want}"
            ));
        }
    }
    if let Some(h) = &e.host {
        if body["host"] != h.as_str() {
            return Err(format!("backend saw host {}, want {h}", body["host"]));
        }
    }
    let canonical = conformance::echo::canonical;
    if let Some(h) = &e.backend_header {
        let got = body["headers"][canonical(h)][0].as_str().unwrap_or("");
        if got != body["service"].as_str().unwrap_or("") {
            return Err(format!(
                "backend {} saw {h}: {got:?}; it must name the backend",
                body["service"]
            ));
        }
    }
    for (k, v) in &e.headers {
        let got = body["headers"][canonical(k)].as_array().map(|a| {
            a.iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(",")
        });
        if got.as_deref() != Some(v.as_str()) {
            return Err(format!("backend saw header {k}: {got:?}, want {v}"));
        }
    }
    for k in &e.absent_headers {
        if !body["headers"][canonical(k)].is_null() {
            return Err(format!("backend saw header {k} that should be absent"));
        }
    }
    for (k, v) in &e.response_headers {
        let got = headers
            .get_all(k.as_str())
            .iter()
            .filter_map(|x| x.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        if got != *v {
            return Err(format!("response header {k}: {got:?}, want {v}"));
        }
    }
    for k in &e.absent_response_headers {
        if headers.contains_key(k.as_str()) {
            return Err(format!("response header {k} should be absent"));
        }
    }
    if let Some(l) = &e.location {
        let got = headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if got != l {
            return Err(format!("location {got:?}, want {l}"));
        }
    }
    for m in &e.mirrored {
        let (_, server) = env
            .backends
            .iter()
            .find(|(n, _)| n == m)
            .ok_or(format!("no backend {m}"))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while server.count(&r.path) == 0 {
            if std::time::Instant::now() > deadline {
                return Err(format!("{m} got no mirrored copy of {}", r.path));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    Ok(body["service"].as_str().unwrap_or("").to_string())
}

/// A TLS handshake with the case's SNI that the gateway must end by closing or resetting the
/// connection, with no TLS answer: upstream counts only EOF and resets as a rejection.
async fn check_tls_rejected(env: &Env, all: &serde_json::Value, r: &Req) -> Result<String, String> {
    let ip = gateway_addr(all, &r.gateway)?;
    let addr = SocketAddr::new(ip, r.port.unwrap_or(443));
    let sni = r
        .sni
        .clone()
        .or(r.host.clone())
        .ok_or("tlsReject needs sni or host")?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e} (a refused connection is not a rejection)"))?;
    let name = rustls::pki_types::ServerName::try_from(sni.clone()).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(env.ca.rustls_client_config());
    match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        connector.connect(name, tcp),
    )
    .await
    {
        Err(_) => Err(format!(
            "{sni}: the gateway held the connection without closing it"
        )),
        Ok(Ok(_)) => Err(format!("{sni}: the TLS handshake completed")),
        Ok(Err(e)) => {
            use std::io::ErrorKind as K;
            match e.kind() {
                K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
                    Ok(String::new())
                }
                _ => Err(format!(
                    "{sni}: {e} (an alert or a certificate error is not a rejection)"
                )),
            }
        }
    }
}

/// The TCP echo's exchange through the gateway, checked as upstream's `assertTestMessage`:
/// the welcome line, PONG, IS_TLS, then TEST's namespace, Pod prefix `<backend>-` and the
/// server name the backend's TLS saw. Returns the Service that answered.
async fn check_tcp_echo(env: &Env, all: &serde_json::Value, r: &Req) -> Result<String, String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        s: S,
    ) -> Result<(String, serde_json::Value), String> {
        let mut s = BufReader::new(s);
        let mut line = String::new();
        let mut ask = async |s: &mut BufReader<S>, what: &[u8]| -> Result<String, String> {
            if !what.is_empty() {
                s.get_mut()
                    .write_all(what)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            line.clear();
            s.read_line(&mut line).await.map_err(|e| e.to_string())?;
            Ok(line.clone())
        };
        let welcome = ask(&mut s, b"").await?;
        if welcome != "Gateway API Test TCP Server\n" {
            return Err(format!("welcome line {welcome:?}"));
        }
        let pong = ask(&mut s, b"PING\n").await?;
        if pong != "PONG\n" {
            return Err(format!("PING answered {pong:?}"));
        }
        let is_tls = ask(&mut s, b"IS_TLS\n").await?;
        let test = ask(&mut s, b"TEST\n").await?;
        let v = serde_json::from_str(&test).map_err(|e| format!("TEST answered {test:?}: {e}"))?;
        Ok((is_tls.trim_end().to_string(), v))
    }
    let ip = gateway_addr(all, &r.gateway)?;
    let addr = SocketAddr::new(ip, r.port.unwrap_or(443));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let deadline = std::time::Duration::from_secs(10);
    let (is_tls, v) = if r.tls {
        let sni = r
            .sni
            .clone()
            .or(r.host.clone())
            .ok_or("tls needs sni or host")?;
        let name =
            rustls::pki_types::ServerName::try_from(sni.clone()).map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(env.ca.rustls_client_config());
        let tls = tokio::time::timeout(deadline, connector.connect(name, tcp))
            .await
            .map_err(|_| format!("{sni}: TLS handshake timed out"))?
            .map_err(|e| format!("{sni}: TLS handshake: {e}"))?;
        tokio::time::timeout(deadline, exchange(tls)).await
    } else {
        tokio::time::timeout(deadline, exchange(tcp)).await
    }
    .map_err(|_| "the TCP echo exchange timed out".to_string())??;
    let e = &r.expect;
    if let Some(want) = e.is_tls {
        if is_tls != want.to_string() {
            return Err(format!("backend IS_TLS {is_tls}, want {want}"));
        }
    }
    if let Some(ns) = &e.namespace {
        if v["namespace"] != ns.as_str() {
            return Err(format!("namespace {}, want {ns}", v["namespace"]));
        }
    }
    if let Some(b) = &e.backend {
        let pod = v["pod"].as_str().unwrap_or("");
        if !pod.starts_with(&format!("{b}-")) {
            return Err(format!("answered by pod {pod}, want {b}-*"));
        }
    }
    if let Some(sni) = &e.tls_server_name {
        if v["tls"]["serverName"] != sni.as_str() {
            return Err(format!(
                "backend saw TLS server name {}, want {sni}",
                v["tls"]["serverName"]
            ));
        }
    }
    Ok(v["service"].as_str().unwrap_or("").to_string())
}

/// A DNS server that answers every query NXDOMAIN, for the UDPRoute case's `coredns`: any
/// well-formed reply with the query's id is what upstream's check accepts.
async fn dns_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            if n < 12 {
                continue;
            }
            let mut reply = buf[..n].to_vec();
            // QR (response), the query's opcode and RD, RA, RCODE 3 (NXDOMAIN); the question
            // is kept, no answers.
            reply[2] = 0x80 | (buf[2] & 0x79);
            reply[3] = 0x80 | 3;
            reply[6..12].fill(0);
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    (addr, task)
}

/// One datagram through the gateway from a new socket (a new session), as upstream's
/// `udpEchoSendOnce` and `ExpectEchoResponseFromBackend` send it, retried on silence for a
/// few seconds (upstream polls); returns the Service that answered.
async fn check_udp_echo(all: &serde_json::Value, r: &Req) -> Result<String, String> {
    let ip = gateway_addr(all, &r.gateway)?;
    let addr = SocketAddr::new(ip, r.port.ok_or("udp needs a port")?);
    let mut last = String::new();
    for _ in 0..5 {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        socket.connect(addr).await.map_err(|e| e.to_string())?;
        let query: Vec<u8> = if r.dns {
            // A query for foo.bar.com. A, id 0x5a17, RD.
            let mut q = vec![0x5a, 0x17, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
            for label in ["foo", "bar", "com"] {
                q.push(label.len() as u8);
                q.extend_from_slice(label.as_bytes());
            }
            q.extend_from_slice(&[0, 0, 1, 0, 1]);
            q
        } else {
            b"gateway-api-conformance-udp-echo".to_vec()
        };
        socket.send(&query).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 4096];
        let n = match tokio::time::timeout(std::time::Duration::from_secs(2), socket.recv(&mut buf))
            .await
        {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                last = e.to_string();
                continue;
            }
            Err(_) => {
                last = format!("no answer from {addr} in 2 s");
                continue;
            }
        };
        if r.dns {
            return if n >= 12 && buf[..2] == [0x5a, 0x17] && buf[2] & 0x80 != 0 {
                Ok(String::new())
            } else {
                Err(format!("not a DNS reply to the query: {:?}", &buf[..n]))
            };
        }
        let v: serde_json::Value = serde_json::from_slice(&buf[..n]).map_err(|e| {
            format!(
                "UDP echo answered {:?}: {e}",
                String::from_utf8_lossy(&buf[..n])
            )
        })?;
        let e = &r.expect;
        if let Some(ns) = &e.namespace {
            if v["namespace"] != ns.as_str() {
                return Err(format!("namespace {}, want {ns}", v["namespace"]));
            }
        }
        if let Some(b) = &e.backend {
            if v["service"] != b.as_str() {
                return Err(format!("answered by {}, want {b}", v["service"]));
            }
        }
        return Ok(v["service"].as_str().unwrap_or("").to_string());
    }
    Err(last)
}

/// Makes one gRPC call of the echo service, checks it as upstream's `compareResponse` does, and
/// returns the Service that answered (empty for a failed call).
async fn check_grpc_call(all: &serde_json::Value, r: &Req, method: &str) -> Result<String, String> {
    use conformance::grpc_echo::pb::{grpc_echo_client::GrpcEchoClient, EchoRequest};
    use conformance::grpc_echo::SERVICE;
    let e = &r.expect;
    if e.not_forwarded || e.status.is_some() || !e.headers.is_empty() || e.path.is_some() {
        return Err("a gRPC call checks grpcCode, backend, namespace and distribution only".into());
    }
    let ip = gateway_addr(all, &r.gateway)?;
    let port = r.port.unwrap_or(80);
    let authority = r.host.clone().unwrap_or_else(|| format!("{ip}:{port}"));
    let origin: http::Uri = format!("http://{authority}")
        .parse()
        .map_err(|e| format!("authority {authority:?}: {e}"))?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{ip}:{port}"))
        .map_err(|e| e.to_string())?
        .origin(origin)
        .timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("gRPC connection to {ip}:{port}: {e}"))?;
    let mut client = GrpcEchoClient::new(channel);
    let mut req = tonic::Request::new(EchoRequest {});
    for (k, v) in &r.headers {
        // grpc-go sends metadata keys lowercased.
        let key = tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|e| format!("metadata key {k:?}: {e}"))?;
        req.metadata_mut()
            .insert(key, v.parse().map_err(|_| format!("metadata value {v:?}"))?);
    }
    let result = match method {
        "Echo" => client.echo(req).await,
        "EchoTwo" => client.echo_two(req).await,
        "EchoThree" => client.echo_three(req).await,
        other => return Err(format!("unknown gRPC method {other:?}")),
    };
    let want = e.grpc_code.as_deref().unwrap_or("Ok");
    let resp = match result {
        Err(status) => {
            let got = format!("{:?}", status.code());
            return if got == want {
                Ok(String::new())
            } else {
                Err(format!("gRPC status {got} ({status}), want {want}"))
            };
        }
        Ok(_) if want != "Ok" => return Err(format!("gRPC status Ok, want {want}")),
        Ok(resp) => resp.into_inner(),
    };
    let a = resp.assertions.unwrap_or_default();
    let fq = format!("/{SERVICE}/{method}");
    if a.fully_qualified_method != fq {
        return Err(format!(
            "backend saw method {}, want {fq}",
            a.fully_qualified_method
        ));
    }
    let ctx = a.context.unwrap_or_default();
    if let Some(ns) = &e.namespace {
        if &ctx.namespace != ns {
            return Err(format!("namespace {}, want {ns}", ctx.namespace));
        }
    }
    if let Some(b) = &e.backend {
        if !ctx.pod.starts_with(b.as_str()) {
            return Err(format!("answered by pod {}, want {b}-*", ctx.pod));
        }
    }
    Ok(ctx.service_name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_cases() {
    let env = environment().await;
    let mut files: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name().is_some_and(|n| n != "base.yaml")
        })
        .collect();
    files.sort();
    let only = std::env::var("CASE").ok();
    let mut rows = Vec::new();
    let mut failed = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let case: Case =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(
            f.file_stem().unwrap().to_string_lossy(),
            case.name,
            "case file names match the test name"
        );
        if only.as_deref().is_some_and(|o| o != case.name) {
            continue;
        }
        let _ = &case.description;
        let result = run_case(&env, &case).await;
        if result.is_err() {
            failed += 1;
        }
        rows.push((case.name.clone(), result));
    }
    println!("\n{:<60} result", "conformance test");
    for (name, r) in &rows {
        match r {
            Ok(()) => println!("{name:<60} PASS"),
            Err(e) => println!("{name:<60} FAIL  {e}"),
        }
    }
    println!("{} passed, {failed} failed", rows.len() - failed);
    assert_eq!(failed, 0, "{failed} conformance case(s) failed");
}

/// conformance/README.md lists all 94 GATEWAY-HTTP test names, the test names of GATEWAY-GRPC
/// (5, with GRPCRouteNamedRule, in no profile), GATEWAY-TLS (15, with HTTPRouteDisallowedKind,
/// in no profile), GATEWAY-TCP (8) and GATEWAY-UDP (9) that are not common to every Gateway
/// profile, and the 22 Mesh tests (none has a case yet); a name is marked `passes`
/// exactly when it has a case file. Its upstream column says what the committed run of the
/// upstream suite says of the test (`conformance/reports/v1.6.3/sluice-report-tests.txt`, which
/// scripts/conformance.sh writes beside the report): `passes`, `fails`, `skipped`, or `not run`
/// for a test of no profile.
#[test]
fn readme_table_matches_the_cases() {
    let readme = std::fs::read_to_string(cases_dir().join("../README.md")).unwrap();
    let results_file = cases_dir().join("../reports/v1.6.3/sluice-report-tests.txt");
    let upstream: BTreeMap<String, String> = std::fs::read_to_string(&results_file)
        .unwrap_or_else(|e| panic!("{}: {e}", results_file.display()))
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, result)| (name.to_string(), result.to_string()))
        .collect();
    let mut listed = BTreeMap::new();
    let mut per_profile: BTreeMap<&str, usize> = BTreeMap::new();
    let mut profile = "";
    for line in readme.lines() {
        if let Some(rest) = line.strip_prefix("## ") {
            profile = rest.split_whitespace().next().unwrap_or("");
        }
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        if cols.len() == 7 && matches!(cols[2], "core" | "extended") {
            *per_profile.entry(profile).or_default() += 1;
            assert!(
                !cols[5].is_empty(),
                "{}: the README says how it was checked",
                cols[1]
            );
            let expected = match upstream.get(cols[1]).map(String::as_str) {
                Some("PASS") => "passes",
                Some("FAIL") => "fails",
                Some("SKIP") => "skipped",
                Some(other) => panic!("{}: result {other:?} in {results_file:?}", cols[1]),
                None => "not run",
            };
            assert_eq!(
                cols[4], expected,
                "{}: the README's upstream result differs from {results_file:?}",
                cols[1]
            );
            listed.insert(cols[1].to_string(), cols[3].to_string());
        }
    }
    assert_eq!(
        per_profile,
        BTreeMap::from([
            ("GATEWAY-GRPC", 5),
            ("GATEWAY-HTTP", 94),
            ("GATEWAY-TCP", 8),
            ("GATEWAY-TLS", 15),
            ("GATEWAY-UDP", 9),
            ("MESH-HTTP", 22)
        ]),
        "the README lists every test once, under its profile"
    );
    assert_eq!(listed.len(), 153, "no test name is listed twice");
    for name in upstream.keys() {
        assert!(
            listed.contains_key(name),
            "{name}: the upstream suite ran it, the README does not list it"
        );
    }
    let cases: std::collections::BTreeSet<String> = std::fs::read_dir(cases_dir())
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let stem = p.file_stem()?.to_string_lossy().to_string();
            (p.extension().is_some_and(|e| e == "yaml") && stem != "base").then_some(stem)
        })
        .collect();
    for (name, status) in &listed {
        assert_eq!(
            status == "passes",
            cases.contains(name),
            "{name}: README says {status:?}, case file exists: {}",
            cases.contains(name)
        );
    }
    for c in &cases {
        assert!(
            listed.contains_key(c),
            "case {c} is not an upstream test name in the README"
        );
    }
}
