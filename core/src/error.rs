//! Typed errors of the public API.
//!
//! Every failure carries an [`ErrorKind`] that transports and bindings map to their own
//! idioms (gRPC status codes, Python exceptions, C error codes), and a message a person can
//! act on: which file, which digest, which limit.

use std::path::PathBuf;

use crate::result::Output;

/// The stable, transport-independent classification of a failure.
///
/// The string forms (`hash_mismatch`, `timeout`, ...) are part of the wire contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A file's content does not match the digest the signed manifest records.
    HashMismatch,
    /// The manifest is unsigned, signed by an untrusted key, or its signature is invalid.
    BadSignature,
    /// No entry of that name (or digest) exists in the manifest.
    ToolNotFound,
    /// Policy refuses the request (its message starts `EACCES:`): capability, mount or
    /// binary.
    NotAllowed,
    /// The invocation ran past its time limit (or exhausted its fuel).
    Timeout,
    /// The invocation tried to grow its memory past its limit.
    MemoryLimit,
    /// The guest trapped (unreachable, out-of-bounds access, stack overflow, ...).
    Trap,
    /// The request is malformed or asks for something out of range.
    BadRequest,
    /// The runtime cannot read, compile or load something it needs (I/O, engine failure).
    Internal,
    /// The caller gave up on the call (a cancelled RPC, a closed connection, a dropped
    /// future), and it was stopped.
    Cancelled,
    /// The session a call named is gone (closed, expired, ended by a failed call, or never
    /// opened by this caller), or no session could be kept for it.
    SessionGone,
}

impl ErrorKind {
    /// Every kind, for the tests that hold other tables of kinds to this one.
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::HashMismatch,
        ErrorKind::BadSignature,
        ErrorKind::ToolNotFound,
        ErrorKind::NotAllowed,
        ErrorKind::Timeout,
        ErrorKind::MemoryLimit,
        ErrorKind::Trap,
        ErrorKind::BadRequest,
        ErrorKind::Internal,
        ErrorKind::Cancelled,
        ErrorKind::SessionGone,
    ];

    /// The wire name of this kind, e.g. `"hash_mismatch"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::HashMismatch => "hash_mismatch",
            ErrorKind::BadSignature => "bad_signature",
            ErrorKind::ToolNotFound => "tool_not_found",
            ErrorKind::NotAllowed => "not_allowed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::MemoryLimit => "memory_limit",
            ErrorKind::Trap => "trap",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Internal => "internal",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::SessionGone => "session_gone",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every error returned by `megavisor-core`.
