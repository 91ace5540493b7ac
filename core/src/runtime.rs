//! The runtime: a verified bundle's modules, each pre-linked once, serving invocations from
//! a warm pool of instance slots. Every invocation gets a fresh instance: nothing one call writes
//! is visible to the next.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmtime::{Engine, Module};

use crate::admission;
use crate::backend::{self, Backend, Call};
use crate::bundle::VerifiedBundle;
use crate::caller::{Caller, Credentials, Identity};
use crate::capability::Capability;
use crate::data::DataDir;
use crate::digest::Digests;
use crate::engine::{self, EngineOptions, ModuleOrigin};
use crate::epoch::Stop;
use crate::error::{Error, Result};
use crate::idempotency::{self, Claim, IdempotencyCache};
use crate::manifest::{Entry, EntryLimits, FileRecord, Manifest, ModulePool, ModuleRecord};
use crate::mounts::MountRoot;
use crate::native::{NativeBackend, NativeOptions};
use crate::pool::{Pool, PooledModule};
use crate::request::{Request, ToolRef};
use crate::result::Output;
use crate::session::{SessionOptions, Sessions};
use crate::signing::{Authenticity, TrustPolicy};
pub use crate::wasm::OUT_DIR_GUEST;
use crate::wasm::WasmBackend;

/// Runtime settings beyond the engine's.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Engine and pool settings.
    pub engine: EngineOptions,
    /// Execution ids remembered for idempotency, per principal.
    pub idempotency_capacity: usize,
    /// Bytes of output the remembered outcomes of one principal may hold; the oldest are
    /// forgotten beyond it.
    pub idempotency_max_bytes: usize,
    /// How long a completed execution id is remembered.
    pub idempotency_ttl: Duration,
    /// Upper bound on bytes of stdout and of stderr kept in full per call.
    pub max_output_bytes: u64,
    /// Upper bound on a request's stdin.
    pub max_stdin_bytes: u64,
    /// Upper bound on any request's time limit.
    pub max_timeout: Duration,
    /// Host directory under which each execution id gets `<id>/` (a peer's under
    /// `uid-<uid>/`), mounted in the guest at [`OUT_DIR_GUEST`]; `None` disables
    /// per-execution output directories.
    pub out_dir: Option<PathBuf>,
    /// Host directories under which a peer's mounts may lie (see [`crate::mounts`]); none
    /// means a peer may mount nothing. This process's own calls are not confined.
    pub mount_roots: Vec<MountRoot>,
    /// Native tools and their allowlist; `None` refuses every native tool.
    pub native: Option<NativeOptions>,
    /// How many sessions may be open, and for how long idle.
    pub sessions: SessionOptions,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            engine: EngineOptions::default(),
            idempotency_capacity: 4096,
            idempotency_max_bytes: 256 << 20,
            idempotency_ttl: Duration::from_secs(600),
            max_output_bytes: 16 << 20,
            max_stdin_bytes: 64 << 20,
            max_timeout: Duration::from_secs(3600),
            out_dir: None,
            mount_roots: Vec::new(),
            native: None,
            sessions: SessionOptions::default(),
        }
    }
}

/// How long start-up took, for readiness lines and logs.
#[derive(Debug, Clone, Copy)]
pub struct StartupReport {
    /// Reading the manifest, checking its signature and every file's digests.
    pub verify: Duration,
    /// Deserializing (or compiling) the modules and linking them.
    pub load: Duration,
    /// Making every module's warm instances.
    pub warm: Duration,
    /// Where the modules came from (the least ready of them: compiled before cached before
    /// precompiled).
    pub origin: ModuleOrigin,
}

/// A verified, loaded bundle serving invocations.
pub struct Runtime {
    manifest: Manifest,
    authenticity: Authenticity,
    manifest_digest: String,
    options: RuntimeOptions,
    idempotency: IdempotencyCache,
    startup: StartupReport,
    /// The modules' entries, on the warm pool.
    wasm: WasmBackend,
    /// Native tools, when an allowlist is configured.
    native: Option<NativeBackend>,
    /// This process's effective uid: a peer with it needs no change of identity.
    process_uid: u32,
    /// Instances kept alive across calls.
    sessions: Sessions,
}

