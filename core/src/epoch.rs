//! Time limits, caller deadlines and cancellation, turned into interrupts.
//!
//! Wasmtime checks an epoch counter at function entries and loop back-edges. The ticker
//! thread advances it every [`TICK`] while any invocation is in flight, and parks after a
//! short idle spell so an idle runtime costs no CPU (waking it costs a syscall only on the
//! first call after idling). Each store's deadline is the next tick, where a callback asks
//! the call's [`Stop`] whether to go on. The ticks only prompt the question: the answer
//! compares the clock with the call's end, so a late or oversleeping ticker delays a stop by
//! its own lateness, never by the sum of every tick's (counting ticks ran limits 12-18%
//! long, and several times long under load).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use wasmtime::Engine;

use crate::caller::{Caller, CancelToken};
use crate::error::Error;
use crate::result::Output;

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
}

/// The longest a waiting call (for a slot, a duplicate's first run, a native process, a
/// sleep in the host) goes without looking at its [`Stop`]: a caller that gives up is let
/// go within this.
pub const LOOK_EVERY: Duration = Duration::from_millis(5);

/// When a call must end, and why: its time limit (counted from its arrival, so it covers
/// time queued), its caller's deadline, or its caller giving up.
#[derive(Debug, Clone)]
pub struct Stop {
    limit: Duration,
    limit_at: Instant,
    deadline: Option<Instant>,
    cancel: CancelToken,
}

/// Why a call was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Its time limit ran out.
    Limit,
    /// Its caller's deadline came first.
    Deadline,
    /// Its caller gave up.
    Cancelled,
}

impl Stop {
    /// The end of a call from `caller` with time limit `limit`.
    pub fn new(caller: &Caller, limit: Duration) -> Self {
        Stop {
            limit,
            limit_at: caller.received + limit,
            deadline: caller.deadline,
            cancel: caller.cancel.clone(),
        }
    }

    /// The time limit.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Whether the caller has given up (without reading the clock).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Whether the call must stop now, and why.
    pub fn check(&self) -> Option<Stopped> {
        if self.cancel.is_cancelled() {
            return Some(Stopped::Cancelled);
        }
        let now = Instant::now();
        match self.deadline {
            Some(deadline) if deadline < self.limit_at && now >= deadline => {
                Some(Stopped::Deadline)
            }
            _ if now >= self.limit_at => Some(Stopped::Limit),
            _ => None,
        }
    }

    /// The error of a call stopped for `reason`, with what it wrote; `started` says whether
    /// its tool ran at all (a call whose time ran out while it waited to start has no answer
    /// of the tool's to remember).
    pub fn error(&self, reason: Stopped, partial: Output, started: bool) -> Error {
        let tool = partial.tool.clone();
        let elapsed = (self.limit_at - self.limit).elapsed().as_millis();
        let partial = Box::new(partial);
        match reason {
            Stopped::Cancelled => Error::Cancelled { tool, partial },
            Stopped::Limit if started => Error::Timeout {
                tool,
                limit: format!("time limit of {} ms", self.limit.as_millis()),
                partial,
            },
            Stopped::Limit => Error::DeadlineExceeded {
                tool,
                reason: format!(
                    "waited {elapsed} ms to start, past its time limit of {} ms",
                    self.limit.as_millis()
                ),
                partial,
            },
            Stopped::Deadline => Error::DeadlineExceeded {
                tool,
                reason: format!(
                    "was stopped at its caller's deadline, {elapsed} ms after the call arrived{}",
                    if started {
                        ""
                    } else {
                        " and before it started"
                    }
                ),
                partial,
            },
        }
    }

    /// The error of a call of `tool` whose end came, for `reason`, before it started; its
    /// partial output says how long it waited.
    pub fn ended_before_start(
        &self,
        reason: Stopped,
        tool: &str,
        execution_id: Option<String>,
    ) -> Error {
        let waited = (self.limit_at - self.limit).elapsed().as_micros() as u64;
        let partial = Output {
            tool: tool.to_owned(),
            timings: crate::result::Timings {
                queue_us: waited,
                total_us: waited,
                ..crate::result::Timings::default()
            },
            execution_id,
            ..Output::default()
        };
        self.error(reason, partial, false)
    }

    /// How long a waiter may sleep before it looks at this stop again: until the end, but
    /// at least 1 ms and at most [`LOOK_EVERY`].
    pub fn next_look(&self) -> Duration {
        self.remaining().clamp(Duration::from_millis(1), LOOK_EVERY)
    }

    /// How long until the earlier of the time limit and the deadline.
    pub fn remaining(&self) -> Duration {
        let end = self
            .deadline
            .map_or(self.limit_at, |deadline| deadline.min(self.limit_at));
        end.saturating_duration_since(Instant::now())
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
