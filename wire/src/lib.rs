//! megavisor's wire protocol, shared by the supervisor and every client.
//!
//! - [`proto`]: the messages, generated from `proto/megavisor/v1/wire.proto`;
//! - [`frame`]: length-prefixed frames on the Unix socket, with file descriptors passed by
//!   `SCM_RIGHTS`;
//! - [`ring`]: the layout of the shared-memory ring and its single-producer, single-consumer
//!   queues, written to treat the other side's memory as hostile;
//! - [`doorbell`]: the socket-pair wake-ups that let an idle side sleep;
//! - [`waiting`]: how either side waits for the other's next message.
//!
//! This crate knows nothing of the engine: the client builds on it without Wasmtime.

pub mod doorbell;
pub mod frame;
pub mod ring;
pub mod waiting;

/// The protocol messages (package `megavisor.v1`).
#[allow(missing_docs, clippy::doc_markdown, clippy::large_enum_variant)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/megavisor.v1.rs"));
}

/// The protocol version this crate speaks; the handshake refuses any other.
/// Version 2: a socket-pair doorbell, `Cancel`, the `cancelled` kind. Version 3: sessions
/// (`OpenSession`, `CloseSession`, `Call.session`) and the `session_gone` kind.
pub const PROTOCOL_VERSION: u32 = 3;

impl proto::ErrorKind {
    /// The stable snake-case name shared with megavisor-core (`hash_mismatch`, `busy`, ...).
    pub fn name(self) -> &'static str {
        use proto::ErrorKind as K;
        match self {
            K::Unspecified => "unspecified",
            K::HashMismatch => "hash_mismatch",
            K::BadSignature => "bad_signature",
            K::ToolNotFound => "tool_not_found",
            K::NotAllowed => "not_allowed",
            K::Timeout => "timeout",
            K::MemoryLimit => "memory_limit",
            K::Trap => "trap",
            K::BadRequest => "bad_request",
            K::Internal => "internal",
            K::Busy => "busy",
            K::ShuttingDown => "shutting_down",
            K::Cancelled => "cancelled",
            K::SessionGone => "session_gone",
        }
    }
}

impl proto::Failure {
    /// A failure of `kind` with `message` and no partial output.
    pub fn new(kind: proto::ErrorKind, message: impl Into<String>) -> Self {
        proto::Failure {
            kind: kind as i32,
            message: message.into(),
            partial: None,
        }
    }
}
