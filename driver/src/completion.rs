//! Driving a connected call's future to a callback without an executor.
//!
//! The client completes a [`CallFuture`] from its receiving thread and wakes it; the waker
//! here polls the future right there and, once it is ready, calls the callback. No thread
//! waits for the call.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use megavisor_client::{CallFuture, Output, Result};

type Done = Box<dyn FnOnce(Result<Output>) + Send>;

/// A call in flight and what to do with its result.
struct Pending {
    state: Mutex<Option<(CallFuture, Done)>>,
}

impl Pending {
    /// Polls the future once; when it is ready, hands its result to the callback.
    fn poll(self: &Arc<Self>) {
        let mut state = self.state.lock().expect("pending call lock");
        let Some((future, _)) = state.as_mut() else {
            return; // already delivered
        };
        let waker = Waker::from(self.clone());
        if let Poll::Ready(result) = Pin::new(future).poll(&mut Context::from_waker(&waker)) {
            let (_, done) = state.take().expect("checked above");
            drop(state);
            // This may be the client's receiving thread: a panicking callback must not
            // take it down.
            let _ = catch_unwind(AssertUnwindSafe(|| done(result)));
        }
    }
}

impl Wake for Pending {
    fn wake(self: Arc<Self>) {
        self.poll();
    }
}

/// Calls `done` with the future's output as soon as the client completes it.
pub(crate) fn on_ready(future: CallFuture, done: impl FnOnce(Result<Output>) + Send + 'static) {
    let pending = Arc::new(Pending {
        state: Mutex::new(Some((future, Box::new(done)))),
    });
    pending.poll();
}
