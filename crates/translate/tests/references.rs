//! The Secrets and ConfigMaps translation reads, which are all the controller fetches.
#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

use std::path::Path;

use sluice_api::load::load_text;
use sluice_api::resources::NsName;
use sluice_translate::{referenced_config_maps, referenced_secrets};

const OBJECTS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: edge}
spec:
  gatewayClassName: sluice
  tls:
    backend:
      clientCertificateRef: {name: client}
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    tls:
      certificateRefs:
      - {name: own}
      - {kind: Secret, group: "", name: granted, namespace: certs}
      - {name: not-granted, namespace: other}
      - {kind: ConfigMap, name: not-a-secret}
---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {name: extra, namespace: apps}
spec:
  parentRef: {kind: Gateway, group: gateway.networking.k8s.io, name: web, namespace: edge}
  listeners:
  - name: https
    port: 8443
    protocol: HTTPS
    tls:
      certificateRefs: [{name: apps-cert}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: edge-gateways, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: edge}]
  to: [{group: "", kind: Secret}]
---
apiVersion: v1
kind: Secret
metadata: {name: unreferenced, namespace: edge}
type: Opaque
"#;

#[test]
fn only_referenced_and_permitted_secrets() {
    let store = load_text(Path::new("objects.yaml"), OBJECTS).unwrap();
    let got: Vec<NsName> = referenced_secrets(&store).into_iter().collect();
    assert_eq!(
        got,
        [
            NsName::new("apps", "apps-cert"),
            NsName::new("certs", "granted"),
            NsName::new("edge", "client"),
            NsName::new("edge", "own"),
        ]
    );
}

const CA_REFERENCES: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: edge}
spec:
  gatewayClassName: sluice
  tls:
    frontend:
      default:
        validation:
          caCertificateRefs: [{kind: ConfigMap, group: "", name: client-ca}]
      perPort:
      - port: 8443
        tls:
          validation:
            caCertificateRefs:
            - {kind: ConfigMap, group: "", name: shared-ca, namespace: cas}
            - {kind: Secret, group: "", name: not-a-config-map}
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: backend, namespace: apps}
spec:
  targetRefs: [{group: "", kind: Service, name: api}]
  validation:
    caCertificateRefs: [{group: "", kind: ConfigMap, name: backend-ca}]
    hostname: api.example.com
---
apiVersion: policy.sluice.dev/v1alpha1
kind: EgressPolicy
metadata: {name: outbound, namespace: egress}
spec:
  rules:
  - name: partner
    hosts: [partner.example.test]
    ports: [80]
    protocols: [HTTP]
    tlsOrigination:
      caCertificateRefs: [{name: partner-ca}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unreferenced, namespace: edge}
data: {ca.crt: ""}
"#;

#[test]
fn only_referenced_config_maps() {
    let store = load_text(Path::new("objects.yaml"), CA_REFERENCES).unwrap();
    let got: Vec<NsName> = referenced_config_maps(&store).into_iter().collect();
    assert_eq!(
        got,
        [
            NsName::new("apps", "backend-ca"),
            NsName::new("cas", "shared-ca"),
            NsName::new("edge", "client-ca"),
            NsName::new("egress", "partner-ca"),
        ]
    );
}
