//! The environment of our conformance cases (`conformance/cases/`): the base objects every case
//! runs on (GatewayClass, namespaces, the echo backends' Services, TLS Secrets, CA ConfigMaps)
//! and the placeholders a case's manifests use. The conformance runner and the translation
//! snapshots of every case share it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use crate::{service, TestCa};

/// The echo backends of the base objects: (namespace, Service name).
pub const BACKENDS: &[(&str, &str)] = &[
    ("gateway-conformance-infra", "infra-backend-v1"),
    ("gateway-conformance-infra", "infra-backend-v2"),
    ("gateway-conformance-infra", "infra-backend-v3"),
    ("gateway-conformance-app-backend", "app-backend-v1"),
    ("gateway-conformance-app-backend", "app-backend-v2"),
    ("gateway-conformance-web-backend", "web-backend"),
];

/// The gRPC echo backends of the base objects (the upstream base's, with appProtocol
/// `kubernetes.io/h2c` on port 8080): (namespace, Service name).
pub const GRPC_BACKENDS: &[(&str, &str)] = &[
    ("gateway-conformance-infra", "grpc-infra-backend-v1"),
    ("gateway-conformance-infra", "grpc-infra-backend-v2"),
    ("gateway-conformance-infra", "grpc-infra-backend-v3"),
];

/// The HTTPS echo backend TLSRoute passthrough cases use besides `TLS_BACKEND`: its namespace,
/// name and the names its certificate covers (upstream's `tls-backend-2`).
pub const TLS_BACKEND_2: (&str, &str, &[&str]) = (
    "gateway-conformance-infra",
    "tls-backend-2",
    &["abc.example.com", "other.example.com"],
);

/// The TCP echo backend of TLSRoute cases (upstream's `tcp-backend`): plain on Service port
/// 3000 (`echo-tcp-plain`), with TLS (a certificate for `abc.example.com`) on 8443
/// (`echo-tcp-tls`). `base_manifests` asks `addr` for `tcp-backend` and `tcp-backend:tls`.
pub const TCP_BACKEND: (&str, &str, &str) = (
    "gateway-conformance-infra",
    "tcp-backend",
    "abc.example.com",
);

/// The DNS backend of the UDPRoute case (upstream's `coredns`, UDP port 53 `udp-dns`).
pub const DNS_BACKEND: (&str, &str) = ("gateway-conformance-infra", "coredns");

/// The Service names of every backend of the base objects: `BACKENDS`, `GRPC_BACKENDS`,
/// `TLS_BACKEND`'s, `TLS_BACKEND_2`'s, `TCP_BACKEND`'s and `DNS_BACKEND`'s.
pub fn backend_names() -> Vec<&'static str> {
    BACKENDS
        .iter()
        .chain(GRPC_BACKENDS)
        .map(|(_, n)| *n)
        .chain([TLS_BACKEND.1, TLS_BACKEND_2.1, TCP_BACKEND.1, DNS_BACKEND.1])
        .collect()
}

/// The TLS echo backend of BackendTLSPolicy cases: its namespace, name and certificate name.
pub const TLS_BACKEND: (&str, &str, &str) = (
    "gateway-conformance-infra",
    "tls-backend",
    "abc.example.com",
);

/// Names the base certificate covers.
pub const CERT_NAMES: &[&str] = &[
    "example.com",
    "*.example.com",
    "example.org",
    "*.example.org",
    "second-example.org",
    "example.net",
    "*.example.net",
];

/// `conformance/cases/`.
pub fn cases_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../conformance/cases")
}

