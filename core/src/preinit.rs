//! Pre-initialization at pack time: a module's initialization function runs once, in an
//! instance of this engine, and the state it leaves (memory, globals) is written back into
//! the module as data by `wasmtime-wizer`. Every instance of the result then starts from
//! that state, through the pool's copy-on-write memory image, instead of rebuilding it.
//!
//! The function runs with no arguments, no environment and no stdin, and sees no files but
//! the module's data mount, read-only; what it prints is shown, so a failing initializer
//! explains itself.

use std::path::Path;
use wasmtime::{Engine, Instance, Module, Store};

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};
use wasmtime_wizer::{InstanceState, SnapshotVal, ValType, Wizer};

use crate::error::{Error, Result};
use crate::pool::{GuestState, PooledModule};

/// Memory the initialization function may use.
const PREINIT_MEMORY_BYTES: u64 = 1 << 30;

/// Runs `function` of module `name` (`wasm`) and returns the module with its resulting
/// state snapshotted in, `function` removed.
pub(crate) fn snapshot(
    engine: &Engine,
    name: &str,
    wasm: &[u8],
    function: &str,
    data: Option<(&Path, &str)>,
) -> Result<Vec<u8>> {
    let failed = |what: &str, e: wasmtime::Error| {
        Error::Engine(format!(
            "cannot pre-initialize module {name} with {function}: {what}: {e:#}"
        ))
    };
    let mut wizer = Wizer::new();
    wizer.init_func(function);
    let (context, instrumented) = wizer
        .instrument(wasm)
        .map_err(|e| failed("instrumenting", e))?;
    let module = Module::new(engine, &instrumented).map_err(|e| failed("compiling", e))?;
    let linked = PooledModule::link(engine, name, &module, PREINIT_MEMORY_BYTES, 0)?;
    let mut wasi = WasiCtxBuilder::new();
    wasi.inherit_stdout().inherit_stderr();
    if let Some((host, guest)) = data {
        wasi.preopened_dir(host, guest, FsPerms::ReadOnly)
            .map_err(|e| failed("mounting its data", e))?;
    }
    let wasi = wasi.build_p1();
    let mut store = Store::new(engine, GuestState::new(wasi, PREINIT_MEMORY_BYTES, None));
    store.limiter(|s| &mut s.memory);
    // No ticker runs here: without a deadline this far away, the first epoch check traps.
    store.set_epoch_deadline(u64::MAX);
    let instance = linked
        .pre
        .instantiate(&mut store)
        .map_err(|e| failed("instantiating", e))?;
    if let Ok(initialize) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
        initialize
            .call(&mut store, ())
            .map_err(|e| failed("running _initialize", e))?;
    }
    instance
        .get_typed_func::<(), ()>(&mut store, function)
        .and_then(|init| init.call(&mut store, ()))
        .map_err(|e| failed("running it", e))?;
    let mut state = Snapshotted {
        store: &mut store,
        instance,
    };
    // Reading an instance's state never waits: the futures below are ready when polled.
    pollster::block_on(wizer.snapshot(&context, &mut state)).map_err(|e| failed("snapshotting", e))
}

/// The instance whose state Wizer reads.
struct Snapshotted<'a> {
    store: &'a mut Store<GuestState>,
    instance: Instance,
}

impl InstanceState for Snapshotted<'_> {
    async fn global_get(&mut self, name: &str, _type_hint: ValType) -> SnapshotVal {
        let global = self
            .instance
            .get_global(&mut *self.store, name)
            .expect("wizer asks only for the globals its instrumentation exported");
        match global.get(&mut *self.store) {
            wasmtime::Val::I32(x) => SnapshotVal::I32(x),
            wasmtime::Val::I64(x) => SnapshotVal::I64(x),
            wasmtime::Val::F32(x) => SnapshotVal::F32(x),
            wasmtime::Val::F64(x) => SnapshotVal::F64(x),
            wasmtime::Val::V128(x) => SnapshotVal::V128(x.as_u128()),
            _ => unreachable!("wizer refuses modules with mutable reference-typed globals"),
        }
    }

    async fn memory_contents(&mut self, name: &str, contents: impl FnOnce(&[u8]) + Send) {
        let memory = self
            .instance
            .get_memory(&mut *self.store, name)
            .expect("wizer asks only for the memories its instrumentation exported");
        contents(memory.data(&*self.store));
    }
}
