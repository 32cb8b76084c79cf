//! A Gateway's `spec.addresses` in cluster mode, as the upstream GatewayStaticAddresses test
//! walks through them: an unsupported address type is not accepted; an address outside the
//! controller's external-IP ranges is accepted but not programmed and stays off the Service;
//! a usable one is the Service's external IP. The GatewayClass lists GatewayStaticAddresses
//! only when requested addresses can be served at all.
#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

use std::path::Path;

use sluice_api::load::load_text;
use sluice_translate::infra::InfraOptions;
use sluice_translate::{supported_features, translate, Options, Translation};

fn translated(addresses: &str, infra: InfraOptions) -> Translation {
    let text = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: sluice}}\n\
         spec: {{controllerName: sluice.dev/gateway-controller}}\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: fixed, namespace: default, generation: 1}}\n\
         spec:\n  gatewayClassName: sluice\n  addresses: {addresses}\n\
         \x20 listeners: [{{name: http, port: 8080, protocol: HTTP}}]\n"
    );
    let store = load_text(Path::new("test.yaml"), &text).unwrap();
    let opts = Options {
        infra: InfraOptions {
            addresses_from_service: true,
            ..infra
        },
        ..Options::default()
    };
    translate(&store, &opts)
}

fn gateway_condition(t: &Translation, ty: &str) -> (String, String) {
    let gw = t.statuses.iter().find(|s| s.kind == "Gateway").unwrap();
    let c = gw.status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == ty)
        .unwrap();
    (
        c["status"].as_str().unwrap().to_string(),
        c["reason"].as_str().unwrap().to_string(),
    )
}

fn external_ips(t: &Translation) -> Option<Vec<String>> {
    let infra = t.infrastructure.first()?;
    infra.service.spec.as_ref()?.external_ips.clone()
}

#[test]
fn requested_addresses_in_cluster_mode() {
    let ranges = InfraOptions {
        external_ips: true,
        external_ip_cidrs: vec!["10.244.2.0/24".parse().unwrap()],
        ..InfraOptions::default()
    };
    // An unsupported type anywhere in the list: not accepted.
    let t = translated(
        "[{type: test/fake-invalid-type, value: 'fake address'}, {value: 10.244.3.10}, {value: 10.244.2.10}]",
        ranges.clone(),
    );
    assert_eq!(
        gateway_condition(&t, "Accepted"),
        ("False".into(), "UnsupportedAddress".into())
    );

    // One address outside the ranges: accepted, not programmed, only the usable one on the
    // Service.
    let t = translated(
        "[{value: 10.244.3.10}, {value: 10.244.2.10}]",
        ranges.clone(),
    );
    assert_eq!(
        gateway_condition(&t, "Accepted"),
        ("True".into(), "Accepted".into())
    );
    assert_eq!(
        gateway_condition(&t, "Programmed"),
        ("False".into(), "AddressNotUsable".into())
    );
    assert_eq!(external_ips(&t), Some(vec!["10.244.2.10".to_string()]));

    // Only the usable one: accepted, and it is the Service's external IP.
    let t = translated("[{value: 10.244.2.10}]", ranges.clone());
    assert_eq!(
        gateway_condition(&t, "Accepted"),
        ("True".into(), "Accepted".into())
    );
    assert_ne!(gateway_condition(&t, "Programmed").1, "AddressNotUsable");
    assert_eq!(external_ips(&t), Some(vec!["10.244.2.10".to_string()]));

    // Without ranges any address is usable; without external IPs none is accepted.
    let any = InfraOptions {
        external_ips: true,
        ..InfraOptions::default()
    };
    let t = translated("[{value: 10.244.3.10}]", any);
    assert_ne!(gateway_condition(&t, "Programmed").1, "AddressNotUsable");
    let t = translated("[{value: 10.244.3.10}]", InfraOptions::default());
    assert_eq!(
        gateway_condition(&t, "Accepted"),
        ("False".into(), "UnsupportedAddress".into())
    );
}

#[test]
fn static_addresses_are_claimed_only_when_servable() {
    let cluster = |external_ips| Options {
        infra: InfraOptions {
            addresses_from_service: true,
            external_ips,
            ..InfraOptions::default()
        },
        ..Options::default()
    };
    assert!(!supported_features(&cluster(false)).contains(&"GatewayStaticAddresses"));
    assert!(supported_features(&cluster(true)).contains(&"GatewayStaticAddresses"));
    // Standalone, a requested address is the one the gateway binds.
    assert!(supported_features(&Options::default()).contains(&"GatewayStaticAddresses"));
}
