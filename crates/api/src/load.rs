//! Loading manifest files into a `Store`: every document parsed, typed, checked as the API
//! server would check it (unknown fields, versions, duplicates, the CRDs' rules), with errors
//! naming file, document, object and field.

use std::path::{Path, PathBuf};

use gateway_api::backendtlspolicies::BackendTlsPolicy;
use gateway_api::experimental::gatewayclasses::GatewayClass;
use gateway_api::experimental::gateways::Gateway;
use gateway_api::experimental::grpcroutes::GrpcRoute;
use gateway_api::experimental::httproutes::HttpRoute;
use gateway_api::experimental::referencegrants::ReferenceGrant;
use gateway_api::experimental::tcproutes::TcpRoute;
use gateway_api::experimental::tlsroutes::TlsRoute;
use gateway_api::experimental::udproutes::UdpRoute;
use gateway_api::listenersets::ListenerSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::DeserializeOwned;

use crate::resources::*;

/// Is this a manifest file by its name?
pub fn is_manifest_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// All manifest files under `path` (itself when it is a file), sorted so loads are repeatable.
pub fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, LoadErrors> {
    let io_err = |p: &Path, e: std::io::Error| {
        LoadErrors(vec![ManifestError {
            origin: Source::File {
                file: p.to_path_buf(),
                document: 0,
            },
            object: "-".into(),
            field: ".".into(),
            message: format!("cannot read: {e}"),
        }])
    };
    let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io_err(&dir, e))? {
            let entry = entry.map_err(|e| io_err(&dir, e))?;
            let p = entry.path();
            let name = entry.file_name();
            // Editors' temporary and hidden files are not manifests.
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let ft = entry.file_type().map_err(|e| io_err(&p, e))?;
            if ft.is_dir() {
                dirs.push(p);
            } else if is_manifest_file(&p) {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Reads every manifest under `path` into a store, or reports every invalid object.
/// Loads manifests given as text, `path` naming them in errors (tests, and whoever holds
/// manifests in memory).
pub fn load_text(path: &Path, text: &str) -> Result<Store, LoadErrors> {
    let mut loader = Loader::default();
    loader.add_text(path, text);
    loader.finish()
}

pub fn load_path(path: &Path) -> Result<Store, LoadErrors> {
    load_path_cached(path, &mut ParseCache::default())
}

/// The parsed documents of each file, kept between reloads so that only files whose content
/// changed are parsed again (parsing dominates loading a large folder).
#[derive(Default)]
pub struct ParseCache {
    files: std::collections::HashMap<PathBuf, (u64, std::sync::Arc<Vec<ParsedDoc>>)>,
}

type ParsedDoc = Result<serde_json::Value, String>;

fn content_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// Like `load_path`, parsing again only the files whose content changed since the last call.
pub fn load_path_cached(path: &Path, cache: &mut ParseCache) -> Result<Store, LoadErrors> {
    let files = manifest_files(path)?;
    cache.files.retain(|f, _| files.contains(f));
    let mut loader = Loader::default();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                let hash = content_hash(&text);
                let docs = match cache.files.get(&file) {
                    Some((h, docs)) if *h == hash => docs.clone(),
                    _ => {
                        let docs = std::sync::Arc::new(parse_docs(&file, &text));
                        cache.files.insert(file.clone(), (hash, docs.clone()));
                        docs
                    }
                };
                loader.add_docs(&file, &docs);
            }
            Err(e) => loader.errors.push(ManifestError {
                origin: Source::File {
                    file: file.clone(),
                    document: 0,
                },
                object: "-".into(),
                field: ".".into(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    loader.finish()
}

/// Splits a file into documents and parses each into JSON data. After a YAML syntax error the
/// rest of the file cannot be split into documents, so parsing stops there.
fn parse_docs(file: &Path, text: &str) -> Vec<ParsedDoc> {
    if file.extension().and_then(|e| e.to_str()) == Some("json") {
        // A JSON file holds one object (possibly a List).
        return vec![serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))];
    }
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let parsed = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
            .map_err(|e| format!("invalid YAML: {e}"))
            .and_then(|v| {
                serde_json::to_value(v)
                    .map_err(|e| format!("YAML that is not valid JSON data: {e}"))
            });
        let stop = parsed.is_err();
        docs.push(parsed);
        if stop {
            break;
        }
    }
    docs
}

/// Reads manifests from in-memory text (used by tests and by `load_path`).
#[derive(Default)]
pub struct Loader {
    store: Store,
    errors: Vec<ManifestError>,
    order: usize,
}

impl Loader {
    pub fn add_text(&mut self, file: &Path, text: &str) {
        let docs = parse_docs(file, text);
        self.add_docs(file, &docs);
    }

    fn add_docs(&mut self, file: &Path, docs: &[ParsedDoc]) {
        for (i, doc) in docs.iter().enumerate() {
            let source = Source::File {
                file: file.to_path_buf(),
                document: i + 1,
            };
            match doc {
                Err(message) => self.errors.push(ManifestError {
                    origin: source,
                    object: "-".into(),
                    field: ".".into(),
                    message: message.clone(),
                }),
                Ok(serde_json::Value::Null) => {}
                Ok(value) => self.add_value(&source, value.clone()),
            }
        }
    }

    fn add_value(&mut self, source: &Source, value: serde_json::Value) {
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        if kind == "List" || kind.ends_with("List") && value.get("items").is_some() {
            if let Some(items) = value.get("items").and_then(|i| i.as_array()) {
                for item in items.clone() {
                    self.add_value(source, item);
                }
            }
            return;
        }
        let api_version = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        let kind = kind.to_string();
        let name = value
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or("")
            .to_string();
        let namespace = value
            .pointer("/metadata/namespace")
            .and_then(|n| n.as_str())
            .unwrap_or("default")
            .to_string();
        let object = if name.is_empty() {
            format!("{kind} (unnamed)")
        } else {
            format!("{kind} {namespace}/{name}")
        };
        let err = |field: &str, message: String| ManifestError {
            origin: source.clone(),
            object: object.clone(),
            field: field.to_string(),
            message,
        };
        if api_version.is_empty() {
            self.errors
                .push(err(".apiVersion", "apiVersion is required".into()));
            return;
        }
        if kind.is_empty() {
            self.errors.push(err(".kind", "kind is required".into()));
            return;
        }
        if name.is_empty() {
            self.errors
                .push(err(".metadata.name", "metadata.name is required".into()));
            return;
        }
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let version = api_version.rsplit('/').next().unwrap_or("");
        self.order += 1;
        let created = (
            value
                .pointer("/metadata/creationTimestamp")
                .and_then(|t| t.as_str())
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                .map(|t| t.as_second()),
            self.order,
        );
        let key = NsName::new(namespace.clone(), name.clone());
        macro_rules! insert {
            ($map:ident, $ty:ty, $key:expr, $versions:expr) => {
                insert!($map, $ty, $key, $versions, None)
            };
            ($map:ident, $ty:ty, $key:expr, $versions:expr, schema) => {
                insert!(
                    $map,
                    $ty,
                    $key,
                    $versions,
                    Some(|| serde_json::to_value(schemars::schema_for!($ty)).unwrap_or_default())
                )
            };
            ($map:ident, $ty:ty, $key:expr, $versions:expr, $schema:expr) => {{
                if !$versions.contains(&version) {
                    self.errors.push(err(
                        ".apiVersion",
                        format!(
                            "{kind} is served as {group}/{}, not {api_version}",
                            $versions.join(" or ")
                        ),
                    ));
                    return;
                }
                match parse_object::<$ty>(value, $schema) {
                    Ok(obj) => {
                        let stored = Object {
                            obj,
                            source: source.clone(),
                            created,
                        };
                        if let Some(prev) = self.store.$map.insert($key, stored) {
                            self.errors.push(err(
                                ".metadata.name",
                                format!("duplicate object: also defined in {}", prev.source),
                            ));
                        }
                    }
                    Err((field, message)) => self.errors.push(err(&field, message)),
                }
            }};
        }
        match (group, kind.as_str()) {
            ("", "Namespace") => insert!(namespaces, Namespace, name.clone(), ["v1"]),
            ("", "Service") => insert!(services, Service, key, ["v1"]),
            ("", "Secret") => insert!(secrets, Secret, key, ["v1"]),
            ("", "ConfigMap") => insert!(config_maps, ConfigMap, key, ["v1"]),
            ("discovery.k8s.io", "EndpointSlice") => {
                insert!(endpoint_slices, EndpointSlice, key, ["v1"])
            }
            (GATEWAY_GROUP, "GatewayClass") => {
                insert!(
                    gateway_classes,
                    GatewayClass,
                    name.clone(),
                    ["v1", "v1beta1"],
                    schema
                )
            }
            (GATEWAY_GROUP, "Gateway") => {
                insert!(gateways, Gateway, key, ["v1", "v1beta1"], schema)
            }
            (GATEWAY_GROUP, "HTTPRoute") => {
                insert!(http_routes, HttpRoute, key, ["v1", "v1beta1"], schema)
            }
            (GATEWAY_GROUP, "GRPCRoute") => {
                insert!(grpc_routes, GrpcRoute, key, ["v1"], schema)
            }
            (GATEWAY_GROUP, "TLSRoute") => {
                insert!(
                    tls_routes,
                    TlsRoute,
                    key,
                    ["v1", "v1alpha3", "v1alpha2"],
                    schema
                )
            }
            (GATEWAY_GROUP, "TCPRoute") => {
                insert!(tcp_routes, TcpRoute, key, ["v1", "v1alpha2"], schema)
            }
            (GATEWAY_GROUP, "UDPRoute") => {
                insert!(udp_routes, UdpRoute, key, ["v1", "v1alpha2"], schema)
            }
            (crate::egress::POLICY_GROUP, "EgressPolicy") => {
                insert!(
                    egress_policies,
                    crate::egress::EgressPolicy,
                    key,
                    ["v1alpha1"]
                )
            }
            (GATEWAY_GROUP, "ListenerSet") => {
                insert!(listener_sets, ListenerSet, key, ["v1", "v1alpha1"], schema)
            }
            (GATEWAY_GROUP, "BackendTLSPolicy") => {
                insert!(
                    backend_tls_policies,
                    BackendTlsPolicy,
                    key,
                    ["v1", "v1alpha3"],
                    schema
                )
            }
            (GATEWAY_GROUP, "ReferenceGrant") => {
                insert!(
                    reference_grants,
                    ReferenceGrant,
                    key,
                    ["v1", "v1beta1"],
                    schema
                )
            }
            _ => self.store.skipped.push(Skipped {
                source: source.clone(),
                group: group.to_string(),
                kind: kind.clone(),
                object,
            }),
        }
    }

    /// The store, after the checks that need every object (references are checked by
    /// translation, which reports them in status as the Gateway API defines).
    pub fn finish(mut self) -> Result<Store, LoadErrors> {
        self.errors.extend(crate::validate::validate(&self.store));
        // EgressPolicies are checked by translation, one by one, and report in their status.
        if self.errors.is_empty() {
            Ok(self.store)
        } else {
            Err(LoadErrors(self.errors))
        }
    }
}

/// Deserializes one object, rejecting unknown fields as `kubectl apply` does by default
/// (strict field validation), and reporting the JSON path of the first bad field.
/// `schema` gives the JSON schema of `T`, to name the fields expected where an unknown one is.
fn parse_object<T: DeserializeOwned>(
    value: serde_json::Value,
    schema: Option<fn() -> serde_json::Value>,
) -> Result<T, (String, String)> {
    let mut unknown: Vec<Vec<Segment>> = Vec::new();
    let mut on_ignored = |path: serde_ignored::Path<'_>| {
        let segments = segments(&path);
        // apiVersion and kind are checked before; status is ignored on apply.
        let top = match segments.first() {
            Some(Segment::Key(k)) => k.as_str(),
            _ => "",
        };
        if !matches!(top, "apiVersion" | "kind" | "status") {
            unknown.push(segments);
        }
    };
    let de = serde_ignored::Deserializer::new(value, &mut on_ignored);
    let result: Result<T, _> = serde_path_to_error::deserialize(de);
    let obj = result.map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            ".".to_string()
        } else {
            format!(".{path}")
        };
        (field, e.into_inner().to_string())
    })?;
    if let Some(first) = unknown.first() {
        let field = field_path(first);
        let (parent, name) = match first.split_last() {
            Some((Segment::Key(name), parent)) => (parent, name.as_str()),
            _ => return Err((field, "unknown field".into())),
        };
        let known = schema.map(|s| fields_at(&s(), parent)).unwrap_or_default();
        let mut message = format!("unknown field {name:?}");
        if let Some(close) = crate::names::closest(name, known.iter().map(String::as_str), 2) {
            message.push_str(&format!(" (did you mean {close:?}?)"));
        }
        if !known.is_empty() {
            message.push_str(&format!("; expected one of: {}", known.join(", ")));
        }
        return Err((field, message));
    }
    Ok(obj)
}

