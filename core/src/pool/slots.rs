//! A counting semaphore bounding the calls that run at once (the pool's concurrency, which
//! native tools count against too). Time spent waiting here is reported as queue time, and
//! counts against the call's time limit.

use std::sync::{Arc, Condvar, Mutex};

use crate::epoch::{Stop, Stopped};

/// Bounded permits to run an instance.
pub struct Slots {
    count: Mutex<Count>,
    /// Signalled when a permit is released while a call waits for one.
    released: Condvar,
}

struct Count {
    free: u32,
    /// Calls waiting for a permit: a release signals only when there are (a signal costs a
    /// futex call, on every call, even when nobody waits).
    waiting: u32,
}

/// One permit; released on drop.
pub struct Permit<'a>(&'a Slots);

/// A permit held for as long as a session lives; released on drop.
pub struct HeldPermit(Arc<Slots>);

impl Slots {
    /// `count` permits.
    pub fn new(count: u32) -> Self {
        Slots {
            count: Mutex::new(Count {
                free: count,
                waiting: 0,
            }),
            released: Condvar::new(),
        }
    }

    /// Waits for a permit, unless the call must stop first (or its caller has given up).
    pub fn acquire(&self, stop: &Stop) -> Result<Permit<'_>, Stopped> {
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        // A permit free at once: only a cancellation stops the call before it starts (its
        // time, spent waiting elsewhere, was watched there; running, it is watched again).
        if count.free > 0 && stop.is_cancelled() {
            return Err(Stopped::Cancelled);
        }
        while count.free == 0 {
            if let Some(reason) = stop.check() {
                return Err(reason);
            }
            count.waiting += 1;
            count = self
                .released
                .wait_timeout(count, stop.next_look())
                .unwrap_or_else(|p| p.into_inner())
                .0;
            count.waiting -= 1;
        }
        count.free -= 1;
        Ok(Permit(self))
    }
}

impl Slots {
    /// A permit for a session if one is free now and another stays free: sessions never
    /// wait for a permit, and never take the last one, so however many are open, calls
    /// outside them still run.
    pub fn try_hold(self: &Arc<Self>) -> Option<HeldPermit> {
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        if count.free < 2 {
            return None;
        }
        count.free -= 1;
        Some(HeldPermit(self.clone()))
    }

    fn release(&self) {
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        count.free += 1;
        let wake = count.waiting > 0;
        drop(count);
        if wake {
            self.released.notify_one();
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl Drop for HeldPermit {
    fn drop(&mut self) {
        self.0.release();
    }
}
