//! The `gateway` binary's library: the composition root (`app`), the standalone file provider,
//! the controller provider (`controlled`),
//! the admin listener, and the crates it composes, re-exported under the names the binary and
//! its tests use.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod controlled;
pub mod standalone;

pub use sluice_api::{pem, validate};

/// The object store and loading manifests into it.
pub mod resources {
    pub use sluice_api::load::*;
    pub use sluice_api::resources::*;
}
pub use sluice_config as ir;
pub use sluice_engine as engine;
pub use sluice_engine::{access_log, config, metrics};
pub use sluice_translate as translate;
pub use sluice_translate::{infra, presentation as status, unserved};

/// The egress gateway: its data path (engine) and its policies.
pub mod egress {
    pub use sluice_api::egress::POLICY_GROUP;
    pub use sluice_egress_policy as policy;
    pub use sluice_engine::egress::*;
}
