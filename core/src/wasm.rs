//! The wasm backend: an entry of one of the bundle's modules, run in a fresh instance of
//! the warm [`Pool`] with a WASI context of exactly what its capabilities grant (arguments, allowed
//! environment variables, mounts), in-memory stdin and captured stdout and stderr.

use wasmtime::Trap;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::backend::{Backend, Call, Ending, Ran};
use crate::caller::{Caller, Credentials, Identity};
use crate::capability::{Access, Grant};
use crate::capture::CaptureStream;
use crate::data::DataDir;
use crate::error::{Error, Result};
use crate::manifest::Entry;
use crate::mounts::{self, MountRoot};
use crate::peer_access::AsPeer;
use crate::pool::{EntryPoint, GuestRun, HeldInstance, Pool};
use crate::request::{Mount, Request};

/// Guest path of the per-execution output directory.
pub const OUT_DIR_GUEST: &str = "/run/megavisor/out";

/// Entries of the bundle's modules, run on the pool.
pub(crate) struct WasmBackend {
    pool: Pool,
    /// Each entry's module (its index in the pool) and entry point, index-aligned with the
    /// entries; `None` for an entry served natively.
    entry_points: Vec<Option<(usize, EntryPoint)>>,
    /// Each entry's declared capabilities, compiled once: glob matching is on every call,
    /// compiling the globs would add a regex build to it. Index-aligned with the entries;
    /// an entry declaring an unsupported capability keeps its refusal here.
    declared_grants: Vec<Result<Grant>>,
    /// Host directories under which a peer's mounts may lie.
    mount_roots: Vec<MountRoot>,
    /// Each pool module's data mount, if it has one.
    data: Vec<Option<DataDir>>,
}

/// A wasm call, checked: what it runs and everything its WASI context needs.
pub(crate) struct WasmPlan {
    module: usize,
    entry_point: EntryPoint,
    argv: Vec<String>,
    preopens: Vec<Preopen>,
    memory_bytes: u64,
    fuel: Option<u64>,
}

/// A host directory the guest sees.
struct Preopen {
    host: std::path::PathBuf,
    guest: String,
    access: Access,
    /// A peer's mount, opened beneath the mount roots as the peer when the call runs.
    confined: bool,
}

impl WasmBackend {
    /// The backend for `entries` on `pool`; an entry whose module lacks its export (or
    /// exports it with another type) fails the whole bundle here, before any call.
    pub(crate) fn new(
        pool: Pool,
        entries: &[Entry],
        mount_roots: Vec<MountRoot>,
        data: Vec<Option<DataDir>>,
    ) -> Result<Self> {
        let declared_grants = entries
            .iter()
            .map(|e| Grant::new(&e.name, &e.capabilities, None))
            .collect();
        let entry_points = entries
            .iter()
            .map(|entry| {
                if entry.served_natively().is_some() {
                    return Ok(None);
                }
                let (index, module) = pool
                    .modules()
                    .iter()
                    .enumerate()
                    .find(|(_, m)| m.name == entry.module)
                    .ok_or_else(|| {
                        Error::Engine(format!(
                            "entry {}: no module {:?} in the pool",
                            entry.name, entry.module
                        ))
                    })?;
                Ok(Some((index, module.entry_point(entry.export_name())?)))
            })
            .collect::<Result<_>>()?;
        Ok(WasmBackend {
            pool,
            entry_points,
            declared_grants,
            mount_roots,
            data,
        })
    }

