//! Building a signed bundle: modules, each with its entries file, + secret key → a bundle
//! directory holding each module's `.wasm` and AOT `.cwasm`, `manifest.json` and
//! `manifest.json.sig`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::digest::Digests;
use crate::engine::{self, EngineOptions};
use crate::error::{Error, Result};
use crate::manifest::{
    DataMount, DataSettings, EntriesFile, FORMAT_V2, FileRecord, MANIFEST_FILE, Manifest,
    ModulePool, ModuleRecord, Preinit, SIGNATURE_FILE,
};
use crate::preinit;
use crate::signing::ManifestSigner;

/// One module to pack: its `.wasm` and the entries file describing its tools.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleSource {
    /// The module.
    pub wasm: PathBuf,
    /// Its entries file.
    pub entries: PathBuf,
}

/// A bundle spec file (TOML): the bundle's name and its modules, paths relative to the
/// spec file.
///
/// ```toml
/// name = "default"
/// [[modules]]
/// wasm = "build/megabin.wasm"
/// entries = "megabin/entries.json"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSpec {
    /// The bundle's name.
    pub name: String,
    /// Its modules, in the order their entries are listed.
    pub modules: Vec<ModuleSource>,
}

impl BundleSpec {
    /// Reads a spec file, resolving its paths against the file's directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
        let mut spec: BundleSpec = toml::from_str(&text).map_err(|e| Error::InvalidManifest {
            file: path.to_owned(),
            reason: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for module in &mut spec.modules {
            module.wasm = base.join(&module.wasm);
            module.entries = base.join(&module.entries);
        }
        Ok(spec)
    }
}

/// What to pack.
pub struct PackSpec<'a> {
    /// The modules, in the order their entries are listed.
    pub modules: &'a [ModuleSource],
    /// The bundle's name, e.g. `default`.
    pub name: &'a str,
    /// The directory to write (created if missing; its bundle files are replaced).
    pub out_dir: &'a Path,
    /// Engine settings the `.cwasm` files are compiled for; they must match the runtime's.
    pub engine: &'a EngineOptions,
}

/// Progress of a pack, for a command line to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackEvent {
    /// Hashing the native originals present on this machine.
    HashingOriginals,
    /// Running a module's initialization function to snapshot its state.
    Preinitializing {
        /// The module.
        module: String,
        /// The function run.
        function: String,
    },
    /// Cranelift is compiling a module (the slow step).
    Compiling {
        /// The module.
        module: String,
        /// Size of its `.wasm`.
        wasm_bytes: u64,
    },
    /// Compilation of a module finished.
    Compiled {
        /// The module.
        module: String,
        /// Size of its `.cwasm`.
        cwasm_bytes: u64,
    },
    /// Files written and the manifest signed.
    Signed {
        /// Id of the signing key.
        key_id: String,
    },
}

/// A module read, pre-initialized and compiled, ready to be written.
struct PackedModule {
    record: ModuleRecord,
    wasm: Vec<u8>,
    cwasm: Vec<u8>,
    /// The data files' bytes, in the order of the record's.
    data: Vec<Vec<u8>>,
}

