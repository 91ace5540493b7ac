//! A held instance: one instance of a module kept alive across calls, for a session. It
//! holds a pool permit (and so one instance slot) for as long as it lives, so sessions
//! count against the pool's concurrency like running calls. Its calls run one at a time;
//! each gets its own WASI context (arguments, stdin, captured output, mounts), and sees
//! what the previous ones left in the instance's memory.

use std::time::Instant;

use wasmtime::{Instance, Store};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p1::WasiP1Ctx;

use super::slots::HeldPermit;
use super::store::GuestState;
use super::{EntryPoint, GuestRun, Pool};
use crate::epoch::Stop;
use crate::error::{Error, Result};

/// An instance kept for a session, with the permit it holds.
pub(crate) struct HeldInstance {
    store: Store<GuestState>,
    instance: Instance,
    entry: EntryPoint,
    _permit: HeldPermit,
}

impl Pool {
    /// A new instance of `module` for `entry`, capped at `memory_bytes` for its whole life,
    /// its initializer run; `None` when no permit is free at once (the pool is busy).
    pub(crate) fn hold(
        &self,
        module: usize,
        entry: EntryPoint,
        memory_bytes: u64,
    ) -> Result<Option<HeldInstance>> {
        let Some(permit) = self.slots.try_hold() else {
            return Ok(None);
        };
        let state = GuestState::new(
            wasmtime_wasi::WasiCtxBuilder::new().build_p1(),
            memory_bytes,
            None,
        );
        let mut store = self.store(state, None)?;
        super::store::watch_stop(&mut store);
        let failed = |e: wasmtime::Error| {
            Error::Engine(format!(
                "cannot start a session of module {}: {e:#}",
                self.modules[module].name
            ))
        };
        let in_flight = self.ticker.enter();
        let instance = self.modules[module]
            .pre
            .instantiate(&mut store)
            .map_err(failed)?;
        if let Some(initialize) = entry.initialize {
            instance
                .get_module_export(&mut store, &initialize)
                .and_then(|e| e.into_func())
                .ok_or_else(|| wasmtime::format_err!("_initialize is not a function"))
                .and_then(|f| f.typed::<(), ()>(&store))
                .and_then(|f| f.call(&mut store, ()))
                .map_err(failed)?;
        }
        drop(in_flight);
        Ok(Some(HeldInstance {
            store,
            instance,
            entry,
            _permit: permit,
        }))
    }

    /// Runs the held instance's entry function once with `wasi`, until it returns or `stop`
    /// says so.
    pub(crate) fn run_held(
        &self,
        held: &mut HeldInstance,
        wasi: WasiP1Ctx,
        stop: &Stop,
    ) -> Result<GuestRun> {
        let started = Instant::now();
        let state = held.store.data_mut();
        state.wasi = wasi;
        state.stop = Some(stop.clone());
        state.stopped = None;
        state.memory.exceeded = None;
        held.store.set_epoch_deadline(1);
        let in_flight = self.ticker.enter();
        let store = &mut held.store;
        let entry = held.entry;
        let outcome = held
            .instance
            .get_module_export(&mut *store, &entry.function)
            .and_then(|e| e.into_func())
            .ok_or_else(|| wasmtime::format_err!("entry point is not a function"))
            .and_then(|function| {
                if !entry.returns_status {
                    return function.typed::<(), ()>(&*store)?.call(&mut *store, ());
                }
                match function.typed::<(), i32>(&*store)?.call(&mut *store, ())? {
                    0 => Ok(()),
                    status => Err(I32Exit(status & 0xff).into()),
                }
            });
        drop(in_flight);
        let state = held.store.data_mut();
        // The call's context goes with it: its pipes and mounts are not the next call's.
        state.wasi = wasmtime_wasi::WasiCtxBuilder::new().build_p1();
        state.stop = None;
        Ok(GuestRun {
            outcome,
            memory_exceeded: state.memory.exceeded,
            stopped: state.stopped,
            instantiate: std::time::Duration::ZERO,
            run: started.elapsed(),
        })
    }
}
