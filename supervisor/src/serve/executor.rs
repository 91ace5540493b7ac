//! The guest threads: a fixed pool behind a bounded queue. A call that finds the queue full
//! is refused at once as `busy` rather than waiting in an unbounded backlog, and a call
//! whose end (time limit, deadline, cancellation) comes while it waits is answered then
//! (see `megavisor_core::queue`).
//!
//! Two counts: calls holding capacity (queued or running; released by the job, through its
//! [`Place`], as soon as the engine is done and *before* it replies, so a client that calls
//! again on receiving its reply never finds its own finished call still counted), and calls
//! not yet answered (released after the job, which replied; a drain waits for it).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use megavisor_core::queue::{Queue, Waiting};
use megavisor_core::{Stop, Stopped};

use super::seccomp::GuestFilter;

/// How long an idle guest thread keeps looking for the next job before it sleeps. Calls
/// tend to come in bursts; a thread that is still looking takes the next one without a
/// wake-up (several microseconds). It yields while it looks, so it never keeps a runnable
/// thread off the CPU.
const IDLE_SPIN: Duration = Duration::from_micros(50);

/// Stack of a guest thread: room beyond the engine's wasm stack limit for the host's frames
/// (WASI calls, the epoch callback), which the default 2 MiB of a Rust thread leaves thin.
const GUEST_THREAD_STACK_BYTES: usize = 8 << 20;

/// One unit of guest work: a call that runs with its permit (dropping it when the engine is
/// done, then replying), or, when its end comes while it waits, answers for itself without
/// running.
pub trait Job: Send + 'static {
    /// When the call must end (asked only of a job that waits in the queue).
    fn stop(&self) -> Stop;
    /// Runs the call and replies.
    fn run(self: Box<Self>, permit: Place);
    /// Replies that the call ended, for `reason`, before it started.
    fn ended(self: Box<Self>, reason: Stopped);
}

/// A call's hold on the pool's capacity; dropping it frees the place.
pub struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A job in the queue, with its place in the pool and in the count of calls outstanding.
struct Queued {
    job: Box<dyn Job>,
    stop: Stop,
    permit: Place,
    outstanding: Arc<AtomicUsize>,
}

impl Waiting for Queued {
    fn stop(&self) -> &Stop {
        &self.stop
    }

    fn stopped(self, reason: Stopped) {
        drop(self.permit);
        guarded("answer a call that ended while queued", || {
            self.job.ended(reason)
        });
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The pool could not take a job.
#[derive(Debug, thiserror::Error)]
#[error(
    "supervisor busy: {in_use} calls running or queued, the limit is {} (--max-concurrency {workers} plus --queue-depth {depth}); retry later",
    workers + depth
)]
pub struct Busy {
    /// Calls queued or running when it was refused.
    pub in_use: usize,
    workers: usize,
    depth: usize,
}

/// Fixed worker threads, each under the guest seccomp filter.
pub struct Executor {
    queue: Arc<Queue<Queued>>,
    /// Calls queued or running (the capacity in use).
    in_use: Arc<AtomicUsize>,
    /// Calls not yet answered.
    outstanding: Arc<AtomicUsize>,
    workers: usize,
    depth: usize,
}

impl Executor {
    /// Starts `workers` threads named `mv-guest-N` that take jobs from a queue of `depth`.
    /// Each installs `filter` before it takes its first job; one that cannot is an error.
    pub fn start(workers: usize, depth: usize, filter: Arc<GuestFilter>) -> std::io::Result<Self> {
        let queue = Arc::new(Queue::new()?);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for n in 0..workers {
            let queue = queue.clone();
            let filter = filter.clone();
            let ready = ready_tx.clone();
            std::thread::Builder::new()
                .name(format!("mv-guest-{n}"))
                .stack_size(GUEST_THREAD_STACK_BYTES)
                .spawn(move || {
                    let installed = filter.install_on_current_thread();
                    let failed = installed.is_err();
                    let _ = ready.send(installed.map_err(|e| e.to_string()));
                    if failed {
                        return;
                    }
                    while let Some(queued) = queue.pop(IDLE_SPIN) {
                        let Queued {
                            job,
                            permit,
                            outstanding,
                            ..
                        } = queued;
                        guarded("run a call", || job.run(permit));
                        outstanding.fetch_sub(1, Ordering::AcqRel);
                    }
                })?;
        }
        for _ in 0..workers {
            ready_rx
                .recv()
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)?;
        }
        Ok(Executor {
            queue,
            in_use: Arc::new(AtomicUsize::new(0)),
            outstanding: Arc::new(AtomicUsize::new(0)),
            workers,
            depth,
        })
    }

    /// Runs `job` on the calling thread (which must be under the guest filter), counted
    /// against the same limit as queued jobs.
    pub fn run_here(&self, job: Box<dyn Job>) -> Result<(), Busy> {
        let (permit, _) = self.reserve()?;
        guarded("run a call", || job.run(permit));
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
        Ok(())
    }

    /// Queues `job`, or refuses it when the workers are all busy and the queue is full.
    pub fn submit(&self, job: Box<dyn Job>) -> Result<(), Busy> {
        let (permit, before) = self.reserve()?;
        let queued = Queued {
            stop: job.stop(),
            job,
            permit,
            outstanding: self.outstanding.clone(),
        };
        // The permits enforce the limit; the queue only closes when the executor goes.
        if let Err(refused) = self.queue.push(queued) {
            drop(refused.permit);
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
            return Err(self.busy(before));
        }
        Ok(())
    }

    /// Takes a place, unless none is free; returns its permit and the places taken before.
    fn reserve(&self) -> Result<(Place, usize), Busy> {
        let before = self.in_use.fetch_add(1, Ordering::AcqRel);
        let permit = Place(self.in_use.clone());
        if before >= self.workers + self.depth {
            return Err(self.busy(before));
        }
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        Ok((permit, before))
    }

    fn busy(&self, in_use: usize) -> Busy {
        Busy {
            in_use,
            workers: self.workers,
            depth: self.depth,
        }
    }

    /// Calls queued or running.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }
}

/// Runs `work`; a panic is logged and contained, so it costs neither a thread nor the count
/// of calls outstanding (jobs reply for themselves, and catch the engine's panics).
fn guarded(what: &str, work: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).is_err() {
        tracing::error!("a guest job panicked trying to {what}; the thread goes on");
    }
}
