//! Sluice's API types and object store: Kubernetes objects (the Gateway API's, core kinds and
//! our EgressPolicy) loaded from manifests as an API server would accept them, the validation
//! the CRDs' schemas and CEL rules apply, and PEM helpers for TLS material in Secrets. No
//! networking, no runtime.

pub mod egress;
pub mod load;
pub mod names;
pub mod pem;
pub mod resources;
pub mod validate;
