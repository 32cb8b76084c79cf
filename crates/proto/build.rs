//! Compiles the protocol with protox (a protobuf compiler in Rust), so building needs no
//! `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/sluice/discovery/v1/discovery.proto",
        "proto/istio/v1/auth/ca.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let files = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure().compile_fds(files)?;
    Ok(())
}
