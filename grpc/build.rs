//! Generates the RuntimeDriver server and client from `proto/runtime/v1/driver.proto` with
//! protox (a protobuf compiler in Rust, which also supplies `google/protobuf/empty.proto`),
//! so nobody has to install `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../proto";
    let file = "runtime/v1/driver.proto";
    println!("cargo:rerun-if-changed={proto_root}/{file}");
    let descriptors = protox::compile([file], [proto_root])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