/// One step of a path into an object.
#[derive(Clone, Debug, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// serde_ignored's path as steps (its `Some` and newtype steps are not steps into the object).
fn segments(path: &serde_ignored::Path<'_>) -> Vec<Segment> {
    use serde_ignored::Path as P;
    let mut out = Vec::new();
    let mut at = path;
    loop {
        match at {
            P::Root => break,
            P::Seq { parent, index } => {
                out.push(Segment::Index(*index));
                at = parent;
            }
            P::Map { parent, key } => {
                out.push(Segment::Key(key.clone()));
                at = parent;
            }
            P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
                at = parent
            }
        }
    }
    out.reverse();
    out
}

/// `.spec.rules[0].backendRefs[2].weigth`: the form of every field path we print.
fn field_path(segments: &[Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        match s {
            Segment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// The property names a JSON schema (as schemars writes it) allows at `path`, sorted.
fn fields_at(schema: &serde_json::Value, path: &[Segment]) -> Vec<String> {
    /// Follows `$ref`s and the `anyOf`/`oneOf`/`allOf` that wrap an optional value.
    fn resolve<'a>(
        defs: Option<&'a serde_json::Value>,
        mut node: &'a serde_json::Value,
    ) -> Option<&'a serde_json::Value> {
        for _ in 0..16 {
            if let Some(r) = node.get("$ref").and_then(|r| r.as_str()) {
                node = defs?.get(r.rsplit('/').next()?)?;
                continue;
            }
            if node.get("properties").is_some() {
                return Some(node);
            }
            let branch = ["anyOf", "oneOf", "allOf"].iter().find_map(|k| {
                node.get(*k)?
                    .as_array()?
                    .iter()
                    .find(|b| b.get("type").and_then(|t| t.as_str()) != Some("null"))
            });
            match branch {
                Some(b) => node = b,
                None => return Some(node),
            }
        }
        None
    }
    let defs = schema.get("$defs").or_else(|| schema.get("definitions"));
    let Some(mut node) = resolve(defs, schema) else {
        return Vec::new();
    };
    for s in path {
        let next = match s {
            Segment::Key(k) => node
                .get("properties")
                .and_then(|p| p.get(k))
                .or_else(|| node.get("additionalProperties")),
            Segment::Index(_) => node.get("items"),
        };
        match next.and_then(|n| resolve(defs, n)) {
            Some(n) => node = n,
            None => return Vec::new(),
        }
    }
    let mut names: Vec<String> = node
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Store, LoadErrors> {
        load_text(Path::new("test.yaml"), text)
    }

    #[test]
    fn namespace_defaults_and_multi_document() {
        let store = load(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: c}\nspec: {controllerName: x/y}\n---\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n",
        )
        .unwrap();
        assert!(store.gateway_classes.contains_key("c"));
        assert!(store.services.contains_key(&NsName::new("default", "s")));
    }

    #[test]
    fn grpc_routes_are_validated_as_the_crd_does() {
        let route = |method: &str| {
            format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: g, namespace: n}}\n\
                 spec:\n  rules:\n  - name: a\n    matches: [{{method: {method}}}]\n  - name: a\n"
            )
        };
        let err = load(&route("{service: 'pkg.Svc', method: 'Bad-Name'}")).unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                ".spec.rules[0].matches[0].method.method",
                ".spec.rules[1].name"
            ],
            "{err}"
        );
        assert_eq!(err.0[0].object, "GRPCRoute n/g");
        // A RegularExpression match may leave both sides empty (every call); Exact may not.
        let one_rule = |method: &str| {
            format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: g, namespace: n}}\n\
                 spec:\n  rules:\n  - matches: [{{method: {method}}}]\n"
            )
        };
        load(&one_rule(
            "{type: RegularExpression, service: '', method: ''}",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let err = load(&one_rule("{type: Exact}")).unwrap_err();
        assert!(err.to_string().contains("one or both"), "{err}");
        // TLSRoute v1 needs hostnames; TCP and UDP routes load at v1.
        let tls = "apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {name: t, namespace: n}\n\
                   spec: {rules: [{backendRefs: [{name: b, port: 443}]}]}\n";
        assert!(load(tls).unwrap_err().to_string().contains("hostnames"));
        for kind in ["TCPRoute", "UDPRoute"] {
            let l4 = format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\nmetadata: {{name: r, namespace: n}}\n\
                 spec: {{rules: [{{backendRefs: [{{name: b, port: 53}}]}}]}}\n"
            );
            load(&l4).unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
    }

    #[test]
    fn unknown_enum_value_names_file_object_field() {
        let err = load(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: n}\nspec:\n  rules:\n  - matches:\n    - path: {type: Fuzzy, value: /}\n",
        )
        .unwrap_err();
        let e = &err.0[0];
        assert_eq!(e.object, "HTTPRoute n/r");
        assert_eq!(e.field, ".spec.rules[0].matches[0].path.type");
        assert!(e.message.contains("Fuzzy"), "{}", e.message);
        assert!(err.to_string().contains("test.yaml (document 1)"));
    }

    #[test]
    fn unknown_field_is_rejected() {
        let err = load(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: c}\nspec: {controllerName: x/y, colour: red}\n",
        )
        .unwrap_err();
        assert_eq!(err.0[0].field, ".spec.colour");
        assert_eq!(
            err.0[0].message,
            "unknown field \"colour\"; expected one of: controllerName, description, parametersRef"
        );
    }

    #[test]
    fn bad_yaml_is_reported() {
        let err = load("kind: [unclosed\n").unwrap_err();
        assert!(err.0[0].message.starts_with("invalid YAML"));
    }

    #[test]
    fn parse_cache_reparses_only_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        let svc = |name: &str| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: 80}}]}}\n")
        };
        std::fs::write(dir.path().join("a.yaml"), svc("a")).unwrap();
        std::fs::write(dir.path().join("b.yaml"), svc("b")).unwrap();
        let mut cache = ParseCache::default();
        load_path_cached(dir.path(), &mut cache).unwrap();
        let a_before = cache.files[&dir.path().join("a.yaml")].1.clone();
        std::fs::write(dir.path().join("b.yaml"), svc("c")).unwrap();
        let store = load_path_cached(dir.path(), &mut cache).unwrap();
        assert!(store.services.contains_key(&NsName::new("default", "c")));
        assert!(!store.services.contains_key(&NsName::new("default", "b")));
        assert!(std::sync::Arc::ptr_eq(
            &a_before,
            &cache.files[&dir.path().join("a.yaml")].1
        ));
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        let store = load_path_cached(dir.path(), &mut cache).unwrap();
        assert!(!store.services.contains_key(&NsName::new("default", "a")));
        assert_eq!(cache.files.len(), 1);
    }

    #[test]
    fn duplicate_objects_are_rejected() {
        let doc =
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n";
        let err = load(&format!("{doc}---\n{doc}")).unwrap_err();
        assert!(err.0[0].message.contains("duplicate"));
    }
}
