//! Workload identity for the mesh: SPIFFE IDs (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`) and
//! the workload CA that signs certificate signing requests for them.
//!
//! The CA signs only the identity its caller proved (the certificate service checks the
//! caller's ServiceAccount token first, then asks this crate to sign for that identity): a
//! request naming any other subjectAltName is refused, whatever the CSR asks for. Leaf
//! certificates carry exactly one URI SAN, the SPIFFE ID, and serve both ends of mTLS.

mod ca;
mod spiffe;

pub use ca::{renew_at, SignError, SignedChain, WorkloadCa, DEFAULT_TTL, MAX_TTL};
pub use spiffe::{IdError, SpiffeId};
