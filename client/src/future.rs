//! The future of an asynchronous call.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::error::Result;
use megavisor_wire::proto::Output;

/// Where a receiving thread leaves an asynchronous call's result.
#[derive(Default)]
pub(crate) struct AsyncSlot {
    state: Mutex<(Option<Result<Output>>, Option<Waker>)>,
}

impl AsyncSlot {
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
pub struct CallFuture {
    pub(crate) slot: Arc<AsyncSlot>,
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
