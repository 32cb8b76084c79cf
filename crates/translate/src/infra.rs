//! The Kubernetes resources that run one Gateway in a cluster: its ServiceAccount, Service,
//! Deployment and PodDisruptionBudget. The gateway Pods take their configuration from the
//! controller's discovery service (`gateway run --controller`), not from a ConfigMap. Rendering them is pure, like `translate`, so standalone mode shows exactly what the
//! controller applies (`gateway render`, admin `/infrastructure`).
//!
//! `spec.infrastructure.labels` and `.annotations` go on every object and on the Deployment's
//! Pods (GEP-1867). Changing a label or annotation therefore rolls the Pods, as it does in Istio.

use std::collections::BTreeMap;

use gateway_api::experimental::gateways::Gateway;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Sysctl,
    Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use sluice_api::resources::GATEWAY_GROUP;

/// The label every object of a Gateway carries, and the Pods' selector.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
pub const GATEWAY_CLASS_LABEL: &str = "gateway.networking.k8s.io/gateway-class-name";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

pub const ADMIN_PORT: u16 = 9901;
/// How long a gateway Pod drains on termination (`gateway run --drain-timeout`); the Pod's
/// grace period leaves it five seconds more.
pub const DRAIN_SECONDS: i64 = 10;

/// What rendering needs besides the Gateway.
#[derive(Clone, Debug)]
pub struct InfraOptions {
    /// The gateway container image.
    pub image: String,
    /// The controller's discovery service, as the gateway Pods reach it.
    pub controller_url: String,
    /// A Gateway's `status.addresses` are its Service's (load balancer ingress, else cluster
    /// IP) rather than the address it is translated with: the controller's cluster mode.
    pub addresses_from_service: bool,
    /// Whether a Gateway's `spec.addresses` become its Service's `externalIPs`. Off by
    /// default: whoever may create a Gateway could then have every node take traffic for any
    /// IP (CVE-2020-8554); in cluster mode such a Gateway is not accepted while it is off.
    pub external_ips: bool,
    /// With `external_ips`: the ranges requested addresses must be in (empty: any). An
    /// address outside them is not usable: the Gateway is accepted but not programmed
    /// (`AddressNotUsable`), and the address is not put on the Service.
    pub external_ip_cidrs: Vec<ipnet::IpNet>,
}

impl InfraOptions {
    /// May a Gateway in cluster mode have `ip` as its Service's external IP?
    pub fn external_ip_allowed(&self, ip: &std::net::IpAddr) -> bool {
        self.external_ip_cidrs.is_empty() || self.external_ip_cidrs.iter().any(|n| n.contains(ip))
    }
}

/// The discovery service of the controller the Helm chart installs.
pub const DEFAULT_CONTROLLER_URL: &str = "https://sluice-controller.sluice-system:18000";

/// Where gateway Pods mount their discovery certificate (the controller's CA, their client
/// certificate and key), from the Secret [`discovery_secret_name`] the controller issues.
pub const DISCOVERY_TLS_MOUNT: &str = "/etc/sluice/discovery";
/// Where gateway Pods keep their last snapshot (an emptyDir: a restarted container serves it
/// before the controller answers).
pub const SNAPSHOT_CACHE_MOUNT: &str = "/var/cache/sluice";

/// The Secret with a Gateway's discovery client certificate: `<object name>-discovery`.
pub fn discovery_secret_name(object_name: &str) -> String {
    format!("{object_name}-discovery")
}

impl Default for InfraOptions {
    fn default() -> Self {
        InfraOptions {
            image: concat!("sluice/sluice:", env!("CARGO_PKG_VERSION")).into(),
            controller_url: DEFAULT_CONTROLLER_URL.into(),
            addresses_from_service: false,
            external_ips: false,
            external_ip_cidrs: Vec::new(),
        }
    }
}

/// The objects deployed for one Gateway, all in its namespace and named [`GatewayInfra::name`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GatewayInfra {
    pub name: String,
    pub service_account: ServiceAccount,
    pub service: Service,
    pub deployment: Deployment,
    pub pod_disruption_budget: PodDisruptionBudget,
}

