//! Entry points for the fuzz targets in `fuzz/`, compiled only with `--cfg fuzzing` (as
//! `cargo fuzz` builds): what a hostile peer's bytes reach inside the supervisor.

use megavisor_core::Runtime;
use megavisor_grpc::v1::ExecuteRequest;
use prost::Message;

/// A gRPC `Execute` request from a peer's bytes, converted as the service converts it.
pub fn grpc_request(runtime: &Runtime, bytes: &[u8]) {
    if let Ok(execute) = ExecuteRequest::decode(bytes) {
        let _ = crate::serve::grpc::to_request(runtime, execute);
    }
}
