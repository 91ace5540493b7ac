//! The Wasmtime engine: configuration, fingerprint, and loading a bundle's modules.
//!
//! A module's `.cwasm` is native code, loaded with an `unsafe` deserialize. It is only
//! ever loaded from bytes whose digests matched the signed manifest, and only when it was
//! built for this exact engine configuration. Otherwise the verified `.wasm` is compiled
//! into a private cache (mode 0700) keyed by wasm digest + engine fingerprint.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use wasmtime::{Config, Engine, InstanceAllocationStrategy, Module};

use crate::bundle::{ModuleFiles, VerifiedBundle};
use crate::error::{Error, Result};
use crate::manifest::ModuleRecord;

/// Engine settings. Packing and running must agree on the ones that shape compiled code
/// (fuel); the others size the instance pool.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Instances that may run at once.
    pub max_concurrency: u32,
    /// Largest linear memory any invocation may have, in bytes.
    pub max_memory_bytes: u64,
    /// Compile with fuel metering, so requests can bound the instructions they run.
    pub fuel: bool,
    /// Where recompiled modules are cached; `None` means `$XDG_CACHE_HOME/megavisor` or
    /// `~/.cache/megavisor`.
    pub cache_dir: Option<PathBuf>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_concurrency: 16,
            max_memory_bytes: 1 << 30,
            fuel: false,
            cache_dir: None,
        }
    }
}

/// Native stack one call's wasm may use. An interpreter compiled to wasm (QuickJS, CPython)
/// spends about 1 KiB of it per level of guest recursion, so Wasmtime's default 512 KiB
/// stopped JavaScript at a depth of 500; 1 MiB still fits, with the host's own frames, in
/// the 2 MiB stack of a default Rust thread, on which embedded calls may run.
const WASM_STACK_BYTES: usize = 1 << 20;

/// Builds the engine: Cranelift, the pool's allocator (see [`crate::pool`]), copy-on-write
/// memory images, epoch interruption, and no wasm backtraces (capturing one costs
/// microseconds per trap or exit).
pub fn build_engine(options: &EngineOptions) -> Result<Engine> {
    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(
            crate::pool::allocation(options),
        ))
        .memory_init_cow(true)
        .epoch_interruption(true)
        .consume_fuel(options.fuel)
        .max_wasm_stack(WASM_STACK_BYTES)
        .wasm_backtrace_max_frames(None);
    Engine::new(&config).map_err(|e| Error::Engine(format!("cannot build engine: {e:#}")))
}

