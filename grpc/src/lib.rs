//! The RuntimeDriver gRPC API (package `runtime.v1`), generated from
//! `proto/runtime/v1/driver.proto`: the server trait the supervisor implements and the
//! client the benchmarks (and any Rust orchestrator) use. See the `.proto` for how an
//! `Execute` becomes a tool call.

/// Package `runtime.v1`.
#[allow(missing_docs, clippy::doc_markdown, clippy::large_enum_variant)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/runtime.v1.rs"));
}

/// The trailer that carries megavisor's error kind (`timeout`, `hash_mismatch`, ...) with
/// every error status.
pub const ERROR_KIND_TRAILER: &str = "megavisor-error-kind";
