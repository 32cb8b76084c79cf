//! Sluice conformance: the echo backend that tests, examples and benchmarks use as upstream.
#![forbid(unsafe_code)]

pub mod echo;
pub mod grpc_echo;
pub mod l4_echo;