/// Packs and signs a bundle, reporting progress through `progress`.
pub fn pack(
    spec: &PackSpec<'_>,
    signer: &ManifestSigner,
    progress: &mut dyn FnMut(PackEvent),
) -> Result<Manifest> {
    if spec.modules.is_empty() {
        return Err(Error::BadRequest(
            "a bundle needs at least one module".to_owned(),
        ));
    }
    // Every entries file is read and checked before anything is compiled.
    let sources = spec
        .modules
        .iter()
        .map(|source| Ok((source, EntriesFile::load(&source.entries)?)))
        .collect::<Result<Vec<_>>>()?;

    progress(PackEvent::HashingOriginals);
    let mut entries = Vec::new();
    let mut names = Vec::new();
    for (source, file) in &sources {
        let name = match &file.module.name {
            Some(name) => name.clone(),
            None => module_name_of(&source.wasm)?,
        };
        for mut entry in file.entries.clone() {
            add_local_originals(&mut entry)?;
            if entry.served_natively().is_none() {
                entry.module = name.clone();
            }
            entries.push(entry);
        }
        names.push(name);
    }

    let engine = engine::build_engine(spec.engine)?;
    let mut packed = Vec::new();
    for ((source, file), name) in sources.iter().zip(names) {
        let original =
            std::fs::read(&source.wasm).map_err(|e| Error::io(&source.wasm, "read", e))?;
        let data = read_data(&source.wasm, file.module.data.as_ref())?;
        let (wasm, preinit) = match &file.module.preinit {
            None => (original, None),
            Some(function) => {
                progress(PackEvent::Preinitializing {
                    module: name.clone(),
                    function: function.clone(),
                });
                let mounted = data.as_ref().map(DataFiles::stage).transpose()?;
                let mount = mounted
                    .as_ref()
                    .zip(data.as_ref())
                    .map(|(dir, data)| (dir.path(), data.guest.as_str()));
                let wasm = preinit::snapshot(&engine, &name, &original, function, mount)?;
                let record = Preinit {
                    function: function.clone(),
                    source: Digests::of_bytes(&original),
                };
                (wasm, Some(record))
            }
        };
        progress(PackEvent::Compiling {
            module: name.clone(),
            wasm_bytes: wasm.len() as u64,
        });
        let cwasm = engine::precompile(&engine, &name, &wasm)?;
        progress(PackEvent::Compiled {
            module: name.clone(),
            cwasm_bytes: cwasm.len() as u64,
        });
        let initial = initial_memory_bytes(&name, &wasm)?;
        if let Some(entry) = file
            .entries
            .iter()
            .find(|e| e.served_natively().is_none() && e.limits.memory_bytes < initial)
        {
            return Err(Error::InvalidManifest {
                file: source.entries.clone(),
                reason: format!(
                    "entry {:?}: memory limit of {} bytes is below module {name}'s initial memory of {initial} bytes",
                    entry.name, entry.limits.memory_bytes
                ),
            });
        }
        let largest_entry = file.entries.iter().map(|e| e.limits.memory_bytes).max();
        let pool = ModulePool {
            memory_bytes: file
                .module
                .memory_bytes
                .unwrap_or_else(|| largest_entry.unwrap_or(0).max(initial)),
            warm: file.module.warm.unwrap_or(1),
        };
        packed.push(PackedModule {
            record: ModuleRecord {
                wasm: record(format!("{name}.wasm"), &wasm),
                cwasm: record(format!("{name}.cwasm"), &cwasm),
                name,
                pool,
                preinit,
                data: data.as_ref().map(|data| DataMount {
                    guest: data.guest.clone(),
                    files: data
                        .files
                        .iter()
                        .map(|(file, bytes)| record(file.clone(), bytes))
                        .collect(),
                }),
            },
            wasm,
            cwasm,
            data: data
                .map(|data| data.files.into_iter().map(|(_, bytes)| bytes).collect())
                .unwrap_or_default(),
        });
    }

    let manifest = Manifest {
        format: FORMAT_V2.to_owned(),
        name: spec.name.to_owned(),
        engine: engine::fingerprint(&engine),
        wasmtime: WASMTIME_VERSION.to_owned(),
        modules: packed.iter().map(|m| m.record.clone()).collect(),
        entries,
    };
    let manifest_bytes = manifest.to_bytes();
    // Validate what we are about to sign with the same parser every reader uses.
    Manifest::parse(&manifest_bytes, &spec.out_dir.join(MANIFEST_FILE))?;

    std::fs::create_dir_all(spec.out_dir).map_err(|e| Error::io(spec.out_dir, "create", e))?;
    for module in &packed {
        write_atomic(&spec.out_dir.join(&module.record.wasm.file), &module.wasm)?;
        write_atomic(&spec.out_dir.join(&module.record.cwasm.file), &module.cwasm)?;
        let records = module.record.data.iter().flat_map(|d| &d.files);
        for (record, bytes) in records.zip(&module.data) {
            write_atomic(&spec.out_dir.join(&record.file), bytes)?;
        }
    }
    write_atomic(&spec.out_dir.join(MANIFEST_FILE), &manifest_bytes)?;
    write_atomic(
        &spec.out_dir.join(SIGNATURE_FILE),
        &signer.sign(&manifest_bytes),
    )?;
    progress(PackEvent::Signed {
        key_id: signer.public().id(),
    });
    Ok(manifest)
}

