//! The configuration discovery protocol (`sluice.discovery.v1`), generated from
//! `proto/sluice/discovery/v1/discovery.proto`: the controller serves `ConfigDiscovery`, each
//! gateway is a client.

#![allow(clippy::all, rust_2018_idioms)]

pub mod v1 {
    tonic::include_proto!("sluice.discovery.v1");
}

/// The workload certificate service (`istio.v1.auth`, from `proto/istio/v1/auth/ca.proto`),
/// wire-compatible with Istio's: the controller serves it, workloads call it.
pub mod istio_ca {
    tonic::include_proto!("istio.v1.auth");
}

/// `Snapshot.format` of a JSON-encoded `sluice_config::Config`.
pub const FORMAT_JSON: &str = "sluice-config/json";