    /// The pool, whose permits every call takes.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    fn check_mount(
        &self,
        index: usize,
        entry: &Entry,
        grant: &Grant,
        mount: &Mount,
        caller: &Caller,
    ) -> Result<Preopen> {
        let guest = normalize_guest_path(&mount.guest)?;
        let data = self.entry_points[index].and_then(|(module, _)| self.data[module].as_ref());
        if guest == OUT_DIR_GUEST
            || guest.starts_with(&format!("{OUT_DIR_GUEST}/"))
            || data.is_some_and(|data| data.covers(&guest))
        {
            return Err(Error::BadRequest(format!(
                "mount point {guest} is reserved for the runtime"
            )));
        }
        grant.check_mount(&entry.name, &guest, mount.access)?;
        if let Identity::Peer(_) = caller.identity {
            // Resolved and opened as the peer, beneath its mount root, when the call runs.
            if !mount.host.is_absolute() {
                return Err(Error::BadRequest(format!(
                    "mount source {} must be an absolute path",
                    mount.host.display()
                )));
            }
            return Ok(Preopen {
                host: mount.host.clone(),
                guest,
                access: mount.access,
                confined: true,
            });
        }
        let host = mount.host.canonicalize().map_err(|e| {
            Error::BadRequest(format!("mount source {}: {e}", mount.host.display()))
        })?;
        if !host.is_dir() {
            return Err(Error::BadRequest(format!(
                "mount source {} is not a directory",
                host.display()
            )));
        }
        Ok(Preopen {
            host,
            guest,
            access: mount.access,
            confined: false,
        })
    }

    /// The call's WASI context: its arguments, environment, stdio and mounts.
    fn wasi(
        &self,
        plan: &WasmPlan,
        call: &Call<'_>,
        stdout: &CaptureStream,
        stderr: &CaptureStream,
    ) -> Result<WasiCtxBuilder> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_blocking_current_thread(true)
            .monotonic_clock(crate::sleep::GuestClock)
            .args(&plan.argv)
            .envs(&call.env)
            .stdin(MemoryInputPipe::new(call.request.stdin.clone()))
            .stdout(stdout.clone())
            .stderr(stderr.clone());
        if let Some(data) = &self.data[plan.module] {
            wasi.preopened_dir(data.host(), data.guest(), FsPerms::ReadOnly)
                .map_err(|e| {
                    Error::Engine(format!("cannot mount data at {}: {e:#}", data.guest()))
                })?;
        }
        let out_dir = call.out_dir.as_ref().map(|host| Preopen {
            host: host.clone(),
            guest: OUT_DIR_GUEST.to_owned(),
            access: Access::ReadWrite,
            confined: false,
        });
        for preopen in plan.preopens.iter().chain(&out_dir) {
            let perms = match preopen.access {
                Access::ReadOnly => FsPerms::ReadOnly,
                Access::ReadWrite => FsPerms::ReadWrite,
            };
            let cannot_open = |e: wasmtime::Error| {
                Error::BadRequest(format!(
                    "cannot open mount {} for {}: {e:#}",
                    preopen.host.display(),
                    preopen.guest
                ))
            };
            match (&call.caller.identity, preopen.confined) {
                (Identity::Peer(credentials), true) => {
                    let roots = &self.mount_roots;
                    let dir =
                        mounts::open_for_peer(roots, credentials, &preopen.host, preopen.access)?;
                    wasi.preopened_dir(mounts::proc_path(&dir), &preopen.guest, perms)
                        .map_err(cannot_open)?;
                }
                _ => {
                    wasi.preopened_dir(&preopen.host, &preopen.guest, perms)
                        .map_err(cannot_open)?;
                }
            }
        }
        Ok(wasi)
    }
}

impl Backend for WasmBackend {
    /// The entry, and its index in the manifest.
    type Tool<'a> = (usize, &'a Entry);
    type Admitted = WasmPlan;

    fn admit(
        &self,
        (index, entry): (usize, &Entry),
        request: &Request,
        caller: &Caller,
        _peer: Option<&Credentials>,
    ) -> Result<WasmPlan> {
        let narrowed;
        let grant = match request.capabilities.as_deref() {
            None => self.declared_grants[index].as_ref().map_err(Clone::clone)?,
            Some(requested) => {
                narrowed = Grant::new(&entry.name, &entry.capabilities, Some(requested))?;
                &narrowed
            }
        };
        for (key, _) in &request.env {
            grant.check_env(&entry.name, key)?;
        }
        let mut argv = Vec::with_capacity(request.args.len() + 1);
        argv.push(entry.entry.clone());
        argv.extend(request.args.iter().cloned());
        let preopens = request
            .mounts
            .iter()
            .map(|mount| self.check_mount(index, entry, grant, mount, caller))
            .collect::<Result<_>>()?;
        let (module, entry_point) = self.entry_points[index].ok_or_else(|| {
            Error::Engine(format!("entry {} has no module to run it", entry.name))
        })?;
        let memory_bytes = crate::admission::wasm_memory_limit(
            entry.limits.memory_bytes,
            request.limits.memory_bytes,
            self.pool.modules()[module].memory_bytes,
        )?;
        Ok(WasmPlan {
            module,
            entry_point,
            argv,
            preopens,
            memory_bytes,
            fuel: request.limits.fuel,
        })
    }

    fn out_dir_seen_at(&self, _host: &std::path::Path) -> Result<String> {
        Ok(OUT_DIR_GUEST.to_owned())
    }

    fn run(&self, plan: WasmPlan, call: &Call<'_>) -> Result<Ran> {
        self.run_with(plan, call, |plan, wasi| {
            self.pool.run(
                plan.module,
                plan.entry_point,
                wasi,
                plan.memory_bytes,
                plan.fuel,
                call.stop,
            )
        })
    }
}

