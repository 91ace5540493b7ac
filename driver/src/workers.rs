//! The threads that run an embedded driver's background calls.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread;

use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TryRecvError, unbounded};
use megavisor_client::{Call, Error, ErrorKind, Output, Result};
use megavisor_core::Runtime;
use megavisor_wire::doorbell::Patience;

type Done = Box<dyn FnOnce(Result<Output>) + Send>;

/// A pool of `max_concurrency` threads fed by an unbounded queue: a call waits for a thread
/// rather than being refused, as it would wait for an engine slot on the calling thread.
/// The threads end when the pool (the driver) is dropped and the queue drains.
#[derive(Clone)]
pub(crate) struct Workers {
    jobs: Sender<(Call, Done)>,
}

impl Workers {
    /// Starts the threads; if one cannot be started, those already started end with it.
    pub(crate) fn start(runtime: &Arc<Runtime>, threads: u32) -> std::io::Result<Self> {
        let (jobs, queue) = unbounded::<(Call, Done)>();
        for index in 0..threads.max(1) {
            let queue = queue.clone();
            let runtime = runtime.clone();
            thread::Builder::new()
                .name(format!("mv-driver-{index}"))
                .spawn(move || {
                    while let Some((call, done)) = next_job(&queue) {
                        // A panic in the engine must not lose the call: the caller's
                        // promise or future would never settle.
                        let result =
                            catch_unwind(AssertUnwindSafe(|| super::run_embedded(&runtime, &call)))
                                .unwrap_or_else(|_| {
                                    Err(Error::new(ErrorKind::Internal, "the engine panicked"))
                                });
                        // Nor may a panicking callback take the worker with it.
                        let _ = catch_unwind(AssertUnwindSafe(|| done(result)));
                    }
                })?;
        }
        Ok(Workers { jobs })
    }

    pub(crate) fn submit(&self, call: Call, done: Done) {
        // The receivers live as long as their threads, which outlive every sender.
        if let Err(returned) = self.jobs.send((call, done)) {
            let (_, done) = returned.into_inner();
            let message = "the driver's worker threads are gone";
            done(Err(Error::new(ErrorKind::Internal, message)));
        }
    }
}

/// The next job, or `None` once the pool is dropped and its queue drained.
///
/// A caller awaiting its calls one after another submits the next one right after its last
/// result, so a worker looks for it a little while (as a ring waiter does, see [`Patience`])
/// before sleeping: a wake-up costs tens of microseconds on the machines megavisor runs on.
fn next_job(queue: &Receiver<(Call, Done)>) -> Option<(Call, Done)> {
    let started = Instant::now();
    while started.elapsed() < Patience::MAX {
        match queue.try_recv() {
            Ok(job) => return Some(job),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => thread::yield_now(),
        }
    }
    queue.recv().ok()
}
