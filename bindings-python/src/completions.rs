//! Where background calls leave their results for an asyncio event loop.
//!
//! A call finishes on a thread of the driver, which must not wait for the GIL (it may be
//! the client's receiving thread, serving other calls too). So it only queues the result
//! and signals an eventfd; the event loop watches that eventfd (`loop.add_reader`) and, on
//! its own thread with the GIL, drains the queue and resolves the futures.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Mutex};

use megavisor_driver::{Output, Result as DriverResult};
use nix::sys::eventfd::{EfdFlags, EventFd};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;

use crate::errors::exception;
use crate::output::RunResult;

/// The queue and eventfd shared by the calls of one event loop.
pub(crate) struct Shared {
    done: Mutex<Vec<(u64, DriverResult<Output>)>>,
    signal: EventFd,
}

impl Shared {
    /// Queues a finished call and wakes the loop. Needs no GIL.
    pub(crate) fn finish(&self, token: u64, result: DriverResult<Output>) {
        let mut done = self.done.lock().expect("completion queue lock");
        let was_empty = done.is_empty();
        done.push((token, result));
        drop(done);
        if was_empty {
            // A full counter (EAGAIN) still leaves it readable, which is all the loop needs.
            let _ = self.signal.write(1);
        }
    }
}

/// A finished call as `drain` returns it: its token, and its result or its exception.
type Finished = (u64, Option<RunResult>, Option<PyErr>);

/// The results of background calls, for one event loop.
#[pyclass(module = "megavisor._native", frozen)]
pub(crate) struct Completions {
    pub(crate) shared: Arc<Shared>,
}

#[pymethods]
impl Completions {
    #[new]
    fn new() -> PyResult<Self> {
        let signal = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|errno| PyOSError::new_err(format!("eventfd: {errno}")))?;
        Ok(Completions {
            shared: Arc::new(Shared {
                done: Mutex::new(Vec::new()),
                signal,
            }),
        })
    }

    /// The eventfd to watch for readability.
    fn fileno(&self) -> i32 {
        self.shared.signal.as_fd().as_raw_fd()
    }

    /// Takes the finished calls: `(token, result, exception)`, one of the last two `None`.
    fn drain(&self, py: Python<'_>) -> PyResult<Vec<Finished>> {
        // Reset the counter before taking the queue, so a call finishing in between
        // signals again rather than being left for a wake-up that never comes.
        let _ = self.shared.signal.read();
        let done = std::mem::take(&mut *self.shared.done.lock().expect("completion queue lock"));
        // Each result stands alone: one that cannot be converted fails its own call only.
        let finished = done.into_iter().map(|(token, result)| {
            match result.map(|output| RunResult::new(py, output)) {
                Ok(Ok(result)) => (token, Some(result), None),
                Ok(Err(conversion)) => (token, None, Some(conversion)),
                Err(err) => (token, None, Some(exception(py, &err))),
            }
        });
        Ok(finished.collect())
    }
}
