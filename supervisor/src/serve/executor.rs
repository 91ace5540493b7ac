//! The guest threads: a fixed pool behind a bounded queue. A call that finds the queue full
//! is refused at once as `busy` rather than waiting in an unbounded backlog.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::seccomp::GuestFilter;

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
    pub fn start(
        workers: usize,
        depth: usize,
        filter: Option<Arc<GuestFilter>>,
    ) -> std::io::Result<Self> {
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
                    if let Some(filter) = filter {
                        let installed = filter.install_on_current_thread();
                        let failed = installed.is_err();
                        let _ = ready.send(installed.map_err(|e| e.to_string()));
                        if failed {
                            return;
                        }
                    } else {
                        let _ = ready.send(Ok(()));
                    }
                    for job in jobs {
                        job();
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

    /// Queues `job`, or refuses it when the workers are all busy and the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), Busy> {
        let before = self.outstanding.fetch_add(1, Ordering::AcqRel);
        if before >= self.capacity {
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy {
                outstanding: before,
            });
        }
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

    /// Calls queued or running.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }
}
