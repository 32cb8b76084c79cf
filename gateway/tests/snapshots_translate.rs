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
    (status, t.config.dump(), infra)
}

#[test]
fn quickstart_example() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart");
    let (status, config, infra) = translate_dir(&dir);
    insta::assert_snapshot!("quickstart_status", status);
    insta::assert_json_snapshot!("quickstart_config", config);
    insta::assert_yaml_snapshot!("quickstart_infrastructure", infra);
}
