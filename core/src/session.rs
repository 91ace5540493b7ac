//! Sessions: one instance of a tool kept alive across calls, for agents that keep state
//! between steps (variables and functions a call defines are there in the next).
//!
//! A session is opened for an entry of a reactor module (one with an exported entry
//! function, like `python` and `js`; a command's `_start` runs once per instance). It holds
//! a pool permit and an instance slot for as long as it lives, so sessions count against
//! the pool; at most [`SessionOptions::max`] are open at once, and never so many that no
//! permit is left for calls outside them. Its calls run one at a time (a call that comes
//! while another runs is refused, not queued), each with its own arguments, stdin, output, mounts and time limit, under the memory cap
//! the session was opened with. It is gone, its slot reset, when it is closed, when it has
//! been idle for [`SessionOptions::idle_ttl`], when a call in it fails other than by
//! exiting (a timeout, the memory limit, a trap: its state can no longer be trusted), or
//! when the runtime ends. A session belongs to the principal that opened it; to anyone
//! else it does not exist.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::pool::HeldInstance;

/// Limits on sessions.
#[derive(Debug, Clone, Copy)]
pub struct SessionOptions {
    /// Sessions open at once (each holds one of the pool's permits).
    pub max: usize,
    /// A session unused this long is closed.
    pub idle_ttl: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            max: 4,
            idle_ttl: Duration::from_secs(600),
        }
    }
}

/// One open session.
pub(crate) struct Session {
    /// Its entry's index in the manifest.
    pub(crate) entry: usize,
    pub(crate) held: HeldInstance,
    last_used: Instant,
}

/// A session's place: `None` once it has ended while a caller still held it.
pub(crate) type SessionSlot = Arc<Mutex<Option<Session>>>;

/// An open session and whose it is. The owner stands beside the session's lock, so that
/// telling a stranger it has no such session never waits for a call running in it.
struct Registered {
    /// The principal that opened it ([`crate::Identity::namespace`]).
    owner: Option<u32>,
    slot: SessionSlot,
}

/// The open sessions of a runtime, by id.
type Open = Arc<Mutex<HashMap<u64, Registered>>>;

/// The open sessions of a runtime.
pub(crate) struct Sessions {
    open: Open,
    options: SessionOptions,
}

impl Sessions {
    /// No sessions yet; a thread closes idle ones for as long as the runtime lives.
    pub(crate) fn new(options: SessionOptions) -> Self {
        let open = Arc::new(Mutex::new(HashMap::new()));
        let watched = Arc::downgrade(&open);
        let every = (options.idle_ttl / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let _ = std::thread::Builder::new()
            .name("mv-sessions".to_owned())
            .spawn(move || expire_idle(watched, options.idle_ttl, every));
        Sessions { open, options }
    }

    /// Registers a new session, unless the maximum are open.
    pub(crate) fn insert(
        &self,
        owner: Option<u32>,
        entry: usize,
        held: HeldInstance,
    ) -> Result<u64> {
        let mut open = lock(&self.open);
        if open.len() >= self.options.max {
            return Err(Error::SessionGone(format!(
                "{} sessions are open, the most this runtime keeps; close one first",
                open.len()
            )));
        }
        let id = loop {
            // 53 random bits: every binding holds the id exactly (a JavaScript number too),
            // and a session is its owner's alone anyway.
            let id = rand_core::RngCore::next_u64(&mut rand_core::OsRng) & ((1 << 53) - 1);
            if id != 0 && !open.contains_key(&id) {
                break id;
            }
        };
        let session = Session {
            entry,
            held,
            last_used: Instant::now(),
        };
        let slot = Arc::new(Mutex::new(Some(session)));
        open.insert(id, Registered { owner, slot });
        Ok(id)
    }

    /// The session `id` of `owner`.
    pub(crate) fn get(&self, id: u64, owner: Option<u32>) -> Result<SessionSlot> {
        lock(&self.open)
            .get(&id)
            .filter(|registered| registered.owner == owner)
            .map(|registered| registered.slot.clone())
            .ok_or_else(|| gone(id))
    }

    /// Ends session `id` of `owner`: its instance is dropped and its slot reset.
    pub(crate) fn close(&self, id: u64, owner: Option<u32>) -> Result<()> {
        let slot = {
            let mut open = lock(&self.open);
            match open.get(&id) {
                Some(registered) if registered.owner == owner => {}
                _ => return Err(gone(id)),
            }
            open.remove(&id).expect("looked up above").slot
        };
        // Waits for a call in it to end: a session runs one call at a time.
        lock(&slot).take();
        Ok(())
    }

    /// Ends session `id` after a call that left it unusable.
    pub(crate) fn end(&self, id: u64, session: &mut Option<Session>) {
        lock(&self.open).remove(&id);
        session.take();
    }
}

impl Session {
    /// Marks the session used now.
    pub(crate) fn touch(&mut self) {
        self.last_used = Instant::now();
    }
}

/// The failure of a call on a session that is not there.
pub(crate) fn gone(id: u64) -> Error {
    Error::SessionGone(format!(
        "session {id:016x} is gone (closed, idle too long, ended by a failed call, or not yours)"
    ))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Closes sessions idle longer than `ttl`, looking `every` so often, until the runtime is
/// dropped. A session in use (locked by its call) is not idle.
fn expire_idle(open: Weak<Mutex<HashMap<u64, Registered>>>, ttl: Duration, every: Duration) {
    loop {
        std::thread::sleep(every);
        let Some(open) = open.upgrade() else {
            return;
        };
        let expired: Vec<SessionSlot> = {
            let mut open = lock(&open);
            let idle: Vec<u64> = open
                .iter()
                .filter(|(_, registered)| {
                    registered
                        .slot
                        .try_lock()
                        .map(|s| s.as_ref().is_none_or(|s| s.last_used.elapsed() >= ttl))
                        .unwrap_or(false)
                })
                .map(|(id, _)| *id)
                .collect();
            idle.iter()
                .filter_map(|id| open.remove(id))
                .map(|registered| registered.slot)
                .collect()
        };
        for slot in expired {
            lock(&slot).take();
        }
    }
}