///
/// Errors are `Clone` so that the idempotency cache can replay a failed execution exactly.
/// Failures that happen while the guest runs carry the partial [`Output`] (what it printed
/// before it was stopped), because that is often what explains the failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A file's digest differs from the one the manifest records.
    #[error("hash mismatch for {}: expected {algorithm} {expected}, found {actual}", file.display())]
    HashMismatch {
        /// The file whose content was hashed.
        file: PathBuf,
        /// `sha256` or `blake3`.
        algorithm: &'static str,
        /// Hex digest recorded in the signed manifest.
        expected: String,
        /// Hex digest of the bytes actually read.
        actual: String,
    },
    /// A file's size differs from the one the manifest records.
    #[error("size mismatch for {}: manifest says {expected} bytes, file has {actual}", file.display())]
    SizeMismatch {
        /// The file that was read.
        file: PathBuf,
        /// Size recorded in the manifest.
        expected: u64,
        /// Size found on disk.
        actual: u64,
    },
    /// The manifest signature could not be accepted.
    #[error("bad signature on {}: {reason}", manifest.display())]
    BadSignature {
        /// The manifest whose signature was checked.
        manifest: PathBuf,
        /// Why it was refused (missing, untrusted key, invalid).
        reason: String,
    },
    /// The requested tool does not exist.
    #[error("tool not found: {name}{}", if available.is_empty() { String::new() } else { format!(" (available: {available})") })]
    ToolNotFound {
        /// The name (or digest) asked for.
        name: String,
        /// Comma-separated names that do exist, to help the caller.
        available: String,
    },
    /// Policy refused the request.
    #[error("EACCES: {0}")]
    NotAllowed(String),
    /// The guest ran out of time (or fuel).
    #[error("timeout: {tool} exceeded its {limit}")]
    Timeout {
        /// Tool that was stopped.
        tool: String,
        /// The limit that was hit, e.g. `time limit of 2000 ms`.
        limit: String,
        /// What the guest had written before it was stopped.
        partial: Box<Output>,
    },
    /// The call was stopped for a reason outside the tool: its caller's deadline passed, or
    /// its time limit ran out before it could start. Unlike [`Error::Timeout`], this is no
    /// answer of the tool's, so a retry with the same execution id runs again.
    #[error("timeout: {tool} {reason}")]
    DeadlineExceeded {
        /// Tool that was stopped (or never started).
        tool: String,
        /// What ran out, e.g. `was stopped at the caller's deadline after 95 ms`.
        reason: String,
        /// What the guest had written before it was stopped.
        partial: Box<Output>,
    },
    /// The caller gave up on the call, which was stopped (or never started).
    #[error("cancelled: the caller gave up on {tool}")]
    Cancelled {
        /// Tool that was stopped.
        tool: String,
        /// What the guest had written before it was stopped.
        partial: Box<Output>,
    },
    /// The guest tried to grow memory past its limit.
    #[error(
        "memory limit: {tool} tried to grow its memory to {requested} bytes, limit is {limit} bytes"
    )]
    MemoryLimit {
        /// Tool that was stopped.
        tool: String,
        /// Size in bytes the guest asked for.
        requested: u64,
        /// The cap in bytes.
        limit: u64,
        /// What the guest had written before it was stopped.
        partial: Box<Output>,
    },
    /// The guest trapped.
    #[error("trap in {tool}: {message}")]
    Trap {
        /// Tool that trapped.
        tool: String,
        /// The trap description from the engine.
        message: String,
        /// What the guest had written before it trapped.
        partial: Box<Output>,
    },
    /// The request is malformed or out of range.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The session named is gone, or none can be kept.
    #[error("session gone: {0}")]
    SessionGone(String),
    /// The manifest or an entries file is malformed.
    #[error("invalid manifest {}: {reason}", file.display())]
    InvalidManifest {
        /// The file that failed to parse or validate.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O operation on a named file failed.
    #[error("{}: {action}: {message}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done, e.g. `read`.
        action: &'static str,
        /// The operating-system error.
        message: String,
    },
    /// The engine failed to compile, deserialize or instantiate a module.
    #[error("engine: {0}")]
    Engine(String),
}

impl Error {
    /// The transport-independent classification of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::HashMismatch { .. } | Error::SizeMismatch { .. } => ErrorKind::HashMismatch,
            Error::BadSignature { .. } => ErrorKind::BadSignature,
            Error::ToolNotFound { .. } => ErrorKind::ToolNotFound,
            Error::NotAllowed(_) => ErrorKind::NotAllowed,
            Error::Timeout { .. } | Error::DeadlineExceeded { .. } => ErrorKind::Timeout,
            Error::Cancelled { .. } => ErrorKind::Cancelled,
            Error::MemoryLimit { .. } => ErrorKind::MemoryLimit,
            Error::Trap { .. } => ErrorKind::Trap,
            Error::BadRequest(_) => ErrorKind::BadRequest,
            Error::SessionGone(_) => ErrorKind::SessionGone,
            Error::InvalidManifest { .. } | Error::Io { .. } | Error::Engine(_) => {
                ErrorKind::Internal
            }
        }
    }

    /// The output the guest produced before a run-time failure, if any.
    pub fn partial_output(&self) -> Option<&Output> {
        match self {
            Error::Timeout { partial, .. }
            | Error::DeadlineExceeded { partial, .. }
            | Error::Cancelled { partial, .. }
            | Error::MemoryLimit { partial, .. }
            | Error::Trap { partial, .. } => Some(partial),
            _ => None,
        }
    }

    /// Whether this failure is the tool's own answer to its request, to be replayed for its
    /// execution id: not a failure of the host, nor a stop its caller (or the queue) caused.
    pub(crate) fn is_answer(&self) -> bool {
        !matches!(
            self,
            Error::DeadlineExceeded { .. } | Error::Cancelled { .. }
        ) && self.kind() != ErrorKind::Internal
    }

    /// An I/O failure of `action` (e.g. `read`) on `path`.
    pub fn io(path: impl Into<PathBuf>, action: &'static str, err: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            action,
            message: err.to_string(),
        }
    }
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