/// The base objects, with each backend (`backend_names`) at `addr(name)`;
/// certificates and CA ConfigMaps come from `ca`.
pub fn base_manifests(ca: &TestCa, addr: &dyn Fn(&str) -> SocketAddr) -> String {
    let base_yaml = std::fs::read_to_string(cases_dir().join("base.yaml"))
        .unwrap_or_else(|e| panic!("conformance/cases/base.yaml: {e}"));
    let mut base = vec![format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: gateway-conformance}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: gateway-conformance-infra, labels: {{gateway-conformance: infra}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: gateway-conformance-app-backend, labels: {{gateway-conformance: backend}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: gateway-conformance-web-backend, labels: {{gateway-conformance: web-backend}}}}
---
{base_yaml}"
    )];
    for (ns, name) in BACKENDS {
        base.push(service(ns, name, &[addr(name)]).replace(
            "{name: http, port: 80, targetPort:",
            "{name: http, port: 8080, targetPort:",
        ));
    }
    for (ns, name) in GRPC_BACKENDS {
        base.push(
            service(ns, name, &[addr(name)])
                // Unnamed ports, as upstream's.
                .replace(
                    "{name: http, port: 80, targetPort:",
                    "{appProtocol: kubernetes.io/h2c, port: 8080, targetPort:",
                )
                .replace("- {name: http, port:", "- {port:"),
        );
    }
    base.push(ca.secret(
        "gateway-conformance-infra",
        "tls-validity-checks-certificate",
        CERT_NAMES,
    ));
    base.push(ca.secret(
        "gateway-conformance-web-backend",
        "certificate-for-cross-ns",
        CERT_NAMES,
    ));
    let indent = |s: &str| {
        s.lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for ns in [
        "gateway-conformance-infra",
        "gateway-conformance-web-backend",
    ] {
        base.push(format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: client-ca, namespace: {ns}}}\ndata:\n  ca.crt: |\n{}\n",
            indent(&ca.cert_pem)
        ));
    }
    let (tls_ns, tls_name, _) = TLS_BACKEND;
    base.push(
        service(tls_ns, tls_name, &[addr(tls_name)])
            .replace(
                "{name: http, port: 80, targetPort:",
                "{name: https, port: 443, targetPort:",
            )
            .replace("- {name: http, port:", "- {name: https, port:"),
    );
    // The CA that signed the TLS backend's certificate.
    base.push(format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: backend-tls-checks-certificate, namespace: gateway-conformance-infra}}\ndata:\n  ca.crt: |\n{}\n",
        indent(&ca.cert_pem)
    ));
    base.push(ca.secret(
        "gateway-conformance-infra",
        "tls-checks-client-certificate",
        &["gateway.example.com"],
    ));
    // TLSRoute cases: the second passthrough backend, the TCP echo on two ports, the
    // app-backend namespace's tls-backend (a Service only: no case reaches it), and the
    // certificate of Terminate listeners.
    let (ns2, name2, _) = TLS_BACKEND_2;
    base.push(
        service(ns2, name2, &[addr(name2)])
            .replace(
                "{name: http, port: 80, targetPort:",
                "{name: https, port: 443, targetPort:",
            )
            .replace("- {name: http, port:", "- {name: https, port:"),
    );
    base.push(
        service(
            "gateway-conformance-app-backend",
            tls_name,
            &[addr(tls_name)],
        )
        .replace(
            "{name: http, port: 80, targetPort:",
            "{name: https, port: 443, targetPort:",
        )
        .replace("- {name: http, port:", "- {name: https, port:"),
    );
    let (tcp_ns, tcp_name, _) = TCP_BACKEND;
    let (plain, tls) = (addr(tcp_name), addr(&format!("{tcp_name}:tls")));
    base.push(format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {tcp_name}, namespace: {tcp_ns}}}
spec:
  ports:
  - {{name: echo-tcp-plain, port: 3000, targetPort: 3000}}
  - {{name: echo-tcp-tls, port: 8443, targetPort: 8443}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {tcp_name}-abc
  namespace: {tcp_ns}
  labels: {{kubernetes.io/service-name: {tcp_name}}}
addressType: IPv4
ports:
- {{name: echo-tcp-plain, port: {}}}
- {{name: echo-tcp-tls, port: {}}}
endpoints:
- addresses: [\"{}\"]
  conditions: {{ready: true}}
",
        plain.port(),
        tls.port(),
        plain.ip()
    ));
    base.push(ca.secret(
        "gateway-conformance-infra",
        "tls-terminate-checks-certificate",
        &["tls.example.com"],
    ));
    let (dns_ns, dns_name) = DNS_BACKEND;
    let dns = addr(dns_name);
    base.push(format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {dns_name}, namespace: {dns_ns}}}
spec:
  ports:
  - {{name: udp-dns, port: 53, protocol: UDP, targetPort: 53}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {dns_name}-abc
  namespace: {dns_ns}
  labels: {{kubernetes.io/service-name: {dns_name}}}
addressType: IPv4
ports:
- {{name: udp-dns, port: {}, protocol: UDP}}
endpoints:
- addresses: [\"{}\"]
  conditions: {{ready: true}}
",
        dns.port(),
        dns.ip()
    ));
    base.join("---\n")
}

/// A case's manifests with `${POOL:n}` (the n-th address of the pool from `pool`) and
/// `${PORT:name}` (the port of backend `name`) filled in.
pub fn render(text: &str, pool: Ipv4Addr, port: &dyn Fn(&str) -> u16) -> String {
    let mut out = text.to_string();
    for n in 0..=255u32 {
        let key = format!("${{POOL:{n}}}");
        if out.contains(&key) {
            out = out.replace(&key, &Ipv4Addr::from(u32::from(pool) + n).to_string());
        }
    }
    for name in backend_names() {
        let key = format!("${{PORT:{name}}}");
        if out.contains(&key) {
            out = out.replace(&key, &port(name).to_string());
        }
    }
    out
}
