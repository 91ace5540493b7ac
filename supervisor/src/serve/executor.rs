//! The guest threads: a fixed pool behind a bounded queue. A call that finds the queue full
//! is refused at once as `busy` rather than waiting in an unbounded backlog.
//!
//! Two counts: calls holding capacity (queued or running; released by the job, through its
//! [`Permit`], as soon as the engine is done and *before* it replies, so a client that calls
//! again on receiving its reply never finds its own finished call still counted), and calls
//! not yet answered (released after the job, which replied; a drain waits for it).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

use super::seccomp::GuestFilter;

/// How long an idle guest thread keeps looking for the next job before it sleeps. Calls
/// tend to come in bursts; a thread that is still looking takes the next one without a
/// wake-up (several microseconds). It yields while it looks, so it never keeps a runnable
/// thread off the CPU.
const IDLE_SPIN: Duration = Duration::from_micros(50);

/// One unit of guest work; it drops its permit when the engine is done, then replies.
pub type Job = Box<dyn FnOnce(Permit) + Send>;

/// A call's hold on the pool's capacity; dropping it frees the place.
pub struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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
    queue: Sender<(Job, Permit)>,
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
        // The permits enforce the limit; the channel only has to hold every permitted job.
        // (Sized to `depth` alone, a depth of 0 would be a rendezvous channel that refuses
        // a job whenever no worker happens to be blocked in `recv` at that instant.)
        let (queue, jobs) = crossbeam_channel::bounded::<(Job, Permit)>(workers + depth);
        let outstanding = Arc::new(AtomicUsize::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for n in 0..workers {
            let jobs: Receiver<(Job, Permit)> = jobs.clone();
            let outstanding = outstanding.clone();
            let filter = filter.clone();
            let ready = ready_tx.clone();
            std::thread::Builder::new()
                .name(format!("mv-guest-{n}"))
                .spawn(move || {
                    let installed = filter.install_on_current_thread();
                    let failed = installed.is_err();
                    let _ = ready.send(installed.map_err(|e| e.to_string()));
                    if failed {
                        return;
                    }
                    while let Some((job, permit)) = next_job(&jobs) {
                        run_guarded(job, permit);
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
            outstanding,
            workers,
            depth,
        })
    }

    /// Runs `job` on the calling thread (which must be under the guest filter), counted
    /// against the same limit as queued jobs.
    pub fn run_here(&self, job: Job) -> Result<(), Busy> {
        let (permit, _) = self.reserve()?;
        run_guarded(job, permit);
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
        Ok(())
    }

    /// Queues `job`, or refuses it when the workers are all busy and the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), Busy> {
        let (permit, before) = self.reserve()?;
        match self.queue.try_send((job, permit)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                // The permit came back inside the error and is dropped with it.
                self.outstanding.fetch_sub(1, Ordering::AcqRel);
                Err(self.busy(before))
            }
        }
    }

    /// Takes a place, unless none is free; returns its permit and the places taken before.
    fn reserve(&self) -> Result<(Permit, usize), Busy> {
        let before = self.in_use.fetch_add(1, Ordering::AcqRel);
        let permit = Permit(self.in_use.clone());
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

/// The next job: looked for briefly, then waited for. `None` once the pool is shut.
fn next_job(jobs: &Receiver<(Job, Permit)>) -> Option<(Job, Permit)> {
    let until = Instant::now() + IDLE_SPIN;
    while Instant::now() < until {
        match jobs.try_recv() {
            Ok(job) => return Some(job),
            Err(TryRecvError::Empty) => std::thread::yield_now(),
            Err(TryRecvError::Disconnected) => return None,
        }
    }
    jobs.recv().ok()
}

/// Runs a job; a panic is logged and contained, so it costs neither a guest thread nor the
/// count of calls outstanding (jobs reply for themselves, and catch the engine's panics).
fn run_guarded(job: Job, permit: Permit) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(permit))).is_err() {
        tracing::error!("a guest job panicked; the thread goes on");
    }
}
