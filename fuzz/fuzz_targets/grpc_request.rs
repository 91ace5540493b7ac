//! A gRPC `Execute` request's bytes, decoded and converted as the RuntimeDriver service
//! converts it (tool by name or native path, string `params` typed by the entry's schema,
//! `params_json`, env, limits).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    megavisor::fuzzing::grpc_request(megavisor_fuzz::runtime(), data);
});
