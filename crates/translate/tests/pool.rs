//! Addresses from the pool stay with their Gateway while others come and go.
#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

use std::path::Path;

use sluice_api::load::load_text;
use sluice_api::resources::NsName;
use sluice_translate::{translate, Options};

fn store(names: &[&str]) -> sluice_api::resources::Store {
    let mut text = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sluice}\n\
         spec: {controllerName: sluice.dev/gateway-controller}\n",
    );
    for n in names {
        text.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {{name: {n}, namespace: default}}\n\
             spec:\n  gatewayClassName: sluice\n  listeners: [{{name: http, port: 80, protocol: HTTP}}]\n"
        ));
    }
    load_text(Path::new("test.yaml"), &text).unwrap()
}

#[test]
fn a_new_gateway_does_not_take_an_older_ones_address() {
    let mut opts = Options {
        address_pool: Some("127.0.99.0/24".parse().unwrap()),
        ..Options::default()
    };
    let first = translate(&store(&["web"]), &opts);
    let web = NsName::new("default", "web");
    assert_eq!(first.pool_assigned[&web].to_string(), "127.0.99.1");
    opts.pool_last = first.pool_assigned;
    // "api" sorts (and, in files, is read) before "web": without the memory it would take .1.
    let second = translate(&store(&["api", "web"]), &opts);
    assert_eq!(second.pool_assigned[&web].to_string(), "127.0.99.1");
    assert_eq!(
        second.pool_assigned[&NsName::new("default", "api")].to_string(),
        "127.0.99.2"
    );
    // Without the memory, the order decides.
    let fresh = translate(
        &store(&["api", "web"]),
        &Options {
            pool_last: Default::default(),
            ..opts
        },
    );
    assert_eq!(fresh.pool_assigned[&web].to_string(), "127.0.99.2");
}

/// In cluster mode a requested address is the gateway Service's external IP, which is off
/// unless the controller enables it: until then the Gateway is not accepted, and says why.
#[test]
fn requested_addresses_need_external_ips_in_a_cluster() {
    let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sluice}\n\
                spec: {controllerName: sluice.dev/gateway-controller}\n---\n\
                apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
                metadata: {name: fixed, namespace: default}\n\
                spec:\n  gatewayClassName: sluice\n  addresses: [{type: IPAddress, value: 198.51.100.7}]\n\
                \x20 listeners: [{name: http, port: 80, protocol: HTTP}]\n";
    let store = load_text(Path::new("test.yaml"), text).unwrap();
    let accepted = |external_ips: bool| {
        let mut opts = Options::default();
        opts.infra.addresses_from_service = true;
        opts.infra.external_ips = external_ips;
        let t = translate(&store, &opts);
        let gw = t.statuses.iter().find(|s| s.kind == "Gateway").unwrap();
        let c = gw.status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Accepted")
            .unwrap()
            .clone();
        (
            c["status"].as_str().unwrap().to_string(),
            c["reason"].as_str().unwrap().to_string(),
            c["message"].to_string(),
        )
    };
    let (status, reason, message) = accepted(false);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "UnsupportedAddress")
    );
    assert!(message.contains("--service-external-ips"), "{message}");
    assert_eq!(accepted(true).0, "True");
}
