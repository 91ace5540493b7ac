//! A counting semaphore bounding the invocations that run at once (seed 000's
//! MaxConcurrency). Time spent waiting here is reported as queue time, and counts against
//! the call's time limit.

use std::sync::{Condvar, Mutex};

use crate::epoch::{Stop, Stopped};

/// Bounded permits to run an instance.
pub struct Slots {
    free: Mutex<u32>,
    released: Condvar,
}

/// One permit; released on drop.
pub struct Permit<'a>(&'a Slots);

impl Slots {
    /// `count` permits.
    pub fn new(count: u32) -> Self {
        Slots {
            free: Mutex::new(count),
            released: Condvar::new(),
        }
    }

    /// Waits for a permit, unless the call must stop first (or its caller has given up).
    pub fn acquire(&self, stop: &Stop) -> Result<Permit<'_>, Stopped> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        // A permit free at once: only a cancellation stops the call before it starts (its
        // time, spent waiting elsewhere, was watched there; running, it is watched again).
        if *free > 0 && stop.is_cancelled() {
            return Err(Stopped::Cancelled);
        }
        while *free == 0 {
            if let Some(reason) = stop.check() {
                return Err(reason);
            }
            free = self
                .released
                .wait_timeout(free, stop.next_look())
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *free -= 1;
        Ok(Permit(self))
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.released.notify_one();
    }
}