impl GatewayInfra {
    /// The objects as Kubernetes would store them (with `apiVersion` and `kind`).
    pub fn objects(&self) -> Vec<serde_json::Value> {
        [
            serde_json::to_value(&self.service_account),
            serde_json::to_value(&self.service),
            serde_json::to_value(&self.deployment),
            serde_json::to_value(&self.pod_disruption_budget),
        ]
        .into_iter()
        .filter_map(Result::ok)
        .collect()
    }
}

/// The objects of every Gateway as one Kubernetes `List`.
pub fn list(infra: &[GatewayInfra]) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": infra.iter().flat_map(GatewayInfra::objects).collect::<Vec<_>>(),
    })
}

/// The transport of a listener port: UDP listeners' ports are UDP in the Service and the Pod,
/// the others TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Udp => "UDP",
        }
    }

    /// `port-P` (TCP, as before UDP was served) or `udp-P`.
    fn port_name(self, port: u16) -> String {
        match self {
            Transport::Tcp => format!("port-{port}"),
            Transport::Udp => format!("udp-{port}"),
        }
    }
}

/// Renders the resources of `gw`, exposing `ports` (the ports of its accepted listeners,
/// including those of attached ListenerSets).
pub fn render(gw: &Gateway, ports: &[(u16, Transport)], opts: &InfraOptions) -> GatewayInfra {
    let gw_name = gw.metadata.name.clone().unwrap_or_default();
    let namespace = gw.metadata.namespace.clone();
    let name = object_name(&gw_name);
    let infra = gw.spec.infrastructure.as_ref();

    // The user's labels first; ours win, since the Service selects Pods by them.
    let mut labels: BTreeMap<String, String> =
        infra.and_then(|i| i.labels.clone()).unwrap_or_default();
    labels.insert(GATEWAY_NAME_LABEL.into(), gw_name.clone());
    labels.insert(
        GATEWAY_CLASS_LABEL.into(),
        gw.spec.gateway_class_name.clone(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), "sluice".into());
    let annotations: BTreeMap<String, String> = infra
        .and_then(|i| i.annotations.clone())
        .unwrap_or_default();
    let selector = BTreeMap::from([(GATEWAY_NAME_LABEL.to_string(), gw_name.clone())]);

    // Deleting the Gateway deletes its resources (when it has a uid, as it does in a cluster).
    let owner = gw.metadata.uid.as_ref().map(|uid| OwnerReference {
        api_version: format!("{GATEWAY_GROUP}/v1"),
        kind: "Gateway".into(),
        name: gw_name.clone(),
        uid: uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    });
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: namespace.clone(),
        labels: Some(labels.clone()),
        annotations: (!annotations.is_empty()).then(|| annotations.clone()),
        owner_references: owner.map(|o| vec![o]),
        ..ObjectMeta::default()
    };

    let mut ports: Vec<(u16, Transport)> = ports.to_vec();
    ports.sort_unstable();
    ports.dedup();

    // With `external_ips`, `spec.addresses` of type IPAddress become the Service's external
    // IPs: the nodes accept traffic for them, and a load balancer that honours them announces
    // them (as in Envoy Gateway). Translation validates the first one and reports it; the
    // others are taken when they parse.
    let requested: Vec<String> = gw
        .spec
        .addresses
        .iter()
        .flatten()
        .filter(|_| opts.external_ips)
        .filter(|a| a.r#type.as_deref().unwrap_or("IPAddress") == "IPAddress")
        .filter_map(|a| a.value.as_deref()?.parse::<std::net::IpAddr>().ok())
        .filter(|ip| opts.external_ip_allowed(ip))
        .map(|ip| ip.to_string())
        .collect();
    let service = Service {
        metadata: meta.clone(),
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            external_ips: (!requested.is_empty()).then_some(requested),
            selector: Some(selector.clone()),
            ports: Some(
                ports
                    .iter()
                    .map(|&(p, t)| ServicePort {
                        name: Some(t.port_name(p)),
                        port: i32::from(p),
                        target_port: Some(IntOrString::Int(i32::from(p))),
                        protocol: Some(t.as_str().into()),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let gateway_ref = format!("{}/{gw_name}", namespace.as_deref().unwrap_or("default"));
    let container = container(&ports, &gateway_ref, opts);
    let deployment = Deployment {
        metadata: meta.clone(),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(name.clone()),
                    // Listeners on ports below 1024 without NET_BIND_SERVICE or root.
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        sysctls: Some(vec![Sysctl {
                            name: "net.ipv4.ip_unprivileged_port_start".into(),
                            value: "0".into(),
                        }]),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    termination_grace_period_seconds: Some(DRAIN_SECONDS + 5),
                    volumes: Some(vec![
                        Volume {
                            name: "discovery".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(discovery_secret_name(&name)),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "snapshot".into(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Volume::default()
                        },
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };

    // At most one Pod of the Gateway down at a time for voluntary disruptions (node drains),
    // which matters once it runs more than one replica.
    let pod_disruption_budget = PodDisruptionBudget {
        metadata: meta.clone(),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    };

    GatewayInfra {
        name,
        service_account: ServiceAccount {
            metadata: meta,
            // The gateway reads nothing from the API server.
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        },
        service,
        deployment,
        pod_disruption_budget,
    }
}

/// The gateway container: its configuration from the controller, the listener ports and the
/// admin port, readiness on `/ready`, and no privileges.
fn container(ports: &[(u16, Transport)], gateway: &str, opts: &InfraOptions) -> Container {
    Container {
        name: "gateway".into(),
        image: Some(opts.image.clone()),
        args: Some(
            [
                "run",
                "--controller",
                &opts.controller_url,
                "--gateway",
                gateway,
                "--bind-any",
                "--admin-addr",
                &format!("0.0.0.0:{ADMIN_PORT}"),
                "--drain-timeout",
                &DRAIN_SECONDS.to_string(),
                "--controller-ca",
                &format!("{DISCOVERY_TLS_MOUNT}/ca.crt"),
                "--client-cert",
                &format!("{DISCOVERY_TLS_MOUNT}/tls.crt"),
                "--client-key",
                &format!("{DISCOVERY_TLS_MOUNT}/tls.key"),
                "--snapshot-cache",
                &format!("{SNAPSHOT_CACHE_MOUNT}/snapshot.json"),
            ]
            .map(String::from)
            .to_vec(),
        ),
        ports: Some(
            ports
                .iter()
                .map(|&(p, t)| ContainerPort {
                    name: Some(t.port_name(p)),
                    container_port: i32::from(p),
                    protocol: Some(t.as_str().into()),
                    ..ContainerPort::default()
                })
                .chain(std::iter::once(ContainerPort {
                    name: Some("admin".into()),
                    container_port: i32::from(ADMIN_PORT),
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                }))
                .collect(),
        ),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/ready".into()),
                port: IntOrString::Int(i32::from(ADMIN_PORT)),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(2),
            ..Probe::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "discovery".into(),
                mount_path: DISCOVERY_TLS_MOUNT.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "snapshot".into(),
                mount_path: SNAPSHOT_CACHE_MOUNT.into(),
                ..VolumeMount::default()
            },
        ]),
        env: Some(vec![EnvVar {
            name: "POD_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]),
        ..Container::default()
    }
}

/// `<gateway>-sluice`, made a valid Service name (an RFC 1035 label of at most 63 characters):
/// dots become dashes, a leading digit gets a `gw-` prefix, and a longer name is cut and keeps a
/// hash of the whole, so two long names stay distinct.
pub fn object_name(gateway: &str) -> String {
    const SUFFIX: &str = "-sluice";
    let mut base = gateway.replace('.', "-");
    if base.starts_with(|c: char| c.is_ascii_digit()) {
        base.insert_str(0, "gw-");
    }
    if base.len() + SUFFIX.len() <= 63 {
        return format!("{base}{SUFFIX}");
    }
    let hash = fnv1a(gateway.as_bytes()) as u32;
    let head = base[..63 - SUFFIX.len() - 9].trim_end_matches('-');
    format!("{head}-{hash:08x}{SUFFIX}")
}

/// FNV-1a: a stable hash (std's `DefaultHasher` may change between Rust releases, and these
/// names must not).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(yaml: &str) -> Gateway {
        serde_yaml::from_str(yaml).expect("gateway yaml")
    }

    #[test]
    fn udp_listener_ports_are_udp_in_the_service_and_the_pod() {
        let gw = gateway(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {name: dns, namespace: infra}\n\
             spec: {gatewayClassName: sluice, listeners: [{name: dns, port: 53, protocol: UDP}]}\n",
        );
        let out = render(
            &gw,
            &[(53, Transport::Udp), (53, Transport::Tcp)],
            &InfraOptions::default(),
        );
        let objects = out.objects();
        let ports = &objects[1]["spec"]["ports"];
        assert_eq!(ports[0]["name"], "port-53");
        assert_eq!(ports[0]["protocol"], "TCP");
        assert_eq!(ports[1]["name"], "udp-53");
        assert_eq!(ports[1]["protocol"], "UDP");
        let container = &objects[2]["spec"]["template"]["spec"]["containers"][0]["ports"];
        assert_eq!(container[1]["protocol"], "UDP");
    }

    #[test]
    fn labels_and_annotations_reach_every_object_and_the_pods() {
        let gw = gateway(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra, uid: 1234}
spec:
  gatewayClassName: sluice
  infrastructure:
    labels: {team: payments, gateway.networking.k8s.io/gateway-name: spoofed}
    annotations: {example.com/owner: ops}
  listeners: [{name: http, port: 80, protocol: HTTP}]
"#,
        );
        let out = render(
            &gw,
            &[
                (443, Transport::Tcp),
                (80, Transport::Tcp),
                (443, Transport::Tcp),
            ],
            &InfraOptions::default(),
        );
        assert_eq!(out.name, "edge-sluice");
        let objects = out.objects();
        assert_eq!(objects.len(), 4);
        for o in &objects {
            let m = &o["metadata"];
            assert_eq!(m["namespace"], "infra", "{o}");
            assert_eq!(m["labels"]["team"], "payments", "{o}");
            // Ours win over the user's: the Service selects Pods by it.
            assert_eq!(m["labels"][GATEWAY_NAME_LABEL], "edge", "{o}");
            assert_eq!(m["annotations"]["example.com/owner"], "ops", "{o}");
            assert_eq!(m["ownerReferences"][0]["uid"], "1234", "{o}");
        }
        let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "ServiceAccount",
                "Service",
                "Deployment",
                "PodDisruptionBudget"
            ]
        );
        let args = &objects[2]["spec"]["template"]["spec"]["containers"][0]["args"];
        assert_eq!(args[1], "--controller");
        assert_eq!(args[4], "infra/edge");
        let pod = &objects[2]["spec"]["template"]["metadata"];
        assert_eq!(pod["labels"]["team"], "payments");
        assert_eq!(pod["annotations"]["example.com/owner"], "ops");
        let ports: Vec<i64> = objects[1]["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["port"].as_i64())
            .collect();
        assert_eq!(ports, [80, 443]);
    }

    #[test]
    fn requested_ip_addresses_become_external_ips() {
        let gw = gateway(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: sluice
  addresses:
  - {type: IPAddress, value: 198.51.100.10}
  - {value: "2001:db8::10"}
  - {type: Hostname, value: edge.example.com}
  - {type: IPAddress, value: not-an-ip}
  - {type: IPAddress}
  listeners: [{name: http, port: 80, protocol: HTTP}]
"#,
        );
        assert_eq!(
            render(&gw, &[(80, Transport::Tcp)], &InfraOptions::default())
                .service
                .spec
                .expect("service spec")
                .external_ips,
            None,
            "off by default"
        );
        let opts = InfraOptions {
            external_ips: true,
            ..InfraOptions::default()
        };
        let out = render(&gw, &[(80, Transport::Tcp)], &opts);
        let spec = out.service.spec.expect("service spec");
        assert_eq!(
            spec.external_ips.as_deref(),
            Some(&["198.51.100.10".to_string(), "2001:db8::10".to_string()][..])
        );
        let plain = gateway(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: edge}\n\
             spec: {gatewayClassName: sluice, listeners: [{name: http, port: 80, protocol: HTTP}]}",
        );
        let spec = render(&plain, &[(80, Transport::Tcp)], &opts).service.spec;
        assert_eq!(spec.expect("service spec").external_ips, None);
    }

    #[test]
    fn long_names_are_cut_and_stay_distinct() {
        let a = object_name(&"a".repeat(100));
        let b = object_name(&format!("{}b", "a".repeat(99)));
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert!(a.ends_with("-sluice"));
        assert_eq!(object_name("edge"), "edge-sluice");
        assert_eq!(object_name("1.edge"), "gw-1-edge-sluice");
    }
}
