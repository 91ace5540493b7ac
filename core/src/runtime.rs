//! The runtime: a verified megabinary, pre-linked once, serving invocations from a warm
//! pool of instance slots. Every invocation gets a fresh instance: nothing one call writes
//! is visible to the next.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmtime::{Engine, InstancePre, Linker, Module, ModuleExport, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::artifacts;
use crate::bundle::VerifiedBundle;
use crate::capability::{Access, Capability, Grant};
use crate::capture::CaptureStream;
use crate::digest::Digests;
use crate::engine::{self, EngineOptions, ModuleOrigin};
use crate::epoch::EpochTicker;
use crate::error::{Error, ErrorKind, Result};
use crate::idempotency::{Claim, IdempotencyCache};
use crate::manifest::{Entry, EntryLimits, Manifest};
use crate::native::{NativeDriver, NativeLimits, NativeOptions};
use crate::request::{Mount, Request, ToolRef};
use crate::result::{Output, Timings};
use crate::signing::{Authenticity, TrustPolicy};
use crate::slots::Slots;

/// Guest path of the per-execution output directory (seed 000's out dir).
pub const OUT_DIR_GUEST: &str = "/run/megavisor/out";

/// Runtime settings beyond the engine's.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Engine and pool settings.
    pub engine: EngineOptions,
    /// Execution ids remembered for idempotency.
    pub idempotency_capacity: usize,
    /// How long a completed execution id is remembered.
    pub idempotency_ttl: Duration,
    /// Upper bound on bytes of stdout and of stderr kept in full per call.
    pub max_output_bytes: u64,
    /// Upper bound on any request's time limit.
    pub max_timeout: Duration,
    /// Host directory under which each execution id gets `<id>/`, mounted in the guest at
    /// [`OUT_DIR_GUEST`]; `None` disables per-execution output directories.
    pub out_dir: Option<PathBuf>,
    /// Native tools and their allowlist; `None` refuses every native tool.
    pub native: Option<NativeOptions>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            engine: EngineOptions::default(),
            idempotency_capacity: 4096,
            idempotency_ttl: Duration::from_secs(600),
            max_output_bytes: 16 << 20,
            max_timeout: Duration::from_secs(3600),
            out_dir: None,
            native: None,
        }
    }
}

/// How long start-up took, for readiness lines and logs.
#[derive(Debug, Clone, Copy)]
pub struct StartupReport {
    /// Reading the manifest, checking its signature and every file's digests.
    pub verify: Duration,
    /// Deserializing (or compiling) the module and linking it.
    pub load: Duration,
    /// Warming one pool slot.
    pub warm: Duration,
    /// Where the module came from.
    pub origin: ModuleOrigin,
}

/// The state of one store: its WASI context and its memory cap.
struct Invocation {
    wasi: WasiP1Ctx,
    memory: MemoryCap,
}

struct MemoryCap {
    limit: u64,
    /// The size the guest asked for when it hit the limit.
    exceeded: Option<u64>,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.limit {
            self.exceeded = Some(desired as u64);
            // An error (not `Ok(false)`) stops the guest at once, so the failure is reported
            // as the memory limit rather than as whatever the guest does with a failed malloc.
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes reached",
                self.limit
            ));
        }
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

/// A verified, loaded megabinary serving invocations.
pub struct Runtime {
    engine: Engine,
    pre: InstancePre<Invocation>,
    start: ModuleExport,
    manifest: Manifest,
    /// Each entry's declared capabilities, compiled once: glob matching is on every call,
    /// compiling the globs would add a regex build to it. Index-aligned with the entries;
    /// an entry declaring an unsupported capability keeps its refusal here.
    declared_grants: Vec<Result<Grant>>,
    authenticity: Authenticity,
    options: RuntimeOptions,
    idempotency: IdempotencyCache,
    slots: Slots,
    ticker: EpochTicker,
    startup: StartupReport,
    /// Native tools, when an allowlist is configured.
    native: Option<NativeDriver>,
}

