//! The future of an asynchronous call.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use crate::connection::Inner;
use crate::error::Result;
use megavisor_wire::proto::Output;

/// Where a receiving thread leaves an asynchronous call's result.
#[derive(Default)]
pub(crate) struct AsyncSlot {
    state: Mutex<(Option<Result<Output>>, Option<Waker>)>,
}

impl AsyncSlot {
    fn is_complete(&self) -> bool {
        self.state.lock().expect("async slot lock").0.is_some()
    }

    pub(crate) fn complete(&self, result: Result<Output>) {
        let mut state = self.state.lock().expect("async slot lock");
        state.0 = Some(result);
        let waker = state.1.take();
        // Woken after the lock is released: a waker may poll the future at once, which
        // takes this lock again.
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Resolves to the output of a call started with [`Client::call_async`](crate::Client::call_async).
///
/// It needs no particular executor: a background thread of the client completes it.
/// Dropping it before it is ready gives up on the call, which the supervisor then stops.
pub struct CallFuture {
    pub(crate) slot: Arc<AsyncSlot>,
    /// `None` when the call never left (its error is in the slot already).
    pub(crate) cancel: Option<Canceller>,
}

impl CallFuture {
    /// A handle that gives up on the call from anywhere, e.g. another thread.
    pub fn canceller(&self) -> Option<Canceller> {
        self.cancel.clone()
    }
}

impl Drop for CallFuture {
    fn drop(&mut self) {
        if let Some(cancel) = &self.cancel
            && !self.slot.is_complete()
        {
            cancel.cancel();
        }
    }
}

/// Gives up on one asynchronous call: the supervisor stops it within a few milliseconds,
/// and its future resolves to a `cancelled` error (or to its output, if it ended first).
#[derive(Clone)]
pub struct Canceller {
    pub(crate) inner: Weak<Inner>,
    pub(crate) id: u64,
}

impl Canceller {
    /// Asks the supervisor to stop the call; nothing happens if it has been answered.
    pub fn cancel(&self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.cancel(self.id);
        }
    }
}

impl Future for CallFuture {
    type Output = Result<Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.slot.state.lock().expect("async slot lock");
        match state.0.take() {
            Some(result) => Poll::Ready(result),
            None => {
                state.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
