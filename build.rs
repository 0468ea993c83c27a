//! Compiles the setup package's protos into Rust without a system `protoc` (`protox` parses them
//! in-process):
//! - `proto/nri.proto` and `proto/ttrpc.proto`: prost messages for the NRI plugin (its mux and
//!   ttrpc layer are hand-written, so no service code is generated);
//! - `proto/cri.proto`: the CRI runtime service client, used only by the end-to-end tests that
//!   drive containerd (they `include!` the generated `runtime.v1.rs`).
//!
//! The agent API (`oci-hook/proto/tetragon.proto`) is the hook crate's: its client is built
//! there, the tests' stand-in server in `test-agent/`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let nri = ["proto/nri.proto", "proto/ttrpc.proto"];
    for file in nri {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(nri, ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto/cri.proto");
    let fds = protox::compile(["proto/cri.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