impl Runtime {
    /// Verifies the bundle in `dir` under `policy` and loads it.
    pub fn open(dir: &Path, policy: &TrustPolicy, options: RuntimeOptions) -> Result<Self> {
        let started = Instant::now();
        let bundle = VerifiedBundle::open(dir, policy)?;
        let verify = started.elapsed();
        let engine = engine::build_engine(&options.engine)?;
        let loaded = Instant::now();
        let (module, origin) = engine::load_module(&engine, &bundle, &options.engine)?;
        let load = loaded.elapsed();
        Self::assemble(
            engine,
            &module,
            bundle.manifest,
            bundle.authenticity,
            options,
            verify,
            load,
            origin,
        )
    }

    /// A runtime for one ad-hoc module that is not part of a signed bundle (seed 000's
    /// `wasictl`). The caller is responsible for having decided to trust `wasm`; its one entry
    /// is named `name` and holds exactly `capabilities`.
    pub fn adhoc(
        wasm: &[u8],
        name: &str,
        capabilities: Vec<Capability>,
        options: RuntimeOptions,
    ) -> Result<Self> {
        let engine = engine::build_engine(&options.engine)?;
        let loaded = Instant::now();
        let module = Module::new(&engine, wasm)
            .map_err(|e| Error::Engine(format!("cannot compile {name}: {e:#}")))?;
        let load = loaded.elapsed();
        let digests = Digests::of_bytes(wasm);
        let entry = Entry {
            name: name.to_owned(),
            entry: name.to_owned(),
            description: format!("ad-hoc module {name}"),
            arguments: serde_json::json!({"type": "object"}),
            capabilities,
            limits: EntryLimits {
                memory_bytes: 256 << 20,
                timeout_ms: 60_000,
            },
            originals: Default::default(),
            native_fallback: None,
        };
        let manifest = Manifest {
            format: crate::manifest::FORMAT_V1.to_owned(),
            name: name.to_owned(),
            megabinary: crate::manifest::Megabinary {
                wasm: crate::manifest::FileRecord {
                    file: format!("{name}.wasm"),
                    size: wasm.len() as u64,
                    digests,
                },
                cwasm: crate::manifest::FileRecord {
                    file: format!("{name}.cwasm"),
                    size: 0,
                    digests: Digests::of_bytes(b""),
                },
                engine: engine::fingerprint(&engine),
                wasmtime: crate::pack::WASMTIME_VERSION.to_owned(),
            },
            entries: vec![entry],
        };
        let authenticity = Authenticity::Unverified {
            reason: "ad-hoc module outside any signed bundle".to_owned(),
        };
        Self::assemble(
            engine,
            &module,
            manifest,
            authenticity,
            options,
            Duration::ZERO,
            load,
            ModuleOrigin::Compiled,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        engine: Engine,
        module: &Module,
        manifest: Manifest,
        authenticity: Authenticity,
        options: RuntimeOptions,
        verify: Duration,
        load: Duration,
        origin: ModuleOrigin,
    ) -> Result<Self> {
        let linking = Instant::now();
        let mut linker: Linker<Invocation> = Linker::new(&engine);
        p1::add_to_linker_sync(&mut linker, |s| &mut s.wasi)
            .map_err(|e| Error::Engine(format!("cannot link WASI: {e:#}")))?;
        let pre = linker.instantiate_pre(module).map_err(|e| {
            Error::Engine(format!(
                "megabinary imports something this runtime does not provide: {e:#}"
            ))
        })?;
        let start = module.get_export_index("_start").ok_or_else(|| {
            Error::Engine("megabinary has no _start export (is it a WASI command?)".to_owned())
        })?;
        let load = load + linking.elapsed();
        let ticker = EpochTicker::start(engine.clone())
            .map_err(|e| Error::io("epoch thread", "spawn", e))?;
        let capacity =
            std::num::NonZeroUsize::new(options.idempotency_capacity.max(1)).expect("non-zero");
        let declared_grants = manifest
            .entries
            .iter()
            .map(|e| Grant::new(&e.name, &e.capabilities, None))
            .collect();
        let native = options.native.clone().map(NativeDriver::new).transpose()?;
        let mut runtime = Runtime {
            native,
            declared_grants,
            slots: Slots::new(options.engine.max_concurrency),
            idempotency: IdempotencyCache::new(capacity, options.idempotency_ttl),
            engine,
            pre,
            start,
            manifest,
            authenticity,
            options,
            ticker,
            startup: StartupReport {
                verify,
                load,
                warm: Duration::ZERO,
                origin,
            },
        };
        let warming = Instant::now();
        runtime.warm()?;
        runtime.startup.warm = warming.elapsed();
        Ok(runtime)
    }

    /// Instantiates once so the first caller does not pay for mapping the pool slot and the
    /// memory image.
    fn warm(&self) -> Result<()> {
        let mut store = self.new_store(
            WasiCtxBuilder::new().build_p1(),
            self.options.engine.max_memory_bytes,
            None,
        )?;
        self.pre
            .instantiate(&mut store)
            .map_err(|e| Error::Engine(format!("warm-up instantiation failed: {e:#}")))?;
        Ok(())
    }

    /// A store for one instance: its WASI context, memory cap and fuel.
    fn new_store(
        &self,
        wasi: WasiP1Ctx,
        memory_limit: u64,
        fuel: Option<u64>,
    ) -> Result<Store<Invocation>> {
        let memory = MemoryCap {
            limit: memory_limit,
            exceeded: None,
        };
        let mut store = Store::new(&self.engine, Invocation { wasi, memory });
        store.limiter(|s| &mut s.memory);
        if self.options.engine.fuel {
            store
                .set_fuel(fuel.unwrap_or(u64::MAX))
                .map_err(|e| Error::Engine(format!("{e:#}")))?;
        }
        Ok(store)
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The tools this runtime serves.
    pub fn entries(&self) -> &[Entry] {
        &self.manifest.entries
    }

    /// How the manifest's authenticity was established.
    pub fn authenticity(&self) -> &Authenticity {
        &self.authenticity
    }

    /// Start-up timings.
    pub fn startup(&self) -> StartupReport {
        self.startup
    }

    /// The entry standing for the native binary at `path`, found by hashing its content
    /// (seed 001's execve interception). Anything else is refused like `execve` would be
    /// under the shim: `EACCES`.
    pub fn entry_for_native(&self, path: &Path) -> Result<&Entry> {
        let (digests, _) = Digests::of_file(path)?;
        self.manifest.entry_for_original(&digests).ok_or_else(|| {
            Error::NotAllowed(format!(
                "{} (sha256 {}) is not in the manifest",
                path.display(),
                digests.sha256
            ))
        })
    }

    /// Whether native tools may run here (an allowlist is configured).
    pub fn runs_native_tools(&self) -> bool {
        self.native.is_some()
    }

    /// Runs one invocation: an entry of the megabinary, or a native binary.
    pub fn run(&self, request: &Request) -> Result<Output> {
        let called = Instant::now();
        let execute = || match &request.tool {
            ToolRef::Native(binary) => self.execute_native(binary, None, request, called),
            tool => {
                let (index, entry) = self.resolve(tool)?;
                match entry.served_natively() {
                    Some(binary) => self.execute_native(binary, Some(entry), request, called),
                    None => self.execute(index, entry, request, called),
                }
            }
        };
        let Some(id) = &request.execution_id else {
            return execute();
        };
        validate_execution_id(id)?;
        // The same variables in another order are the same request (copied to sort them
        // only when they are not in order already).
        let normalized = if request.env.is_sorted() {
            std::borrow::Cow::Borrowed(request)
        } else {
            let mut sorted = request.clone();
            sorted.env.sort();
            std::borrow::Cow::Owned(sorted)
        };
        let fingerprint =
            *blake3::hash(&serde_json::to_vec(&*normalized).expect("requests serialize"))
                .as_bytes();
        match self.idempotency.claim(id, fingerprint)? {
            Claim::Replay(outcome) => *outcome,
            Claim::Run(ticket) => {
                let outcome = execute();
                match &outcome {
                    Err(err) if err.kind() == ErrorKind::Internal => ticket.forget(&outcome),
                    _ => ticket.complete(&outcome),
                }
                outcome
            }
        }
    }

    /// Runs a native binary under the same limits, concurrency and output rules as entries;
    /// `entry` is the manifest entry it serves, if any (its name and time limit apply).
    fn execute_native(
        &self,
        binary: &Path,
        entry: Option<&Entry>,
        request: &Request,
        called: Instant,
    ) -> Result<Output> {
        let Some(native) = &self.native else {
            return Err(Error::NotAllowed(format!(
                "{}: native tools are not enabled (this runtime has no allowlist)",
                binary.display()
            )));
        };
        let admitted = native.admit(binary, request)?;
        let defaults = EntryLimits {
            memory_bytes: 0,
            timeout_ms: entry.map_or(native.default_timeout().as_millis() as u64, |e| {
                e.limits.timeout_ms
            }),
        };
        let limits = NativeLimits {
            timeout: self.limit_time(defaults, request.limits.timeout)?,
            memory_bytes: request.limits.memory_bytes,
            output_bytes: self.limit_output(request.limits.output_bytes)?,
            out_dir: self.out_dir_of(request)?,
        };
        let permit = self.slots.acquire();
        let outcome = native.run(&admitted, request, &limits, called.elapsed(), called);
        drop(permit);
        match entry {
            // Reported under the entry's name, as the caller called it.
            Some(entry) => rename(outcome, &entry.name),
            None => outcome,
        }
    }

    /// The entry a request names, with its index in the manifest.
    fn resolve(&self, tool: &ToolRef) -> Result<(usize, &Entry)> {
        let mut entries = self.manifest.entries.iter().enumerate();
        let found = match tool {
            ToolRef::Name(name) => entries.find(|(_, e)| e.name == *name),
            ToolRef::Digest(hex) => {
                entries.find(|(_, e)| e.originals.digests.iter().any(|d| d.matches_either(hex)))
            }
            ToolRef::Native(_) => None,
        };
        found.ok_or_else(|| Error::ToolNotFound {
            name: match tool {
                ToolRef::Name(name) => name.clone(),
                ToolRef::Digest(hex) => format!("no entry stands for a binary with digest {hex}"),
                ToolRef::Native(path) => path.display().to_string(),
            },
            available: self.manifest.entry_names(),
        })
    }

    fn execute(
        &self,
        index: usize,
        entry: &Entry,
        request: &Request,
        called: Instant,
    ) -> Result<Output> {
        let plan = self.plan(index, entry, request)?;
        let permit = self.slots.acquire();
        let queue = called.elapsed();

        let stdout = CaptureStream::new(plan.output_bytes);
        let stderr = CaptureStream::new(plan.output_bytes);
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_blocking_current_thread(true)
            .args(&plan.argv)
            .envs(&plan.env)
            .stdin(MemoryInputPipe::new(request.stdin.clone()))
            .stdout(stdout.clone())
            .stderr(stderr.clone());
        for (host, guest, access) in &plan.preopens {
            let perms = match access {
                Access::ReadOnly => FsPerms::ReadOnly,
                Access::ReadWrite => FsPerms::ReadWrite,
            };
            wasi.preopened_dir(host, guest, perms).map_err(|e| {
                Error::BadRequest(format!(
                    "cannot open mount {} for {guest}: {e:#}",
                    host.display()
                ))
            })?;
        }

        let instantiating = Instant::now();
        let mut store = self.new_store(wasi.build_p1(), plan.memory_bytes, request.limits.fuel)?;
        store.set_epoch_deadline(EpochTicker::ticks_for(plan.timeout));
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
        let exceeded = store.data().memory.exceeded;
        // Dropping the store resets its pool slot. Doing it here, on the thread that used
        // the slot, measured 2.5x faster for `echo` than handing it to a reaper thread: a
        // cross-thread drop pays TLB shootdowns for the slot's mprotect and malloc arena
        // contention for the freed buffers.
        drop(store);
        drop(permit);

        let (out, err) = (stdout.take(), stderr.take());
        let mut artifacts = artifacts::from_stdout(&out.tail);
        if let Some(dir) = &plan.out_dir {
            let id = request
                .execution_id
                .as_deref()
                .expect("out dirs exist only with an id");
            artifacts.extend(artifacts::from_file(&dir.join(format!("{id}.json"))));
        }
        let mut output = Output {
            tool: entry.name.clone(),
            exit_code: 0,
            stdout: out.head,
            stderr: err.head,
            stdout_tail: out.tail,
            stderr_tail: err.tail,
            stdout_total: out.total,
            stderr_total: err.total,
            artifacts,
            timings: Timings {
                queue_us: queue.as_micros() as u64,
                instantiate_us: (instantiated - instantiating).as_micros() as u64,
                run_us: (ran - instantiated).as_micros() as u64,
                total_us: 0,
            },
            execution_id: request.execution_id.clone(),
            cached: false,
            usage: None,
        };
        output.timings.total_us = called.elapsed().as_micros() as u64;
        let error = match outcome {
            Ok(()) => return Ok(output),
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(exit) => {
                    output.exit_code = exit.0;
                    return Ok(output);
                }
                None => e,
            },
        };
        let tool = entry.name.clone();
        let partial = Box::new(output);
        Err(if let Some(requested) = exceeded {
            Error::MemoryLimit {
                tool,
                requested,
                limit: plan.memory_bytes,
                partial,
            }
        } else {
            match error.downcast_ref::<Trap>() {
                Some(Trap::Interrupt) => Error::Timeout {
                    tool,
                    limit: format!("time limit of {} ms", plan.timeout.as_millis()),
                    partial,
                },
                Some(Trap::OutOfFuel) => Error::Timeout {
                    tool,
                    limit: format!(
                        "fuel limit of {} units",
                        request.limits.fuel.unwrap_or(u64::MAX)
                    ),
                    partial,
                },
                _ => Error::Trap {
                    tool,
                    message: format!("{error:#}"),
                    partial,
                },
            }
        })
    }

    /// Checks the request against the entry's capabilities and the runtime's limits, and
    /// works out everything the sandbox needs. Nothing runs if this fails.
    fn plan(&self, index: usize, entry: &Entry, request: &Request) -> Result<Plan> {
        let narrowed;
        let grant = match request.capabilities.as_deref() {
            None => self.declared_grants[index].as_ref().map_err(Clone::clone)?,
            Some(requested) => {
                narrowed = Grant::new(&entry.name, &entry.capabilities, Some(requested))?;
                &narrowed
            }
        };
        let mut argv = Vec::with_capacity(request.args.len() + 1);
        argv.push(entry.entry.clone());
        for arg in &request.args {
            if arg.contains('\0') {
                return Err(Error::BadRequest(format!(
                    "argument {arg:?} contains a NUL byte"
                )));
            }
            argv.push(arg.clone());
        }
        let mut env = Vec::with_capacity(request.env.len() + 2);
        for (key, value) in &request.env {
            if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
                return Err(Error::BadRequest(format!(
                    "environment variable {key:?} has an invalid name or value"
                )));
            }
            if key.starts_with("MEGAVISOR_") {
                return Err(Error::BadRequest(format!(
                    "environment variable {key} is reserved for the runtime"
                )));
            }
            grant.check_env(&entry.name, key)?;
            env.push((key.clone(), value.clone()));
        }
        let mut preopens = Vec::with_capacity(request.mounts.len() + 1);
        for mount in &request.mounts {
            preopens.push(self.check_mount(entry, grant, mount)?);
        }
        let out_dir = self.out_dir_of(request)?;
        if let Some(dir) = &out_dir {
            preopens.push((dir.clone(), OUT_DIR_GUEST.to_owned(), Access::ReadWrite));
            env.push(("MEGAVISOR_OUT_DIR".to_owned(), OUT_DIR_GUEST.to_owned()));
        }
        if let Some(id) = &request.execution_id {
            env.push(("MEGAVISOR_EXECUTION_ID".to_owned(), id.clone()));
        }
        Ok(Plan {
            argv,
            env,
            preopens,
            out_dir,
            memory_bytes: self.limit_memory(entry.limits, request.limits.memory_bytes)?,
            timeout: self.limit_time(entry.limits, request.limits.timeout)?,
            output_bytes: self.limit_output(request.limits.output_bytes)?,
        })
    }

