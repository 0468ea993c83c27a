//! Compiles `proto/tetragon.proto` into Rust (prost messages and a tonic client and server)
//! without a system `protoc`: `protox` parses the file in-process.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/tetragon.proto");
    let fds = protox::compile(["proto/tetragon.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
