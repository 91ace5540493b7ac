//! The warm pool: a bundle's modules, each pre-linked once, a fixed number of instance slots
//! reserved up front by Wasmtime's pooling allocator and shared by every module, and the
//! permits that bound how many calls use them.
//!
//! One slot's life, for one call:
//!
//! ```text
//!   take        Slots::acquire: a permit, or wait (queue time, counted against the
//!               call's time limit)
//!   instantiate InstancePre::instantiate: no linking, no compiling; the slot's memory
//!               is mapped copy-on-write from the module's image, so only the pages the
//!               guest touches are faulted in
//!   run         the entry's export (`_start`, or a reactor's function after its
//!               `_initialize`), under the call's memory cap and its `Stop` (epoch ticks)
//!   reset       dropping the store: the slot's dirty pages are reset (PAGEMAP_SCAN
//!               where the kernel has it), the first KEEP_RESIDENT_BYTES by memset so the
//!               next call finds them resident; then the permit is released
//! ```
//!
//! Nothing of one call survives into the next: every call gets a fresh instance.

mod held;
mod module;
mod slots;
mod store;

use std::time::{Duration, Instant};

use wasmtime::{Enabled, Engine, PoolingAllocationConfig, Store};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p1::WasiP1Ctx;

pub(crate) use held::HeldInstance;
pub(crate) use module::{EntryPoint, PooledModule};
pub(crate) use slots::{Permit, Slots};
pub(crate) use store::GuestState;

use crate::engine::EngineOptions;
use crate::epoch::{EpochTicker, Stop, Stopped};
use crate::error::{Error, Result};

/// Bytes of each slot reset by memset and kept resident. Measured with the default
/// megabinary (128 KiB stack): 256 KiB gave `true` p50 16.0 µs; 512 KiB 17.6 µs (more memset
/// on reset); 2 MiB 21 µs; 0 (madvise everything) 21 µs (page faults on every call).
const KEEP_RESIDENT_BYTES: usize = 256 << 10;

/// The pooling allocator's configuration for `options`: one slot per call that may run at
/// once, plus one for a start-up warm-up instance.
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

/// The modules, pre-linked against WASI, and the slots their calls run in.
pub(crate) struct Pool {
    engine: Engine,
    modules: Vec<PooledModule>,
    slots: std::sync::Arc<Slots>,
    ticker: EpochTicker,
    /// The engine meters fuel, so every store is given some.
    fuel: bool,
    /// Instance slots of the pooling allocator.
    total_slots: u32,
}

/// How one guest's run went.
pub(crate) struct GuestRun {
    /// The entry point's result: `Ok`, an `I32Exit`, a trap or a host error.
    pub outcome: wasmtime::Result<()>,
    /// The size the guest asked for when it hit its memory cap, if it did.
    pub memory_exceeded: Option<u64>,
    /// Why the call's `Stop` interrupted it, if it did.
    pub stopped: Option<Stopped>,
    pub instantiate: Duration,
    pub run: Duration,
}

impl Pool {
    /// A pool of `modules` (each linked already) that warms each module's instances.
    /// Returns the pool and the time warming took.
    pub(crate) fn new(
        engine: Engine,
        modules: Vec<PooledModule>,
        options: &EngineOptions,
    ) -> Result<(Self, Duration)> {
        let ticker = EpochTicker::start(engine.clone())
            .map_err(|e| Error::io("epoch thread", "spawn", e))?;
        let pool = Pool {
            engine,
            modules,
            slots: std::sync::Arc::new(Slots::new(options.max_concurrency)),
            ticker,
            fuel: options.fuel,
            total_slots: options.max_concurrency + 1,
        };
        let warming = Instant::now();
        for module in &pool.modules {
            pool.warm(module)?;
        }
        Ok((pool, warming.elapsed()))
    }

    /// Makes a module's warm instances at once (as many as the pool has slots), so its
    /// first callers do not pay for mapping their slots and its memory image.
    fn warm(&self, module: &PooledModule) -> Result<()> {
        let mut held = Vec::new();
        for _ in 0..module.warm.min(self.total_slots) {
            let state = GuestState::new(
                wasmtime_wasi::WasiCtxBuilder::new().build_p1(),
                module.memory_bytes,
                None,
            );
            let mut store = self.store(state, None)?;
            module.pre.instantiate(&mut store).map_err(|e| {
                Error::Engine(format!(
                    "warm-up instantiation of module {} failed: {e:#}",
                    module.name
                ))
            })?;
            held.push(store);
        }
        Ok(())
    }

    /// The pooled modules, in the manifest's order.
    pub(crate) fn modules(&self) -> &[PooledModule] {
        &self.modules
    }

    /// Takes a permit to run a call (wasm or native), unless the call must stop first.
    pub(crate) fn permit(&self, stop: &Stop) -> std::result::Result<Permit<'_>, Stopped> {
        self.slots.acquire(stop)
    }

    /// Runs one fresh instance of module `module` with `wasi`, from `entry` until it
    /// returns or `stop` says so.
    pub(crate) fn run(
        &self,
        module: usize,
        entry: EntryPoint,
        wasi: WasiP1Ctx,
        memory_bytes: u64,
        fuel: Option<u64>,
        stop: &Stop,
    ) -> Result<GuestRun> {
        let instantiating = Instant::now();
        let state = GuestState::new(wasi, memory_bytes, Some(stop.clone()));
        let mut store = self.store(state, fuel)?;
        store::watch_stop(&mut store);
        let in_flight = self.ticker.enter();
        let instance = self.modules[module].pre.instantiate(&mut store);
        let instantiated = Instant::now();
        let outcome = instance.and_then(|instance| {
            let mut func = |export| {
                instance
                    .get_module_export(&mut store, &export)
                    .and_then(|e| e.into_func())
                    .ok_or_else(|| wasmtime::format_err!("entry point is not a function"))
            };
            let initialize = entry.initialize.map(&mut func).transpose()?;
            let function = func(entry.function)?;
            if let Some(initialize) = initialize {
                initialize.typed::<(), ()>(&store)?.call(&mut store, ())?;
            }
            if !entry.returns_status {
                return function.typed::<(), ()>(&store)?.call(&mut store, ());
            }
            match function.typed::<(), i32>(&store)?.call(&mut store, ())? {
                0 => Ok(()),
                status => Err(I32Exit(status & 0xff).into()),
            }
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
