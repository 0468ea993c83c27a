//! Compiles `proto/tetragon.proto` (the trimmed agent API) into prost messages and a tonic
//! client, without a system `protoc` (`protox` parses it in-process). The stand-in agent of the
//! tests (`test-agent/`) generates its server from the same file.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/tetragon.proto");
    let fds = protox::compile(["proto/tetragon.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
