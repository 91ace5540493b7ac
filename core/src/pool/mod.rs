//! The warm pool: one pre-linked module, a fixed number of instance slots reserved up front
//! by Wasmtime's pooling allocator, and the permits that bound how many calls use them.
//!
//! One slot's life, for one call:
//!
//! ```text
//!   take        Slots::acquire: a permit, or wait (queue time, counted against the
//!               call's time limit)
//!   instantiate InstancePre::instantiate: no linking, no compiling; the slot's memory
//!               is mapped copy-on-write from the module's image, so only the pages the
//!               guest touches are faulted in
//!   run         `_start`, under the call's memory cap and its `Stop` (epoch ticks)
//!   reset       dropping the store: the slot's dirty pages are reset (PAGEMAP_SCAN
//!               where the kernel has it), the first KEEP_RESIDENT_BYTES by memset so the
//!               next call finds them resident; then the permit is released
//! ```
//!
//! Nothing of one call survives into the next: every call gets a fresh instance.

mod slots;
mod store;

use std::time::{Duration, Instant};

use wasmtime::{
    Enabled, Engine, InstancePre, Linker, Module, ModuleExport, PoolingAllocationConfig, Store,
    UpdateDeadline,
};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p1::{self, WasiP1Ctx};

pub(crate) use slots::{Permit, Slots};
pub(crate) use store::GuestState;

use crate::engine::EngineOptions;
use crate::epoch::{EpochTicker, Stop, Stopped};
use crate::error::{Error, Result};
use crate::sleep;
use store::wasi_of;

/// Bytes of each slot reset by memset and kept resident. Measured with the default
/// megabinary (128 KiB stack): 256 KiB gave `true` p50 16.0 µs; 512 KiB 17.6 µs (more memset
/// on reset); 2 MiB 21 µs; 0 (madvise everything) 21 µs (page faults on every call).
const KEEP_RESIDENT_BYTES: usize = 256 << 10;

/// The pooling allocator's configuration for `options`: one slot per call that may run at
/// once, plus one for the start-up warm-up instance.
pub(crate) fn allocation(options: &EngineOptions) -> PoolingAllocationConfig {
    let slots = options.max_concurrency + 1;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        .total_stacks(slots)
        .max_memory_size(options.max_memory_bytes as usize)
        // Reset the first pages with memset instead of madvise: the next invocation then
        // finds its stack and heap pages resident instead of faulting them in again.
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES)
        // Where the kernel has PAGEMAP_SCAN (Linux 6.7+), reset only the pages the guest
        // dirtied. Measured: `true` p50 16-18 µs -> 10.3 µs, and the supervisor's ring round
        // trip 25 µs -> 13 µs (bench/README.md).
        .pagemap_scan(Enabled::Auto);
    pool
}

/// A module pre-linked against WASI, and the slots its calls run in.
pub(crate) struct Pool {
    engine: Engine,
    pre: InstancePre<GuestState>,
    start: ModuleExport,
    slots: Slots,
    ticker: EpochTicker,
    /// The engine meters fuel, so every store is given some.
    fuel: bool,
    max_memory_bytes: u64,
}

/// How one guest's run went.
pub(crate) struct GuestRun {
    /// `_start`'s result: `Ok`, an `I32Exit`, a trap or a host error.
    pub outcome: wasmtime::Result<()>,
    /// The size the guest asked for when it hit its memory cap, if it did.
    pub memory_exceeded: Option<u64>,
    /// Why the call's `Stop` interrupted it, if it did.
    pub stopped: Option<Stopped>,
    pub instantiate: Duration,
    pub run: Duration,
}

impl Pool {
    /// Links `module` (a WASI command) once, for every call, and warms one slot. Returns
    /// the pool, the time linking took and the time warming took.
    pub(crate) fn new(
        engine: Engine,
        module: &Module,
        options: &EngineOptions,
    ) -> Result<(Self, Duration, Duration)> {
        let linking = Instant::now();
        let pre = link(&engine, module)?;
        let start = module.get_export_index("_start").ok_or_else(|| {
            Error::Engine("megabinary has no _start export (is it a WASI command?)".to_owned())
        })?;
        let linked = linking.elapsed();
        let ticker = EpochTicker::start(engine.clone())
            .map_err(|e| Error::io("epoch thread", "spawn", e))?;
        let pool = Pool {
            engine,
            pre,
            start,
            slots: Slots::new(options.max_concurrency),
            ticker,
            fuel: options.fuel,
            max_memory_bytes: options.max_memory_bytes,
        };
        let warming = Instant::now();
        pool.warm()?;
        Ok((pool, linked, warming.elapsed()))
    }

