//! The threads that run an embedded driver's background calls.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread;

use megavisor_client::{Call, Error, ErrorKind, Output, Result};
use megavisor_core::queue::{Queue, Waiting};
use megavisor_core::{Caller, Request, Runtime, Stop, Stopped, ToolRef};
use megavisor_wire::doorbell::Patience;

use crate::convert;

type Done = Box<dyn FnOnce(Result<Output>) + Send>;

/// A pool of `max_concurrency` threads fed by an unbounded queue: a call waits for a thread
/// rather than being refused, as it would wait for an engine slot on the calling thread, and
/// is answered as soon as its end (time limit, cancellation) comes while it waits. The
/// threads end when the pool (the driver) is dropped and the queue drains.
#[derive(Clone)]
pub(crate) struct Workers {
    queue: Arc<Queue<Job>>,
}

/// A request, its caller (when it was submitted, and its cancel token), when it must end,
/// and its callback.
struct Job {
    request: Request,
    caller: Caller,
    stop: Stop,
    done: Done,
}

impl Waiting for Job {
    fn stop(&self) -> &Stop {
        &self.stop
    }

    fn stopped(self, reason: Stopped) {
        let tool = match &self.request.tool {
            ToolRef::Name(name) | ToolRef::Digest(name) => name.clone(),
            ToolRef::Native(path) => path.display().to_string(),
        };
        let id = self.request.execution_id;
        let error = super::core_error(self.stop.ended_before_start(reason, &tool, id));
        finish(self.done, Err(error));
    }
}

impl Workers {
    /// Starts the threads; if one cannot be started, those already started end with it.
    pub(crate) fn start(runtime: &Arc<Runtime>, threads: u32) -> std::io::Result<Self> {
        let queue = Arc::new(Queue::<Job>::new()?);
        for index in 0..threads.max(1) {
            let queue = queue.clone();
            let runtime = runtime.clone();
            thread::Builder::new()
                .name(format!("mv-driver-{index}"))
                .spawn(move || {
                    // A caller awaiting its calls one after another submits the next one
                    // right after its last result: a worker looks for it a little while (as
                    // a ring waiter does, see `Patience`) before sleeping.
                    while let Some(job) = queue.pop(Patience::MAX) {
                        // A panic in the engine must not lose the call: the caller's
                        // promise or future would never settle.
                        let run = || super::run_request(&runtime, &job.request, &job.caller);
                        let result = catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|_| {
                            Err(Error::new(ErrorKind::Internal, "the engine panicked"))
                        });
                        finish(job.done, result);
                    }
                })?;
        }
        Ok(Workers { queue })
    }

    /// Queues a call; its time limit runs from now (`caller.received`), queue included.
    pub(crate) fn submit(&self, runtime: &Runtime, call: Call, caller: Caller, done: Done) {
        let request = convert::request(runtime, call.into_message())
            .map_err(|failure| Error::from_failure(*failure))
            .and_then(|request| {
                let limit = runtime.time_limit(&request).map_err(super::core_error)?;
                Ok((request, limit))
            });
        let (request, limit) = match request {
            Ok(planned) => planned,
            Err(err) => return finish(done, Err(err)),
        };
        let job = Job {
            request,
            stop: Stop::new(&caller, limit),
            caller,
            done,
        };
        // The queue closes only when the pool is dropped, which outlives every submission.
        if let Err(job) = self.queue.push(job) {
            let message = "the driver's worker threads are gone";
            finish(job.done, Err(Error::new(ErrorKind::Internal, message)));
        }
    }
}

/// Hands a result to its callback; a panicking callback must not take a worker with it.
fn finish(done: Done, result: Result<Output>) {
    let _ = catch_unwind(AssertUnwindSafe(|| done(result)));
}
