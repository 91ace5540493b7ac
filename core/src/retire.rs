//! Retiring finished stores off the critical path.
//!
//! Dropping a store returns its instance to the pool, which resets the slot's memory and
//! tables: several microseconds the caller should not wait for. Finished stores are handed
//! to a reaper thread through a bounded channel; if it falls behind, the caller drops the
//! store itself, so pool slots are never oversubscribed (the pool is sized for the backlog).

use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

/// Sends values to a background thread that drops them.
pub struct Reaper<T: Send + 'static> {
    sender: Option<SyncSender<T>>,
    handle: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Reaper<T> {
    /// Starts a reaper that holds at most `backlog` values waiting to be dropped.
    pub fn start(backlog: usize) -> std::io::Result<Self> {
        let (sender, receiver) = sync_channel::<T>(backlog);
        let handle = std::thread::Builder::new()
            .name("megavisor-reaper".into())
            .spawn(move || receiver.into_iter().for_each(drop))?;
        Ok(Reaper {
            sender: Some(sender),
            handle: Some(handle),
        })
    }

    /// Drops `value` on the reaper thread, or here if the backlog is full.
    pub fn retire(&self, value: T) {
        let sender = self.sender.as_ref().expect("sender lives until drop");
        if let Err(TrySendError::Full(value) | TrySendError::Disconnected(value)) =
            sender.try_send(value)
        {
            drop(value);
        }
    }
}

impl<T: Send + 'static> Drop for Reaper<T> {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