/// A module's data files, read from beside its `.wasm`.
struct DataFiles {
    guest: String,
    files: Vec<(String, Vec<u8>)>,
}

impl DataFiles {
    /// A private directory holding just these files, to mount for pre-initialization.
    fn stage(&self) -> Result<tempfile::TempDir> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("data directory", "create", e))?;
        for (file, bytes) in &self.files {
            let path = dir.path().join(file);
            std::fs::write(&path, bytes).map_err(|e| Error::io(&path, "write", e))?;
        }
        Ok(dir)
    }
}

fn read_data(wasm: &Path, settings: Option<&DataSettings>) -> Result<Option<DataFiles>> {
    let Some(settings) = settings else {
        return Ok(None);
    };
    let dir = wasm.parent().unwrap_or(Path::new("."));
    let files = settings
        .files
        .iter()
        .map(|file| {
            let path = dir.join(file);
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, "read", e))?;
            Ok((file.clone(), bytes))
        })
        .collect::<Result<_>>()?;
    Ok(Some(DataFiles {
        guest: settings.guest.clone(),
        files,
    }))
}

/// Adds the digests of the entry's originals present on this machine.
fn add_local_originals(entry: &mut crate::manifest::Entry) -> Result<()> {
    for path in &entry.originals.paths {
        let path = Path::new(path);
        if !path.is_file() {
            continue;
        }
        let (digests, _) = Digests::of_file(path)?;
        if !entry.originals.digests.contains(&digests) {
            entry.originals.digests.push(digests);
        }
    }
    Ok(())
}

/// The largest initial size of the module's memories: no instance can have less.
fn initial_memory_bytes(name: &str, wasm: &[u8]) -> Result<u64> {
    const PAGE_BYTES: u64 = 64 << 10;
    let invalid = |e: wasmparser::BinaryReaderError| {
        Error::Engine(format!("module {name} is not valid WebAssembly: {e}"))
    };
    let mut pages = 0;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
            wasmparser::Payload::MemorySection(memories) => {
                for memory in memories {
                    pages = pages.max(memory.map_err(invalid)?.initial);
                }
            }
            wasmparser::Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    if let wasmparser::TypeRef::Memory(memory) = import.map_err(invalid)?.ty {
                        pages = pages.max(memory.initial);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(pages.saturating_mul(PAGE_BYTES))
}

/// A module's default name: its file's stem.
fn module_name_of(wasm: &Path) -> Result<String> {
    wasm.file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::BadRequest(format!(
                "{}: cannot name a module after this file; set module.name in its entries file",
                wasm.display()
            ))
        })
}

/// The Wasmtime version this crate is built against, recorded in manifests for readers.
pub const WASMTIME_VERSION: &str = "48";

fn record(file: String, bytes: &[u8]) -> FileRecord {
    FileRecord {
        file,
        size: bytes.len() as u64,
        digests: Digests::of_bytes(bytes),
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir: PathBuf = path
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| ".".into());
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)
        .map_err(|e| Error::io(&dir, "create temporary file", e))?;
    tmp.write_all(bytes)
        .map_err(|e| Error::io(tmp.path(), "write", e))?;
    tmp.persist(path)
        .map_err(|e| Error::io(path, "rename into place", e.error))?;
    Ok(())
}
