//! One module of the pool: pre-linked against WASI once, with its memory cap and the
//! exports its entries call.

use wasmtime::{Engine, ExternType, InstancePre, Linker, Module, ModuleExport, ValType};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p1;

use super::store::{GuestState, wasi_of};
use crate::error::{Error, Result};
use crate::manifest::COMMAND_EXPORT;
use crate::sleep;

/// The export a reactor module runs once per instance before any other.
const REACTOR_INITIALIZE: &str = "_initialize";

/// A module pre-linked for every call.
pub(crate) struct PooledModule {
    /// The module's name in the manifest, for errors.
    pub(crate) name: String,
    pub(crate) pre: InstancePre<GuestState>,
    /// Largest linear memory one of its instances may have.
    pub(crate) memory_bytes: u64,
    /// Instances made at start-up.
    pub(crate) warm: u32,
    /// `_initialize`, when the module is a reactor that has one.
    initialize: Option<ModuleExport>,
}

/// What a call runs in an instance: an optional initializer, then one function.
#[derive(Clone, Copy)]
pub(crate) struct EntryPoint {
    pub(crate) initialize: Option<ModuleExport>,
    pub(crate) function: ModuleExport,
    /// The function returns an `i32`, its exit status (a command's `_start` exits instead).
    pub(crate) returns_status: bool,
}

impl PooledModule {
    /// Links `module` against WASI preview 1, with a `proc_exit` that passes every status
    /// and a `poll_oneoff` that stops at the call's end.
    pub(crate) fn link(
        engine: &Engine,
        name: &str,
        module: &Module,
        memory_bytes: u64,
        warm: u32,
    ) -> Result<Self> {
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
                |status: u32| -> wasmtime::Result<()> {
                    Err(I32Exit((status & 0xff) as i32).into())
                },
            )
            .map_err(|e| Error::Engine(format!("cannot link proc_exit: {e:#}")))?;
        linker.allow_shadowing(false);
        sleep::link(&mut linker)
            .map_err(|e| Error::Engine(format!("cannot link poll_oneoff: {e:#}")))?;
        let pre = linker.instantiate_pre(module).map_err(|e| {
            Error::Engine(format!(
                "module {name} imports something this runtime does not provide: {e:#}"
            ))
        })?;
        let initialize = match module.get_export(REACTOR_INITIALIZE) {
            Some(ExternType::Func(ty)) if ty.params().len() == 0 && ty.results().len() == 0 => {
                module.get_export_index(REACTOR_INITIALIZE)
            }
            _ => None,
        };
        Ok(PooledModule {
            name: name.to_owned(),
            pre,
            memory_bytes,
            warm,
            initialize,
        })
    }

    /// The entry point for `export`: `_start` of a command, or a reactor's exported
    /// function of type `[] -> []` or `[] -> [i32]` (after `_initialize`).
    pub(crate) fn entry_point(&self, export: &str) -> Result<EntryPoint> {
        let module = self.pre.module();
        let refuse = |why: &str| {
            Error::Engine(format!(
                "module {} cannot run export {export:?}: {why}",
                self.name
            ))
        };
        let Some(ExternType::Func(ty)) = module.get_export(export) else {
            return Err(refuse("it exports no function of that name"));
        };
        let results: Vec<ValType> = ty.results().collect();
        let returns_status = match (ty.params().len(), results.as_slice()) {
            (0, []) => false,
            (0, [ValType::I32]) => true,
            _ => return Err(refuse("its type is neither [] -> [] nor [] -> [i32]")),
        };
        let function = module
            .get_export_index(export)
            .ok_or_else(|| refuse("it has no export index"))?;
        Ok(EntryPoint {
            initialize: if export == COMMAND_EXPORT {
                None
            } else {
                self.initialize
            },
            function,
            returns_status,
        })
    }
}