/// What a request runs: an entry of a module, or a native binary (standing for an
/// entry, or allowlisted by itself).
#[derive(Clone, Copy)]
enum Target<'a> {
    Entry(usize, &'a Entry),
    Native(&'a Path, Option<&'a Entry>),
}

impl<'a> Target<'a> {
    /// The tool's name, as the caller called it.
    fn name(&self) -> Cow<'a, str> {
        match self {
            Target::Entry(_, entry) | Target::Native(_, Some(entry)) => Cow::Borrowed(&entry.name),
            Target::Native(binary, None) => binary.to_string_lossy(),
        }
    }
}

impl Runtime {
    /// Verifies the bundle in `dir` under `policy` and loads it.
    pub fn open(dir: &Path, policy: &TrustPolicy, options: RuntimeOptions) -> Result<Self> {
        let started = Instant::now();
        let bundle = VerifiedBundle::open(dir, policy)?;
        let verify = started.elapsed();
        let engine = engine::build_engine(&options.engine)?;
        let loading = Instant::now();
        let loaded = engine::load_modules(&engine, &bundle, &options.engine)?;
        let origin = loaded
            .iter()
            .map(|(_, origin)| *origin)
            .max()
            .unwrap_or(ModuleOrigin::Precompiled);
        let modules = bundle
            .manifest
            .modules
            .iter()
            .zip(&loaded)
            .map(|(record, (module, _))| {
                let memory_bytes = record
                    .pool
                    .memory_bytes
                    .min(options.engine.max_memory_bytes);
                PooledModule::link(
                    &engine,
                    &record.name,
                    module,
                    memory_bytes,
                    record.pool.warm,
                )
            })
            .collect::<Result<_>>()?;
        let data = bundle
            .manifest
            .modules
            .iter()
            .zip(&bundle.modules)
            .map(|(record, files)| {
                record
                    .data
                    .as_ref()
                    .map(|mount| DataDir::materialize(mount, &files.data))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        drop(bundle.modules);
        let load = loading.elapsed();
        let mut runtime = Self::assemble(
            engine,
            (modules, data),
            bundle.manifest,
            bundle.authenticity,
            options,
            (verify, load, origin),
        )?;
        runtime.manifest_digest = bundle.manifest_digest;
        Ok(runtime)
    }

    /// A runtime for one ad-hoc module that is not part of a signed bundle, as
    /// `megavisor run --module` runs one. The caller is responsible for having decided to
    /// trust `wasm`; its one entry is named `name` and holds exactly `capabilities`.
    pub fn adhoc(
        wasm: &[u8],
        name: &str,
        capabilities: Vec<Capability>,
        options: RuntimeOptions,
    ) -> Result<Self> {
        let engine = engine::build_engine(&options.engine)?;
        let loading = Instant::now();
        let module = Module::new(&engine, wasm)
            .map_err(|e| Error::Engine(format!("cannot compile {name}: {e:#}")))?;
        let memory_bytes = options.engine.max_memory_bytes;
        let pooled = PooledModule::link(&engine, name, &module, memory_bytes, 1)?;
        let load = loading.elapsed();
        let entry = Entry {
            name: name.to_owned(),
            entry: name.to_owned(),
            module: name.to_owned(),
            export: None,
            description: format!("ad-hoc module {name}"),
            arguments: serde_json::json!({"type": "object"}),
            capabilities,
            limits: EntryLimits {
                memory_bytes: (256 << 20).min(memory_bytes),
                timeout_ms: 60_000,
            },
            originals: Default::default(),
            native_fallback: None,
        };
        let manifest = Manifest {
            format: crate::manifest::FORMAT_V2.to_owned(),
            name: name.to_owned(),
            engine: engine::fingerprint(&engine),
            wasmtime: crate::pack::WASMTIME_VERSION.to_owned(),
            modules: vec![ModuleRecord {
                name: name.to_owned(),
                wasm: FileRecord {
                    file: format!("{name}.wasm"),
                    size: wasm.len() as u64,
                    digests: Digests::of_bytes(wasm),
                },
                cwasm: FileRecord {
                    file: format!("{name}.cwasm"),
                    size: 0,
                    digests: Digests::of_bytes(b""),
                },
                pool: ModulePool {
                    memory_bytes,
                    warm: 1,
                },
                preinit: None,
                data: None,
            }],
            entries: vec![entry],
        };
        let authenticity = Authenticity::Unverified {
            reason: "ad-hoc module outside any signed bundle".to_owned(),
        };
        Self::assemble(
            engine,
            (vec![pooled], vec![None]),
            manifest,
            authenticity,
            options,
            (Duration::ZERO, load, ModuleOrigin::Compiled),
        )
    }

    /// The runtime of `modules`, linked already, with their data mounts; `(verify, load,
    /// origin)` say how start-up went so far.
    fn assemble(
        engine: Engine,
        (modules, data): (Vec<PooledModule>, Vec<Option<DataDir>>),
        manifest: Manifest,
        authenticity: Authenticity,
        options: RuntimeOptions,
        (verify, load, origin): (Duration, Duration, ModuleOrigin),
    ) -> Result<Self> {
        let (pool, warm) = Pool::new(engine, modules, &options.engine)?;
        let wasm = WasmBackend::new(pool, &manifest.entries, options.mount_roots.clone(), data)?;
        let originals = manifest
            .entries
            .iter()
            .flat_map(|entry| &entry.originals.digests)
            .flat_map(|digests| [digests.sha256.clone(), digests.blake3.clone()])
            .collect();
        let native = options
            .native
            .clone()
            .map(|native| NativeBackend::new(native, originals))
            .transpose()?;
        let capacity =
            std::num::NonZeroUsize::new(options.idempotency_capacity.max(1)).expect("non-zero");
        Ok(Runtime {
            wasm,
            native,
            idempotency: IdempotencyCache::new(
                capacity,
                options.idempotency_max_bytes,
                options.idempotency_ttl,
            ),
            process_uid: nix::unistd::geteuid().as_raw(),
            sessions: Sessions::new(options.sessions),
            manifest_digest: format!("sha256:{}", Digests::of_bytes(&manifest.to_bytes()).sha256),
            manifest,
            authenticity,
            options,
            startup: StartupReport {
                verify,
                load,
                warm,
                origin,
            },
        })
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// `sha256:<hex>` of the manifest file (of the manifest as serialized, for an ad-hoc
    /// module): the bundle's identity in an image map.
    pub fn manifest_digest(&self) -> &str {
        &self.manifest_digest
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
    /// and looking it up among the entries' originals. A binary no entry stands for is
    /// refused as [`Error::NotAllowed`] (`EACCES`).
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

    /// Runs one invocation for this process (an embedded call): an entry of the megabinary,
    /// or a native binary.
    pub fn run(&self, request: &Request) -> Result<Output> {
        self.run_for(request, &Caller::process_waiting())
    }

    /// Runs one invocation for `caller`: its time limit counts from when the call arrived,
    /// it stops at the caller's deadline or when the caller gives up, its execution id is
    /// the caller's own, and a peer's mounts are confined to the mount roots and opened with
    /// the peer's credentials.
    pub fn run_for(&self, request: &Request, caller: &Caller) -> Result<Output> {
        if let Some(id) = request.session {
            return self.run_in_session(id, request, caller);
        }
        let target = self.resolve(&request.tool)?;
        if request.argv0.is_some() && matches!(target, Target::Entry(..)) {
            return Err(Error::BadRequest(
                "argv0 names a native tool's argv[0]; an entry's is always its entry point"
                    .to_owned(),
            ));
        }
        let admitted = admission::admit(&self.options, request)?;
        let stop = Stop::new(caller, self.limit_of(target, request.limits.timeout)?);
        let execute = || match target {
            Target::Entry(index, entry) => self.execute(
                &self.wasm,
                (index, entry),
                target,
                request,
                caller,
                &stop,
                admitted,
            ),
            Target::Native(binary, _) => {
                let native = self.native.as_ref().ok_or_else(|| {
                    Error::NotAllowed(format!(
                        "{}: native tools are not enabled (this runtime has no allowlist)",
                        binary.display()
                    ))
                })?;
                self.execute(native, binary, target, request, caller, &stop, admitted)
            }
        };
        let Some(id) = &request.execution_id else {
            return execute();
        };
        let fingerprint = idempotency::fingerprint(request);
        match self
            .idempotency
            .claim(caller, &stop, &target.name(), id, fingerprint)?
        {
            Claim::Replay(outcome) => *outcome,
            Claim::Run(ticket) => {
                let outcome = execute();
                ticket.settle(&outcome);
                outcome
            }
        }
    }

    /// Runs an admitted call on `backend`: the backend's own checks, the call's output
    /// directory and variables, a permit, the run, and its answer.
    #[allow(clippy::too_many_arguments)]
    fn execute<B: Backend>(
        &self,
        backend: &B,
        tool: B::Tool<'_>,
        target: Target<'_>,
        request: &Request,
        caller: &Caller,
        stop: &Stop,
        admitted: admission::Admitted,
    ) -> Result<Output> {
        let peer = self.other_user(caller);
        let plan = backend.admit(tool, request, caller, peer)?;
        let mut env = admitted.env;
        let out_dir = admission::out_dir(&self.options, request, caller, peer)?;
        if let Some(dir) = &out_dir {
            env.push((
                "MEGAVISOR_OUT_DIR".to_owned(),
                backend.out_dir_seen_at(dir)?,
            ));
        }
        if let Some(id) = &request.execution_id {
            env.push(("MEGAVISOR_EXECUTION_ID".to_owned(), id.clone()));
        }
        let name = target.name();
        let permit = self.wasm.pool().permit(stop).map_err(|reason| {
            stop.ended_before_start(reason, &name, request.execution_id.clone())
        })?;
        let call = Call {
            name,
            request,
            caller,
            peer,
            stop,
            env,
            output_bytes: admitted.output_bytes,
            out_dir,
            queued: caller.received.elapsed(),
        };
        let ran = backend.run(plan, &call);
        drop(permit);
        backend::settle(&call, ran?)
    }

    /// Opens a session of entry `tool` for `caller`: one instance kept alive across the
    /// calls that name it (see [`crate::session`]). Returns its id. Fails with
    /// [`Error::SessionGone`] when the most sessions are open or no pool permit is free, and
    /// [`Error::BadRequest`] for an entry that cannot have one (served natively, or a
    /// command, whose `_start` runs once per instance).
    pub fn open_session(&self, tool: &str, caller: &Caller) -> Result<u64> {
        let named = ToolRef::Name(tool.to_owned());
        let Target::Entry(index, entry) = self.resolve(&named)? else {
            return Err(Error::BadRequest(format!(
                "{tool} is a native tool; sessions are for entries of reactor modules"
            )));
        };
        if entry.export.is_none() {
            return Err(Error::BadRequest(format!(
                "{tool} is a WASI command, which runs once per instance; sessions are for \
                 entries of reactor modules (like python and js)"
            )));
        }
        let held = self.wasm.hold(index, entry)?.ok_or_else(|| {
            Error::SessionGone(format!(
                "no session can be kept for {tool} now: the pool has no permit to spare \
                 (sessions never take the last one); retry later"
            ))
        })?;
        self.sessions
            .insert(caller.identity.namespace(), index, held)
    }

    /// Closes session `id` of `caller`; [`Error::SessionGone`] when it is not there.
    pub fn close_session(&self, id: u64, caller: &Caller) -> Result<()> {
        self.sessions.close(id, caller.identity.namespace())
    }

    /// Runs a call in session `id`: the session's instance, its state left by earlier calls,
    /// this call's arguments, stdin, mounts and time limit. A call that fails other than
    /// by exiting ends the session.
    fn run_in_session(&self, id: u64, request: &Request, caller: &Caller) -> Result<Output> {
        if request.execution_id.is_some() {
            return Err(Error::BadRequest(
                "a call in a session depends on the calls before it, so it cannot be replayed \
                 by an execution id"
                    .to_owned(),
            ));
        }
        let slot = self.sessions.get(id, caller.identity.namespace())?;
        // A session runs one call at a time. A call that came while another runs is refused
        // rather than kept waiting: waiting, it would hold a guest thread that no permit
        // accounts for, past its own deadline.
        let mut guard = match slot.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(Error::BadRequest(format!(
                    "session {id:016x} is running another call; its calls run one at a time"
                )));
            }
        };
        let session = guard.as_mut().ok_or_else(|| crate::session::gone(id))?;
        let index = session.entry;
        let entry = &self.manifest.entries[index];
        if !matches!(&request.tool, ToolRef::Name(name) if *name == entry.name) {
            return Err(Error::BadRequest(format!(
                "session {id:016x} is a session of {}, not of the tool this call names",
                entry.name
            )));
        }
        session.touch();
        let target = Target::Entry(index, entry);
        let admitted = admission::admit(&self.options, request)?;
        let stop = Stop::new(caller, self.limit_of(target, request.limits.timeout)?);
        let peer = self.other_user(caller);
        let plan = self.wasm.admit((index, entry), request, caller, peer)?;
        let call = Call {
            name: target.name(),
            request,
            caller,
            peer,
            stop: &stop,
            env: admitted.env,
            output_bytes: admitted.output_bytes,
            out_dir: None,
            queued: caller.received.elapsed(),
        };
        let ran = self.wasm.run_held(&mut session.held, plan, &call);
        let exited = matches!(&ran, Ok(ran) if matches!(ran.ending, backend::Ending::Exited));
        if !exited {
            self.sessions.end(id, &mut guard);
        }
        backend::settle(&call, ran?)
    }

    /// What a request's tool names: an entry (or the native binary standing for it), or a
    /// native binary by path.
    fn resolve<'a>(&'a self, tool: &'a ToolRef) -> Result<Target<'a>> {
        let mut entries = self.manifest.entries.iter().enumerate();
        let found = match tool {
            ToolRef::Native(binary) => return Ok(Target::Native(binary, None)),
            ToolRef::Name(name) => entries.find(|(_, e)| e.name == *name),
            ToolRef::Digest(hex) => {
                entries.find(|(_, e)| e.originals.digests.iter().any(|d| d.matches_either(hex)))
            }
        };
        let (index, entry) = found.ok_or_else(|| Error::ToolNotFound {
            name: match tool {
                ToolRef::Name(name) => name.clone(),
                ToolRef::Digest(hex) => format!("no entry stands for a binary with digest {hex}"),
                ToolRef::Native(path) => path.display().to_string(),
            },
            available: self.manifest.entry_names(),
        })?;
        Ok(match entry.served_natively() {
            Some(binary) => Target::Native(binary, Some(entry)),
            None => Target::Entry(index, entry),
        })
    }

    /// The credentials of a caller who is another user than this process, whose file
    /// access must therefore be taken on for it.
    fn other_user<'a>(&self, caller: &'a Caller) -> Option<&'a Credentials> {
        match &caller.identity {
            Identity::Peer(credentials) if credentials.uid != self.process_uid => Some(credentials),
            _ => None,
        }
    }

    /// The time limit `request` runs under (from when its call arrives): its own, else its
    /// entry's (or the native tools' default), at most this runtime's maximum.
    pub fn time_limit(&self, request: &Request) -> Result<Duration> {
        self.limit_of(self.resolve(&request.tool)?, request.limits.timeout)
    }

    fn limit_of(&self, target: Target<'_>, asked: Option<Duration>) -> Result<Duration> {
        let default = match target {
            Target::Entry(_, entry) | Target::Native(_, Some(entry)) => {
                Duration::from_millis(entry.limits.timeout_ms)
            }
            Target::Native(_, None) => self
                .native
                .as_ref()
                .map_or(NativeOptions::default().default_timeout, |n| {
                    n.default_timeout()
                }),
        };
        admission::time_limit(default, asked, self.options.max_timeout)
    }
}
