//! Who a call is for and how long its caller waits: what a transport knows about the caller
//! that the runtime must honour.
//!
//! - The [`Identity`] names the principal: its execution ids are its own (another
//!   principal's are invisible), and a peer's mounts are opened with its own credentials
//!   under the operator's mount roots, so it reaches nothing it could not reach itself.
//! - [`Caller::received`] starts the call's time limit: the limit covers time spent queued.
//! - [`Caller::deadline`] is when the caller stops waiting (a gRPC deadline); the call is
//!   stopped then, and its outcome is not remembered for its execution id.
//! - The [`CancelToken`] is set when the caller gives up (a cancelled RPC, a closed
//!   connection, a dropped future); the call stops within a few milliseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The caller of one invocation.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Whose call it is.
    pub identity: Identity,
    /// When the call arrived; its time limit runs from here.
    pub received: Instant,
    /// When the caller stops waiting, if it said.
    pub deadline: Option<Instant>,
    /// Set when the caller gives up.
    pub cancel: CancelToken,
}

impl Caller {
    /// This process calling now, with no deadline: what an embedded call is.
    pub fn process() -> Self {
        Caller::new(Identity::Process)
    }

    /// This process calling now and waiting for the answer on this thread, so that it
    /// cannot give up: a caller that costs nothing to make (its token is
    /// [`CancelToken::never`]).
    pub fn process_waiting() -> Self {
        Caller {
            identity: Identity::Process,
            received: Instant::now(),
            deadline: None,
            cancel: CancelToken::never(),
        }
    }

    /// `identity` calling now, with no deadline and a fresh cancel token.
    pub fn new(identity: Identity) -> Self {
        Caller {
            identity,
            received: Instant::now(),
            deadline: None,
            cancel: CancelToken::new(),
        }
    }
}

/// The principal a call runs for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// This process: an embedded caller, whose file access is the process's own.
    Process,
    /// A local user connected to a supervisor, known by its kernel credentials.
    Peer(Credentials),
}

impl Identity {
    /// The namespace of this principal's execution ids: a peer's uid, or `None` for the
    /// process itself.
    pub fn namespace(&self) -> Option<u32> {
        match self {
            Identity::Process => None,
            Identity::Peer(credentials) => Some(credentials.uid),
        }
    }
}

/// A peer's user and groups (from `SO_PEERCRED` and `SO_PEERGROUPS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The peer's effective uid.
    pub uid: u32,
    /// The peer's effective gid.
    pub gid: u32,
    /// The peer's supplementary groups (shared: every call of a connection carries them).
    pub groups: Arc<[u32]>,
}

/// Set when a caller gives up on its call; cheap to clone and to check.
///
/// A token may have a parent (e.g. the connection a call came on): it counts as cancelled
/// when its parent is.
#[derive(Debug, Clone)]
pub struct CancelToken(Option<Arc<CancelState>>);

impl Default for CancelToken {
    fn default() -> Self {
        CancelToken::new()
    }
}

#[derive(Debug, Default)]
struct CancelState {
    cancelled: AtomicBool,
    parent: Option<CancelToken>,
}

impl CancelToken {
    /// A token not cancelled.
    pub fn new() -> Self {
        CancelToken(Some(Arc::default()))
    }

    /// A token nobody can cancel ([`CancelToken::cancel`] does nothing to it), for a caller
    /// that cannot give up; it allocates nothing.
    pub fn never() -> Self {
        CancelToken(None)
    }

    /// A token cancelled by its own [`CancelToken::cancel`] or by this one's.
    pub fn child(&self) -> Self {
        CancelToken(Some(Arc::new(CancelState {
            cancelled: AtomicBool::new(false),
            parent: Some(self.clone()),
        })))
    }

    /// Gives up: whatever runs under this token (and its children) stops.
    pub fn cancel(&self) {
        if let Some(state) = &self.0 {
            state.cancelled.store(true, Ordering::Release);
        }
    }

    /// Whether this token or an ancestor was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.as_ref().is_some_and(|state| {
            state.cancelled.load(Ordering::Acquire)
                || state.parent.as_ref().is_some_and(CancelToken::is_cancelled)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_cancelled_with_its_parent_but_not_the_other_way() {
        let connection = CancelToken::new();
        let call = connection.child();
        let other = connection.child();
        call.cancel();
        assert!(call.is_cancelled() && !other.is_cancelled() && !connection.is_cancelled());
        connection.cancel();
        assert!(other.is_cancelled());
        let never = CancelToken::never();
        never.cancel();
        assert!(!never.is_cancelled() && !never.child().is_cancelled());
    }
}