    /// Instantiates once so the first caller does not pay for mapping the pool slot and the
    /// memory image.
    fn warm(&self) -> Result<()> {
        let state = GuestState::new(
            wasmtime_wasi::WasiCtxBuilder::new().build_p1(),
            self.max_memory_bytes,
            None,
        );
        let mut store = self.store(state, None)?;
        self.pre
            .instantiate(&mut store)
            .map_err(|e| Error::Engine(format!("warm-up instantiation failed: {e:#}")))?;
        Ok(())
    }

    /// Takes a permit to run a call (wasm or native), unless the call must stop first.
    pub(crate) fn permit(&self, stop: &Stop) -> std::result::Result<Permit<'_>, Stopped> {
        self.slots.acquire(stop)
    }

    /// The largest memory any call may have.
    pub(crate) fn max_memory_bytes(&self) -> u64 {
        self.max_memory_bytes
    }

    /// Runs one fresh instance with `wasi` until `_start` returns or `stop` says so.
    pub(crate) fn run(
        &self,
        wasi: WasiP1Ctx,
        memory_bytes: u64,
        fuel: Option<u64>,
        stop: &Stop,
    ) -> Result<GuestRun> {
        let instantiating = Instant::now();
        let state = GuestState::new(wasi, memory_bytes, Some(stop.clone()));
        let mut store = self.store(state, fuel)?;
        // Every tick asks the call's `Stop` whether to go on (see `epoch`).
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut store| {
            let state = store.data_mut();
            match state.stop.as_ref().and_then(Stop::check) {
                None => Ok(UpdateDeadline::Continue(1)),
                Some(reason) => {
                    state.stopped = Some(reason);
                    Ok(UpdateDeadline::Interrupt)
                }
            }
        });
        let in_flight = self.ticker.enter();
        let instance = self.pre.instantiate(&mut store);
        let instantiated = Instant::now();
        let outcome = instance.and_then(|instance| {
            let start = instance
                .get_module_export(&mut store, &self.start)
                .and_then(|e| e.into_func())
                .ok_or_else(|| wasmtime::format_err!("_start is not a function"))?;
            start.typed::<(), ()>(&store)?.call(&mut store, ())
        });
        let ran = Instant::now();
        drop(in_flight);
        let memory_exceeded = store.data().memory.exceeded;
        let stopped = store.data().stopped;
        // Dropping the store resets its pool slot. Doing it here, on the thread that used
        // the slot, measured 2.5x faster for `echo` than handing it to a reaper thread: a
        // cross-thread drop pays TLB shootdowns for the slot's mprotect and malloc arena
        // contention for the freed buffers.
        drop(store);
        Ok(GuestRun {
            outcome,
            memory_exceeded,
            stopped,
            instantiate: instantiated - instantiating,
            run: ran - instantiated,
        })
    }

    /// A store for one instance, with its memory cap and fuel.
    fn store(&self, state: GuestState, fuel: Option<u64>) -> Result<Store<GuestState>> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.memory);
        if self.fuel {
            store
                .set_fuel(fuel.unwrap_or(u64::MAX))
                .map_err(|e| Error::Engine(format!("{e:#}")))?;
        }
        Ok(store)
    }
}

/// Links WASI preview 1, with a `proc_exit` that passes every status and a `poll_oneoff`
/// that stops at the call's end, and pre-instantiates `module` against it.
fn link(engine: &Engine, module: &Module) -> Result<InstancePre<GuestState>> {
    let mut linker: Linker<GuestState> = Linker::new(engine);
    p1::add_to_linker_sync(&mut linker, wasi_of)
        .map_err(|e| Error::Engine(format!("cannot link WASI: {e:#}")))?;
    // WASI's own proc_exit turns statuses of 126 and above into a trap; a process may
    // exit with any status up to 255, as on Unix (and only its low byte counts).
    linker.allow_shadowing(true);
    linker
        .func_wrap(
            "wasi_snapshot_preview1",
            "proc_exit",
            |status: u32| -> wasmtime::Result<()> { Err(I32Exit((status & 0xff) as i32).into()) },
        )
        .map_err(|e| Error::Engine(format!("cannot link proc_exit: {e:#}")))?;
    linker.allow_shadowing(false);
    let mut wasi = Linker::new(engine);
    p1::add_to_linker_sync(&mut wasi, wasi_of)
        .and_then(|()| sleep::link(&mut linker, wasi))
        .map_err(|e| Error::Engine(format!("cannot link poll_oneoff: {e:#}")))?;
    linker.instantiate_pre(module).map_err(|e| {
        Error::Engine(format!(
            "megabinary imports something this runtime does not provide: {e:#}"
        ))
    })
}
