//! Snapshot tests of the translation: manifests in, status and effective configuration out.
//! A change in either shows up as a reviewed diff (`cargo insta review`).
#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

use std::path::Path;

use gateway::translate::{translate, Options};

fn translate_dir(dir: &Path) -> (String, serde_json::Value, serde_json::Value) {
    let store = gateway::resources::load_path(dir).expect("fixtures load");
    let t = translate(&store, &Options::default());
    let infra = gateway::infra::list(&t.infrastructure);
    let status = t
        .statuses
        .iter()
        .map(|s| serde_yaml::to_string(s).unwrap())
        .collect::<Vec<_>>()
        .join("---\n");
    (
        status,
        gateway::engine::compile::compile(t.config).dump(),
        infra,
    )
}

#[test]
fn quickstart_example() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart");
    let (status, config, infra) = translate_dir(&dir);
    insta::assert_snapshot!("quickstart_status", status);
    insta::assert_json_snapshot!("quickstart_config", config);
    insta::assert_yaml_snapshot!("quickstart_infrastructure", infra);
}

/// The configuration data means the same after a trip through its serialized form, and each
/// Gateway's slice (`for_gateway`, what a deployment of that Gateway receives) serves exactly
/// that Gateway's binds of the whole.
fn same_over_the_wire(c: &gateway::ir::Config, compiled: &serde_json::Value, what: &str) {
    use gateway::engine::compile::compile;
    let wire = serde_json::to_string(c).unwrap();
    let back: gateway::ir::Config = serde_json::from_str(&wire).unwrap();
    assert_eq!(&compile(back).dump(), compiled, "{what}: serde round trip");
    let mut gateways: Vec<_> = c.binds.iter().map(|b| b.gateway.clone()).collect();
    gateways.dedup();
    for gw in gateways {
        let slice = compile(c.for_gateway(&gw)).dump();
        let expected: Vec<&serde_json::Value> = compiled["binds"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["gateway"] == gw.to_string())
            .collect();
        let got: Vec<&serde_json::Value> = slice["binds"].as_array().unwrap().iter().collect();
        assert_eq!(got, expected, "{what}: slice of Gateway {gw}");
    }
}

/// The translation of every conformance case (and of each of its steps), in-process: the
/// status of every object, the effective configuration and the warnings. A change in what a
/// case translates to shows up as a reviewed diff, before the conformance runner runs it.
/// Backends get fixed addresses, the address pool is fixed and the clock is the epoch, so the
/// snapshots do not depend on the run.
#[test]
fn conformance_case_translations() {
    use sluice_testing::conformance_env::{backend_names, base_manifests, cases_dir, render};
    let ca = sluice_testing::TestCa::new();
    let names = backend_names();
    let port = |name: &str| 30001 + names.iter().position(|n| *n == name).unwrap() as u16;
    // A second port of a backend (`tcp-backend:tls`) is its first one plus 1000.
    let addr = |name: &str| {
        let p = match name.split_once(':') {
            Some((n, _)) => port(n) + 1000,
            None => port(name),
        };
        std::net::SocketAddr::from(([127, 0, 0, 1], p))
    };
    let base = base_manifests(&ca, &addr);
    let pool = std::net::Ipv4Addr::new(127, 50, 0, 0);
    let mut files: Vec<_> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("base.yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 131);
    for file in files {
        let case: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let name = case["name"].as_str().unwrap().to_string();
        let mut states = vec![case["manifests"].as_str().unwrap_or("").to_string()];
        for step in case["steps"].as_sequence().into_iter().flatten() {
            let last = states.last().cloned().unwrap_or_default();
            states.push(step["manifests"].as_str().map_or(last, str::to_string));
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base.yaml"), &base).unwrap();
        let mut opts = Options {
            address_pool: Some("127.50.0.0/24".parse().unwrap()),
            ..Options::default()
        };
        let mut generations = gateway::resources::Generations::default();
        for (i, manifests) in states.iter().enumerate() {
            std::fs::write(dir.path().join("case.yaml"), render(manifests, pool, &port)).unwrap();
            opts.version = i as u64 + 1;
            let t = gateway::standalone::load_and_translate(dir.path(), &opts, &mut generations)
                .unwrap_or_else(|e| panic!("{name} step {i}: {e}"));
            let prefix = format!("{}/", dir.path().display());
            let warnings: Vec<String> = t
                .warnings
                .iter()
                .map(|w| w.to_string().replace(&prefix, ""))
                .collect();
            let config = gateway::engine::compile::compile(t.config.clone()).dump();
            same_over_the_wire(&t.config, &config, &format!("{name} step {i}"));
            let snapshot = serde_json::json!({
                "status": t.statuses,
                "config": config,
                "warnings": warnings,
            });
            insta::assert_yaml_snapshot!(format!("case_{name}_{i}"), snapshot);
            opts.tls_last_good = t.tls_last_good;
            opts.egress_last_good = t.egress_last_good;
            opts.pool_last = t.pool_assigned;
        }
    }
}
