//! Sluice gateway: the proxy engine, the translation from Gateway API objects to its
//! configuration, and the standalone file provider.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod config;
pub mod egress;
pub mod engine;
pub mod infra;
pub mod ir;
pub mod metrics;
pub mod pem;
pub mod resources;
pub mod standalone;
pub mod status;
pub mod translate;
pub mod unserved;
pub mod validate;
