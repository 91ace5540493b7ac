//! The client's typed errors.

use megavisor_wire::frame::FrameError;
use megavisor_wire::proto;

/// A result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a call failed: the supervisor's kinds, plus the client's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A bundle file's content does not match the signed manifest.
    HashMismatch,
    /// The manifest's signature was refused.
    BadSignature,
    /// No such tool.
    ToolNotFound,
    /// Policy refused the call (capability, mount, binary) or the connection (peer uid).
    NotAllowed,
    /// The tool ran past its time limit.
    Timeout,
    /// The tool tried to grow its memory past its limit.
    MemoryLimit,
    /// The tool trapped.
    Trap,
    /// The call is malformed or too large.
    BadRequest,
    /// The supervisor failed internally.
    Internal,
    /// The supervisor's concurrency limit and queue are full; retry later.
    Busy,
    /// The supervisor is draining and takes no new calls.
    ShuttingDown,
    /// The caller gave up on the call, which was stopped.
    Cancelled,
    /// The session a call named is gone (closed, expired, ended by a failed call), or
    /// none could be kept.
    SessionGone,
    /// The connection to the supervisor is gone (or could not be made).
    ConnectionLost,
    /// The supervisor said something this client does not understand.
    Protocol,
}

impl ErrorKind {
    /// The stable snake-case name (`timeout`, `connection_lost`, ...).
    pub fn as_str(self) -> &'static str {
        self.info().name
    }

    fn from_wire(kind: i32) -> Self {
        use proto::ErrorKind as K;
        match K::try_from(kind) {
            Ok(K::HashMismatch) => ErrorKind::HashMismatch,
            Ok(K::BadSignature) => ErrorKind::BadSignature,
            Ok(K::ToolNotFound) => ErrorKind::ToolNotFound,
            Ok(K::NotAllowed) => ErrorKind::NotAllowed,
            Ok(K::Timeout) => ErrorKind::Timeout,
            Ok(K::MemoryLimit) => ErrorKind::MemoryLimit,
            Ok(K::Trap) => ErrorKind::Trap,
            Ok(K::BadRequest) => ErrorKind::BadRequest,
            Ok(K::Internal) => ErrorKind::Internal,
            Ok(K::Busy) => ErrorKind::Busy,
            Ok(K::ShuttingDown) => ErrorKind::ShuttingDown,
            Ok(K::Cancelled) => ErrorKind::Cancelled,
            Ok(K::SessionGone) => ErrorKind::SessionGone,
            Ok(K::Unspecified) | Err(_) => ErrorKind::Protocol,
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call or connection.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    partial: Option<Box<proto::Output>>,
}

impl Error {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            partial: None,
        }
    }

    /// How the call failed.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What the tool wrote before it was stopped (timeout, memory limit, trap, cancel).
    pub fn partial_output(&self) -> Option<&proto::Output> {
        self.partial.as_deref()
    }

    /// The error a wire failure describes (as the supervisor sends them, or as an embedded
    /// engine's errors are converted).
    pub fn from_failure(failure: proto::Failure) -> Self {
        Error {
            kind: ErrorKind::from_wire(failure.kind),
            message: failure.message,
            partial: failure.partial.map(Box::new),
        }
    }

    pub(crate) fn connection_lost(detail: impl std::fmt::Display) -> Self {
        Error::new(
            ErrorKind::ConnectionLost,
            format!("connection to the supervisor lost: {detail}"),
        )
    }

    pub(crate) fn protocol(detail: impl std::fmt::Display) -> Self {
        Error::new(ErrorKind::Protocol, format!("protocol error: {detail}"))
    }
}

impl From<FrameError> for Error {
    fn from(err: FrameError) -> Self {
        match err {
            FrameError::Malformed { .. } | FrameError::TooLarge { .. } | FrameError::TooManyFds => {
                Error::protocol(err)
            }
            FrameError::Closed | FrameError::Io(_) | FrameError::TimedOut(_) => {
                Error::connection_lost(err)
            }
        }
    }
}
