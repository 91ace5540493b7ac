//! One slot's store: its WASI context, its memory cap, and when its call must stop.

use wasmtime::ResourceLimiter;
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::epoch::{Stop, Stopped};
use crate::sleep::Stoppable;

/// What a store holds for the guest it runs.
pub(crate) struct GuestState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) memory: MemoryCap,
    pub(crate) stop: Option<Stop>,
    /// Why the epoch callback (or the guest's sleep) interrupted the guest, if it did.
    pub(crate) stopped: Option<Stopped>,
}

impl GuestState {
    pub(crate) fn new(wasi: WasiP1Ctx, memory_limit: u64, stop: Option<Stop>) -> Self {
        GuestState {
            wasi,
            memory: MemoryCap {
                limit: memory_limit,
                total: 0,
                exceeded: None,
            },
            stop,
            stopped: None,
        }
    }
}

/// Makes every epoch tick ask the store's current `Stop` whether the guest goes on (see
/// `epoch`), from the next tick on.
pub(crate) fn watch_stop(store: &mut wasmtime::Store<GuestState>) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut store| {
        let state = store.data_mut();
        match state.stop.as_ref().and_then(Stop::check) {
            None => Ok(wasmtime::UpdateDeadline::Continue(1)),
            Some(reason) => {
                state.stopped = Some(reason);
                Ok(wasmtime::UpdateDeadline::Interrupt)
            }
        }
    });
}

/// A store's WASI context (one function for every linker, so that WASI's host functions are
/// compiled once for it).
pub(crate) fn wasi_of(state: &mut GuestState) -> &mut WasiP1Ctx {
    &mut state.wasi
}

impl Stoppable for GuestState {
    fn stop(&self) -> Option<&Stop> {
        self.stop.as_ref()
    }

    fn stopped(&mut self, reason: Stopped) {
        self.stopped = Some(reason);
    }
}

/// The memory cap of one call, over every linear memory of its store.
pub(crate) struct MemoryCap {
    limit: u64,
    /// Bytes of every linear memory of the store, so that several memories share one cap.
    total: u64,
    /// The size the guest asked for when it hit the limit.
    pub(crate) exceeded: Option<u64>,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = (self.total - current as u64).saturating_add(desired as u64);
        if total > self.limit {
            self.exceeded = Some(total);
            // An error (not `Ok(false)`) stops the guest at once, so the failure is reported
            // as the memory limit rather than as whatever the guest does with a failed malloc.
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes reached",
                self.limit
            ));
        }
        self.total = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables are bounded by the pooling allocator's per-slot limit.
        Ok(true)
    }
}
