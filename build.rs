//! Generates the gRPC code of `proto/warden/v1/*.proto` with `protox` (a protobuf compiler in
//! Rust), so building Warden needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/warden/v1/control.proto",
        "proto/warden/v1/mediation.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
