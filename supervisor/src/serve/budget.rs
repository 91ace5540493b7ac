//! The bytes the supervisor holds for its clients, under one limit (`--max-held-bytes`).
//!
//! Counted: socket frames being read, calls queued or running (their encoded requests),
//! replies waiting for a slow socket client, spilled replies in a ring that its client has
//! not consumed yet, and each ring's fixed part. A new call or connection that would take
//! the total past the limit is refused as `busy`; what is already admitted always gets its
//! reply (which may overshoot the limit for a moment) so that nothing admitted is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The shared count and its limit.
#[derive(Debug)]
pub struct Budget {
    held: AtomicUsize,
    limit: usize,
}

/// Bytes held until this is dropped.
#[derive(Debug)]
#[must_use = "the bytes are released when the hold is dropped"]
pub struct Hold {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Budget {
            held: AtomicUsize::new(0),
            limit,
        })
    }

    /// Holds `bytes` if they fit under the limit.
    pub fn try_hold(self: &Arc<Self>, bytes: usize) -> Option<Hold> {
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            let total = held.checked_add(bytes).filter(|t| *t <= self.limit)?;
            match self
                .held
                .compare_exchange_weak(held, total, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(self.hold_counted(bytes)),
                Err(now) => held = now,
            }
        }
    }

    /// Holds `bytes` whatever the total: for what belongs to a call already admitted.
    pub fn hold(self: &Arc<Self>, bytes: usize) -> Hold {
        self.held.fetch_add(bytes, Ordering::AcqRel);
        self.hold_counted(bytes)
    }

    fn hold_counted(self: &Arc<Self>, bytes: usize) -> Hold {
        Hold {
            budget: self.clone(),
            bytes,
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// Why a call or connection of `bytes` is refused.
    pub fn refusal(&self, bytes: usize) -> String {
        format!(
            "supervisor busy: it holds {} bytes for its clients and {bytes} more would pass its limit of {} bytes (--max-held-bytes); retry later",
            self.held(),
            self.limit
        )
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_fit_under_the_limit_and_are_released_when_dropped() {
        let budget = Budget::new(100);
        let first = budget.try_hold(60).unwrap();
        assert!(budget.try_hold(50).is_none(), "over the limit");
        let forced = budget.hold(50);
        assert_eq!(budget.held(), 110);
        drop((first, forced));
        assert_eq!(budget.held(), 0);
        assert!(budget.try_hold(100).is_some());
    }
}
