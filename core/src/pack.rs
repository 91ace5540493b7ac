//! Building a signed bundle: megabinary + entries file + secret key → a bundle directory
//! holding the `.wasm`, its AOT `.cwasm`, `manifest.json` and `manifest.json.sig`.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::digest::Digests;
use crate::engine::{self, EngineOptions};
use crate::error::{Error, Result};
use crate::manifest::{
    EntriesFile, FORMAT_V1, FileRecord, MANIFEST_FILE, Manifest, Megabinary, SIGNATURE_FILE,
};
use crate::signing::ManifestSigner;

/// What to pack.
pub struct PackSpec<'a> {
    /// The megabinary.
    pub wasm: &'a Path,
    /// The entries file describing its tools.
    pub entries: &'a Path,
    /// The bundle's name, e.g. `default`.
    pub name: &'a str,
    /// The directory to write (created if missing; its bundle files are replaced).
    pub out_dir: &'a Path,
    /// Engine settings the `.cwasm` is compiled for; they must match the runtime's.
    pub engine: &'a EngineOptions,
}

/// Progress of a pack, for a command line to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackEvent {
    /// Hashing the native originals present on this machine.
    HashingOriginals,
    /// Cranelift is compiling a module of this many bytes (the slow step).
    Compiling {
        /// Size of the `.wasm`.
        wasm_bytes: u64,
    },
    /// Compilation finished.
    Compiled {
        /// Size of the `.cwasm`.
        cwasm_bytes: u64,
    },
    /// Files written and the manifest signed.
    Signed {
        /// Id of the signing key.
        key_id: String,
    },
}

/// Packs and signs a bundle, reporting progress through `progress`.
pub fn pack(
    spec: &PackSpec<'_>,
    signer: &ManifestSigner,
    progress: &mut dyn FnMut(PackEvent),
) -> Result<Manifest> {
    let wasm = std::fs::read(spec.wasm).map_err(|e| Error::io(spec.wasm, "read", e))?;
    let mut entries = EntriesFile::load(spec.entries)?.entries;

    progress(PackEvent::HashingOriginals);
    for entry in &mut entries {
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
    }

    progress(PackEvent::Compiling {
        wasm_bytes: wasm.len() as u64,
    });
    let engine = engine::build_engine(spec.engine)?;
    let cwasm = engine::precompile(&engine, &wasm)?;
    progress(PackEvent::Compiled {
        cwasm_bytes: cwasm.len() as u64,
    });

    let stem = spec
        .wasm
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("megabinary");
    let manifest = Manifest {
        format: FORMAT_V1.to_owned(),
        name: spec.name.to_owned(),
        megabinary: Megabinary {
            wasm: record(format!("{stem}.wasm"), &wasm),
            cwasm: record(format!("{stem}.cwasm"), &cwasm),
            engine: engine::fingerprint(&engine),
            wasmtime: WASMTIME_VERSION.to_owned(),
        },
        entries,
    };
    let manifest_bytes = manifest.to_bytes();
    // Validate what we are about to sign with the same parser every reader uses.
    Manifest::parse(&manifest_bytes, &spec.out_dir.join(MANIFEST_FILE))?;

    std::fs::create_dir_all(spec.out_dir).map_err(|e| Error::io(spec.out_dir, "create", e))?;
    write_atomic(&spec.out_dir.join(&manifest.megabinary.wasm.file), &wasm)?;
    write_atomic(&spec.out_dir.join(&manifest.megabinary.cwasm.file), &cwasm)?;
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
