//! The configuration discovery protocol (`sluice.discovery.v1`), generated from
//! `proto/sluice/discovery/v1/discovery.proto`: the controller serves `ConfigDiscovery`, each
//! gateway is a client.

#![allow(clippy::all, rust_2018_idioms)]

pub mod v1 {
    tonic::include_proto!("sluice.discovery.v1");
}

/// `Snapshot.format` of a JSON-encoded `sluice_config::Config`.
pub const FORMAT_JSON: &str = "sluice-config/json";
