//! Compiles the NRI and ttrpc protos under `proto/` into prost messages without a system
//! `protoc`: `protox` parses the files in-process.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let nri = ["proto/nri.proto", "proto/ttrpc.proto"];
    for file in nri {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(nri, ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
