//! Compiles the hook's `tetragon.proto` into prost messages and a tonic server (only this
//! dev-only crate carries a gRPC server; the hook has the client).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../oci-hook/proto";
    println!("cargo:rerun-if-changed={proto}/tetragon.proto");
    let fds = protox::compile([format!("{proto}/tetragon.proto")], [proto])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
