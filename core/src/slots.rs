//! A counting semaphore bounding the invocations that run at once (seed 000's
//! MaxConcurrency). Time spent waiting here is reported as queue time.

use std::sync::{Condvar, Mutex};

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

    /// Waits for a permit.
    pub fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.released.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.released.notify_one();
    }
}
