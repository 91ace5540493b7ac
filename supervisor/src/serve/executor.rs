//! The guest threads: a fixed pool behind a bounded queue. A call that finds the queue full
//! is refused at once as `busy` rather than waiting in an unbounded backlog.

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

/// One unit of guest work; it sends its own reply.
pub type Job = Box<dyn FnOnce() + Send>;

/// The pool could not take a job.
#[derive(Debug)]
pub struct Busy {
    /// Calls queued or running when it was refused.
    pub outstanding: usize,
}

/// Fixed worker threads, each under the guest seccomp filter.
pub struct Executor {
    queue: Sender<Job>,
    outstanding: Arc<AtomicUsize>,
    capacity: usize,
}

impl Executor {
    /// Starts `workers` threads named `mv-guest-N` that take jobs from a queue of `depth`.
    /// Each installs `filter` before it takes its first job; one that cannot is an error.
    pub fn start(workers: usize, depth: usize, filter: Arc<GuestFilter>) -> std::io::Result<Self> {
        let (queue, jobs) = crossbeam_channel::bounded::<Job>(depth);
        let outstanding = Arc::new(AtomicUsize::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for n in 0..workers {
            let jobs: Receiver<Job> = jobs.clone();
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
                    while let Some(job) = next_job(&jobs) {
                        run_guarded(job);
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
            outstanding,
            capacity: workers + depth,
        })
    }

    /// Runs `job` on the calling thread (which must be under the guest filter), counted
    /// against the same limit as queued jobs.
    pub fn run_here(&self, job: Job) -> Result<(), Busy> {
        self.reserve()?;
        run_guarded(job);
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
        Ok(())
    }

    /// Queues `job`, or refuses it when the workers are all busy and the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), Busy> {
        let before = self.reserve()?;
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.outstanding.fetch_sub(1, Ordering::AcqRel);
                Err(Busy {
                    outstanding: before,
                })
            }
        }
    }

    /// Counts one more call in, unless that would pass the limit; returns the count before.
    fn reserve(&self) -> Result<usize, Busy> {
        let before = self.outstanding.fetch_add(1, Ordering::AcqRel);
        if before >= self.capacity {
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy {
                outstanding: before,
            });
        }
        Ok(before)
    }

    /// Calls queued or running.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }
}

/// The next job: looked for briefly, then waited for. `None` once the pool is shut.
fn next_job(jobs: &Receiver<Job>) -> Option<Job> {
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
fn run_guarded(job: Job) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
        tracing::error!("a guest job panicked; the thread goes on");
    }
}
