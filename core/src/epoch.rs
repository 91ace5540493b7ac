//! The epoch ticker that turns time limits into interrupts.
//!
//! Wasmtime checks an epoch counter at function entries and loop back-edges; a store whose
//! deadline epoch has passed traps with `Interrupt`. This thread advances the epoch every
//! [`TICK`] while any invocation is in flight, and parks after a short idle spell so an idle
//! runtime costs no CPU. Waking it costs a syscall only on the first call after idling.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use wasmtime::Engine;

/// Resolution of time limits.
pub const TICK: Duration = Duration::from_millis(1);

/// Idle ticks before the thread parks.
const IDLE_TICKS_BEFORE_PARK: u32 = 200;

struct Shared {
    active: AtomicUsize,
    parked: AtomicBool,
    stop: AtomicBool,
}

/// Owns the ticker thread; dropping it stops the thread.
pub struct EpochTicker {
    shared: Arc<Shared>,
    thread: Thread,
    handle: Option<JoinHandle<()>>,
}

/// Marks one invocation in flight for as long as it lives.
pub struct InFlight<'a>(&'a EpochTicker);

impl EpochTicker {
    /// Starts the ticker for `engine`.
    pub fn start(engine: Engine) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            active: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("megavisor-epoch".into())
            .spawn(move || tick_loop(&engine, &thread_shared))?;
        Ok(EpochTicker {
            shared,
            thread: handle.thread().clone(),
            handle: Some(handle),
        })
    }

    /// Registers an invocation; time passes for it until the guard drops.
    pub fn enter(&self) -> InFlight<'_> {
        self.shared.active.fetch_add(1, SeqCst);
        if self.shared.parked.load(SeqCst) {
            self.thread.unpark();
        }
        InFlight(self)
    }

    /// Deadline in ticks for a time limit, rounded up, plus one for the partial tick now.
    pub fn ticks_for(limit: Duration) -> u64 {
        limit.as_micros().div_ceil(TICK.as_micros()) as u64 + 1
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.shared.active.fetch_sub(1, SeqCst);
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        self.thread.unpark();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn tick_loop(engine: &Engine, shared: &Shared) {
    let mut idle = 0u32;
    while !shared.stop.load(SeqCst) {
        std::thread::sleep(TICK);
        engine.increment_epoch();
        if shared.active.load(SeqCst) > 0 {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle >= IDLE_TICKS_BEFORE_PARK {
            // Announce the park before re-checking `active`: an `enter` that misses the flag
            // has already made `active` non-zero, so we do not park; one that sees it unparks us.
            shared.parked.store(true, SeqCst);
            if shared.active.load(SeqCst) == 0 && !shared.stop.load(SeqCst) {
                std::thread::park();
            }
            shared.parked.store(false, SeqCst);
            idle = 0;
        }
    }
}
