//! Generates the protocol types from `proto/megavisor/v1/wire.proto` with protox, a protobuf
//! compiler in Rust, so nobody has to install `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../proto";
    let file = "megavisor/v1/wire.proto";
    println!("cargo:rerun-if-changed={proto_root}/{file}");
    let descriptors = protox::compile([file], [proto_root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