/// A stable hex fingerprint of everything that makes compiled code compatible with `engine`.
pub fn fingerprint(engine: &Engine) -> String {
    struct Blake3Hasher(blake3::Hasher);
    impl Hasher for Blake3Hasher {
        fn finish(&self) -> u64 {
            unreachable!("only the full digest is read")
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = Blake3Hasher(blake3::Hasher::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.finalize().to_hex()[..32].to_owned()
}

/// Where a module was loaded from, for start-up logs; ordered from most to least ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ModuleOrigin {
    /// The bundle's verified `.cwasm`.
    Precompiled,
    /// The private recompile cache.
    Cache,
    /// Compiled now from the verified `.wasm` (and stored in the cache).
    Compiled,
}

/// Loads every module of a verified bundle into `engine`, in the manifest's order, with
/// where each came from.
pub fn load_modules(
    engine: &Engine,
    bundle: &VerifiedBundle,
    options: &EngineOptions,
) -> Result<Vec<(Module, ModuleOrigin)>> {
    let engine_fp = fingerprint(engine);
    let bundle_engine = &bundle.manifest.engine;
    if *bundle_engine != engine_fp {
        tracing::info!(%bundle_engine, this_engine = %engine_fp, "precompiled modules are for another engine; using the recompile cache");
    }
    bundle
        .manifest
        .modules
        .iter()
        .zip(&bundle.modules)
        .map(|(record, files)| {
            load_module(
                engine,
                &engine_fp,
                *bundle_engine == engine_fp,
                record,
                files,
                options,
            )
        })
        .collect()
}

/// Loads one verified module: its `.cwasm` when it was built for this engine, else the
/// recompile cache, else a compile of its `.wasm` into the cache.
fn load_module(
    engine: &Engine,
    engine_fp: &str,
    precompiled_fits: bool,
    record: &ModuleRecord,
    files: &ModuleFiles,
    options: &EngineOptions,
) -> Result<(Module, ModuleOrigin)> {
    if precompiled_fits {
        // SAFETY: these are the exact bytes whose SHA-256 and BLAKE3 matched the manifest,
        // whose signature was checked (or explicitly waived) by the caller, and they were
        // produced by `Engine::precompile_module` for an engine with this fingerprint.
        match unsafe { Module::deserialize(engine, &files.cwasm) } {
            Ok(module) => return Ok((module, ModuleOrigin::Precompiled)),
            Err(e) => {
                tracing::warn!(module = %record.name, error = %e, "verified .cwasm did not load; recompiling")
            }
        }
    }
    let cache = CacheDir::open(options.cache_dir.clone())?;
    let wasm_digest = &record.wasm.digests.blake3;
    let cached = cache.path.join(format!("{wasm_digest}-{engine_fp}.cwasm"));
    if cached.exists() {
        // SAFETY: the cache directory is owned by this user with mode 0700 (checked in
        // `CacheDir::open`), and its files are written only by `compile_into_cache` below,
        // from `.wasm` bytes that matched a verified manifest; the name binds them to that
        // wasm digest and to this engine's fingerprint.
        match unsafe { Module::deserialize_file(engine, &cached) } {
            Ok(module) => return Ok((module, ModuleOrigin::Cache)),
            Err(e) => {
                tracing::warn!(file = %cached.display(), error = %e, "cached module did not load; recompiling")
            }
        }
    }
    let module = compile_into_cache(engine, &record.name, &files.wasm, &cached)?;
    Ok((module, ModuleOrigin::Compiled))
}

/// Compiles `wasm` (already verified) and stores the result atomically at `target`.
fn compile_into_cache(engine: &Engine, name: &str, wasm: &[u8], target: &Path) -> Result<Module> {
    let module = Module::new(engine, wasm)
        .map_err(|e| Error::Engine(format!("cannot compile module {name}: {e:#}")))?;
    let bytes = module
        .serialize()
        .map_err(|e| Error::Engine(format!("cannot serialize module: {e:#}")))?;
    let dir = target
        .parent()
        .expect("cache files live in the cache directory");
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| Error::io(dir, "create temporary file", e))?;
    tmp.write_all(&bytes)
        .map_err(|e| Error::io(tmp.path(), "write", e))?;
    tmp.persist(target)
        .map_err(|e| Error::io(target, "rename into place", e.error))?;
    Ok(module)
}

/// Compiles module `name` for `engine` and returns the precompiled bytes (used by `pack`).
pub fn precompile(engine: &Engine, name: &str, wasm: &[u8]) -> Result<Vec<u8>> {
    engine
        .precompile_module(wasm)
        .map_err(|e| Error::Engine(format!("cannot compile module {name}: {e:#}")))
}

struct CacheDir {
    path: PathBuf,
}

impl CacheDir {
    /// Creates (mode 0700) or opens the cache directory, refusing one that others can write
    /// to or that belongs to another user: its files are loaded as native code.
    fn open(configured: Option<PathBuf>) -> Result<Self> {
        let path = configured.unwrap_or_else(default_cache_dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(|e| Error::io(&path, "create cache directory", e))?;
        let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, "stat", e))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if meta.uid() != euid || meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::NotAllowed(format!(
                "cache directory {} must be owned by uid {euid} with mode 0700 (found uid {}, mode {:o})",
                path.display(),
                meta.uid(),
                meta.permissions().mode() & 0o777
            )));
        }
        Ok(CacheDir { path })
    }
}

fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("megavisor")
}