    /// `<out-dir>/<execution_id>/`, created, when the runtime has an output directory and
    /// the request an execution id.
    fn out_dir_of(&self, request: &Request) -> Result<Option<PathBuf>> {
        let (Some(root), Some(id)) = (&self.options.out_dir, &request.execution_id) else {
            return Ok(None);
        };
        let dir = root.join(id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(&dir)
            .map_err(|e| Error::io(&dir, "create output directory", e))?;
        Ok(Some(dir))
    }

    fn check_mount(
        &self,
        entry: &Entry,
        grant: &Grant,
        mount: &Mount,
    ) -> Result<(PathBuf, String, Access)> {
        let guest = normalize_guest_path(&mount.guest)?;
        if guest == OUT_DIR_GUEST || guest.starts_with(&format!("{OUT_DIR_GUEST}/")) {
            return Err(Error::BadRequest(format!(
                "mount point {guest} is reserved for the runtime"
            )));
        }
        grant.check_mount(&entry.name, &guest, mount.access)?;
        let host = mount.host.canonicalize().map_err(|e| {
            Error::BadRequest(format!("mount source {}: {e}", mount.host.display()))
        })?;
        if !host.is_dir() {
            return Err(Error::BadRequest(format!(
                "mount source {} is not a directory",
                host.display()
            )));
        }
        Ok((host, guest, mount.access))
    }

    fn limit_memory(&self, defaults: EntryLimits, asked: Option<u64>) -> Result<u64> {
        let max = self.options.engine.max_memory_bytes;
        match asked.unwrap_or(defaults.memory_bytes) {
            0 => Err(Error::BadRequest(
                "memory limit must be greater than zero".to_owned(),
            )),
            bytes if bytes > max => Err(Error::BadRequest(format!(
                "memory limit of {bytes} bytes exceeds this runtime's maximum of {max} bytes"
            ))),
            bytes => Ok(bytes),
        }
    }

    fn limit_time(&self, defaults: EntryLimits, asked: Option<Duration>) -> Result<Duration> {
        let max = self.options.max_timeout;
        match asked.unwrap_or(Duration::from_millis(defaults.timeout_ms)) {
            t if t.is_zero() => Err(Error::BadRequest(
                "time limit must be greater than zero".to_owned(),
            )),
            t if t > max => Err(Error::BadRequest(format!(
                "time limit of {} ms exceeds this runtime's maximum of {} ms",
                t.as_millis(),
                max.as_millis()
            ))),
            t => Ok(t),
        }
    }

    fn limit_output(&self, asked: Option<u64>) -> Result<usize> {
        let max = self.options.max_output_bytes;
        match asked.unwrap_or(max) {
            bytes if bytes > max => Err(Error::BadRequest(format!(
                "output limit of {bytes} bytes exceeds this runtime's maximum of {max} bytes"
            ))),
            bytes => Ok(bytes as usize),
        }
    }
}

/// `outcome` with its tool named `name` (the output's, or the partial output's).
fn rename(outcome: Result<Output>, name: &str) -> Result<Output> {
    match outcome {
        Ok(mut output) => {
            output.tool = name.to_owned();
            Ok(output)
        }
        Err(mut err) => {
            if let Some(partial) = err.partial_output_mut() {
                partial.tool = name.to_owned();
            }
            Err(err)
        }
    }
}

/// Everything the sandbox of one invocation needs, checked.
struct Plan {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    preopens: Vec<(PathBuf, String, Access)>,
    out_dir: Option<PathBuf>,
    memory_bytes: u64,
    timeout: Duration,
    output_bytes: usize,
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

/// Execution ids name files and directories, so they are restricted to a safe alphabet.
fn validate_execution_id(id: &str) -> Result<()> {
    let ok = (1..=128).contains(&id.len())
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "execution id {id:?} must be 1-128 characters of A-Z a-z 0-9 . _ : - and not start with '.'"
        )))
    }
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

    #[test]
    fn execution_ids_are_file_name_safe() {
        validate_execution_id("exec-1:a.b_c").unwrap();
        for bad in ["", "../x", "a/b", ".hidden", &"x".repeat(129)] {
            assert!(validate_execution_id(bad).is_err(), "{bad}");
        }
    }
}
