//! The straggler watch. A call that arrives alone runs on its connection's reader thread,
//! which saves a thread hop; but while it runs, that reader takes no further calls from its
//! client. This thread looks, every millisecond while such calls run, for connections whose
//! reader has been busy for over a millisecond with calls waiting behind it, and moves those
//! calls to the guest pool. It parks when no call has run on a reader for a while (and none
//! is running), so an idle supervisor has no thread waking up.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::Thread;
use std::time::Duration;

use super::Shared;
use super::connection::{Connection, dispatch_stragglers};

const TICK: Duration = Duration::from_millis(1);
/// Ticks without a call on a reader thread before the watch parks.
const IDLE_TICKS_BEFORE_PARK: u32 = 100;

/// The watch's shared state; the thread itself is started by [`StragglerWatch::start`].
#[derive(Default)]
pub struct StragglerWatch {
    connections: Mutex<Vec<Weak<Connection>>>,
    /// Bumped each time a call starts on a reader thread.
    activity: AtomicU64,
    /// Calls running on reader threads now.
    running: AtomicUsize,
    parked: AtomicBool,
    thread: Mutex<Option<Thread>>,
}

impl StragglerWatch {
    /// Starts the watch thread for `shared`.
    pub fn start(shared: &Arc<Shared>) -> std::io::Result<()> {
        let weak = Arc::downgrade(shared);
        let handle = std::thread::Builder::new()
            .name("mv-stragglers".into())
            .spawn(move || run(weak))?;
        *shared.stragglers.thread.lock().expect("watch thread lock") =
            Some(handle.thread().clone());
        Ok(())
    }

    /// Adds a ring connection to watch (dropped from the list once it is gone).
    pub fn register(&self, connection: &Arc<Connection>) {
        let mut connections = self.connections.lock().expect("watch list lock");
        connections.retain(|c| c.strong_count() > 0);
        connections.push(Arc::downgrade(connection));
    }

    /// A call is starting on a reader thread: makes sure the watch is awake until the
    /// returned guard is dropped (when the call has ended).
    pub fn watch(&self) -> Watched<'_> {
        self.running.fetch_add(1, Ordering::SeqCst);
        self.activity.fetch_add(1, Ordering::SeqCst);
        if self.parked.swap(false, Ordering::SeqCst)
            && let Some(thread) = &*self.thread.lock().expect("watch thread lock")
        {
            thread.unpark();
        }
        Watched(self)
    }
}

/// A call running on a reader thread, watched until dropped.
pub struct Watched<'a>(&'a StragglerWatch);

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

fn run(shared: Weak<Shared>) {
    let mut last_activity = 0;
    let mut idle_ticks = 0;
    loop {
        std::thread::sleep(TICK);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let watch = &shared.stragglers;
        let activity = watch.activity.load(Ordering::SeqCst);
        if activity == last_activity && watch.running.load(Ordering::SeqCst) == 0 {
            idle_ticks += 1;
        } else {
            idle_ticks = 0;
            last_activity = activity;
        }
        let connections: Vec<Arc<Connection>> = watch
            .connections
            .lock()
            .expect("watch list lock")
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for connection in &connections {
            dispatch_stragglers(&shared, connection);
        }
        if idle_ticks >= IDLE_TICKS_BEFORE_PARK {
            watch.parked.store(true, Ordering::SeqCst);
            // A call that started between the check and the flag has bumped `activity`.
            if watch.activity.load(Ordering::SeqCst) == last_activity {
                drop(connections);
                drop(shared);
                std::thread::park();
            }
            idle_ticks = 0;
        }
    }
}