impl WasmBackend {
    /// A session's instance of `entry` (its module's entry point, capped at the entry's
    /// memory limit); `None` when the pool has no permit free, or the entry is served
    /// natively.
    pub(crate) fn hold(&self, index: usize, entry: &Entry) -> Result<Option<HeldInstance>> {
        let Some((module, entry_point)) = self.entry_points[index] else {
            return Ok(None);
        };
        let memory_bytes = entry
            .limits
            .memory_bytes
            .min(self.pool.modules()[module].memory_bytes);
        self.pool.hold(module, entry_point, memory_bytes)
    }

    /// Runs an admitted call in a session's held instance.
    pub(crate) fn run_held(
        &self,
        held: &mut HeldInstance,
        plan: WasmPlan,
        call: &Call<'_>,
    ) -> Result<Ran> {
        self.run_with(plan, call, |_, wasi| {
            self.pool.run_held(held, wasi, call.stop)
        })
    }

    /// Builds the call's WASI context (as the peer, when it must be) and runs it with
    /// `run`, then reads how it ended.
    fn run_with(
        &self,
        plan: WasmPlan,
        call: &Call<'_>,
        run: impl FnOnce(&WasmPlan, wasmtime_wasi::p1::WasiP1Ctx) -> Result<GuestRun>,
    ) -> Result<Ran> {
        // A peer of another uid opens its mounts, and everything the guest reaches through
        // them, as itself, for the whole call (a call without mounts touches no file).
        let _as_peer = match call.peer {
            Some(credentials) if !plan.preopens.is_empty() || call.out_dir.is_some() => {
                Some(AsPeer::assume(credentials)?)
            }
            _ => None,
        };
        let stdout = CaptureStream::new(call.output_bytes);
        let stderr = CaptureStream::new(call.output_bytes);
        let mut wasi = self.wasi(&plan, call, &stdout, &stderr)?;
        let guest = run(&plan, wasi.build_p1())?;
        let (exit_code, ending) = match &guest.outcome {
            Ok(()) => (0, Ending::Exited),
            Err(error) => match error.downcast_ref::<I32Exit>() {
                Some(exit) => (exit.0, Ending::Exited),
                None => (0, failure(error, &guest, &plan)),
            },
        };
        Ok(Ran {
            exit_code,
            stdout: stdout.take(),
            stderr: stderr.take(),
            instantiate: guest.instantiate,
            run: guest.run,
            usage: None,
            ending,
        })
    }
}

/// How a guest that neither returned nor exited stopped.
fn failure(error: &wasmtime::Error, guest: &GuestRun, plan: &WasmPlan) -> Ending {
    if let Some(requested) = guest.memory_exceeded {
        return Ending::MemoryLimit {
            requested,
            limit: plan.memory_bytes,
        };
    }
    match (error.downcast_ref::<Trap>(), guest.stopped) {
        (Some(Trap::Interrupt), Some(reason)) => Ending::Stopped(reason),
        (Some(Trap::OutOfFuel), _) => Ending::OutOfFuel {
            limit: plan.fuel.unwrap_or(u64::MAX),
        },
        _ => Ending::Trapped(format!("{error:#}")),
    }
}

/// An absolute guest path without `.`, `..` or empty components; a trailing `/` is dropped.
fn normalize_guest_path(path: &str) -> Result<String> {
    let bad = || {
        Error::BadRequest(format!(
            "mount point {path:?} must be an absolute path without '.' or '..' components"
        ))
    };
    let rest = path.strip_prefix('/').ok_or_else(bad)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok("/".to_owned());
    }
    if rest
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0'))
    {
        return Err(bad());
    }
    Ok(format!("/{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_are_normalized_or_refused() {
        assert_eq!(normalize_guest_path("/data/").unwrap(), "/data");
        assert_eq!(normalize_guest_path("/").unwrap(), "/");
        for bad in ["data", "/a/../b", "/a/./b", "/a//b", ""] {
            assert!(normalize_guest_path(bad).is_err(), "{bad}");
        }
    }
}
