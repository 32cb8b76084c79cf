//! The EgressPolicy resource (`policy.sluice.dev/v1alpha1`): our own CRD, as written in
//! manifests. What a policy decides is `sluice-egress-policy`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The API group of our own policies.
pub const POLICY_GROUP: &str = "policy.sluice.dev";

/// The EgressPolicy resource (`policy.sluice.dev/v1alpha1`), as written in manifests.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EgressPolicy {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    pub spec: EgressPolicySpec,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EgressPolicySpec {
    /// Who the policy applies to. Empty: every source.
    #[serde(default)]
    pub sources: Vec<Source>,
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Source {
    /// Client addresses (standalone mode, or sources outside the mesh).
    pub cidr: Option<String>,
    /// Workloads of a namespace (cluster mode).
    pub namespace: Option<String>,
    /// Workloads running as this service account (cluster mode).
    pub service_account: Option<String>,
    /// Workloads whose labels include all of these (cluster mode, with `namespace`).
    pub labels: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum Action {
    /// Allow the connection.
    #[default]
    Allow,
    /// Allow it and log it as audited: a rule being rolled out.
    Audit,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum Protocol {
    /// Plain HTTP through the forward proxy.
    HTTP,
    /// TLS: CONNECT tunnels and SNI passthrough.
    HTTPS,
    /// Any TCP through CONNECT.
    TCP,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    pub name: String,
    #[serde(default)]
    pub action: Action,
    /// Exact names, or `*.` wildcards that match one or more labels (never the bare domain).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Destination networks; the only way to allow a destination given as an IP address.
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// Destination ports. Empty: any port.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Empty: any protocol.
    #[serde(default)]
    pub protocols: Vec<Protocol>,
    /// Send allowed connections to these addresses instead of resolving the name with DNS
    /// (like an Istio ServiceEntry with STATIC resolution).
    #[serde(default)]
    pub static_endpoints: Vec<SocketAddr>,
    /// Plain HTTP in, TLS out: the gateway opens TLS to the destination, with the requested
    /// name as SNI, verified against these CAs or the system's.
    pub tls_origination: Option<TlsOrigination>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsOrigination {
    /// ConfigMaps (key `ca.crt`) in the policy's namespace. Empty: the system's CAs.
    #[serde(default)]
    pub ca_certificate_refs: Vec<CaRef>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CaRef {
    pub name: String,
}
