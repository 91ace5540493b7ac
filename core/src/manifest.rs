//! The manifest: the one description of a bundle that every part of megavisor reads.
//!
//! A bundle is a directory holding `manifest.json`, its detached Ed25519 signature
//! `manifest.json.sig`, and for each of its modules the `.wasm` and its precompiled
//! `.cwasm`. The manifest records the size and both digests of each file, each module's
//! pool settings, and one [`Entry`] per tool: which module runs it and how, how to describe
//! it to an LLM, what it may touch, and which native binaries (by content digest) it stands
//! for. The verified, precompiled modules of one bundle are what the design calls the
//! megabinary.
//!
//! This runtime writes format v2 ([`FORMAT_V2`]) and still reads v1 ([`FORMAT_V1`]), whose
//! single megabinary becomes a bundle of one module.
//!
//! Unknown fields are refused: a security-relevant field that this version does not
//! understand must not be silently ignored.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::capability::Capability;
use crate::digest::Digests;
use crate::error::{Error, Result};

mod v1;

/// The `format` string of the first manifest version: one megabinary.
pub const FORMAT_V1: &str = "megavisor-manifest/v1";

/// The `format` string of the manifest this runtime writes: a list of modules.
pub const FORMAT_V2: &str = "megavisor-manifest/v2";

/// File name of the manifest inside a bundle directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// File name of the detached signature inside a bundle directory.
pub const SIGNATURE_FILE: &str = "manifest.json.sig";

/// Largest manifest accepted, so a hostile file cannot exhaust memory before it is checked.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// The export a WASI command runs when an entry names none.
pub const COMMAND_EXPORT: &str = "_start";

/// A parsed and validated manifest, in the v2 shape whatever version was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT_V2`] once parsed.
    pub format: String,
    /// A short name for the bundle, e.g. `default`.
    pub name: String,
    /// Fingerprint of the engine configuration that produced every `.cwasm`; a runtime whose
    /// engine fingerprint differs recompiles from the verified `.wasm` files instead.
    pub engine: String,
    /// Wasmtime version that produced the `.cwasm` files, for people reading the manifest.
    pub wasmtime: String,
    /// The modules, each with its own pool settings.
    pub modules: Vec<ModuleRecord>,
    /// The tools the modules provide.
    pub entries: Vec<Entry>,
}

/// One module of a bundle: its files and how its instances are pooled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleRecord {
    /// Name entries use to refer to the module, e.g. `megabin`.
    pub name: String,
    /// The portable WebAssembly module (pre-initialized, when [`ModuleRecord::preinit`] says so).
    pub wasm: FileRecord,
    /// Its ahead-of-time compiled form (native code).
    pub cwasm: FileRecord,
    /// How the module's instances are pooled.
    pub pool: ModulePool,
    /// How the module was pre-initialized at pack time, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preinit: Option<Preinit>,
    /// Files of the bundle its instances see, read-only, at one guest directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataMount>,
}

/// Files of the bundle mounted read-only into every instance of a module (a language's
/// standard library, say). They are verified with the rest of the bundle, and the runtime
/// mounts private copies of the verified bytes, so nothing can change them under a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataMount {
    /// Absolute guest directory the files appear in, under their own names.
    pub guest: String,
    /// The files.
    pub files: Vec<FileRecord>,
}

/// Pool settings of one module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModulePool {
    /// Largest linear memory one instance may have, in bytes; every entry's memory limit
    /// lies within it.
    pub memory_bytes: u64,
    /// Instances made once at start-up, so the first calls find their slots and memory
    /// images mapped.
    pub warm: u32,
}

/// A module pre-initialized at pack time: its initialization function ran once and the
/// state it left was written into the module as data, so every instance starts from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preinit {
    /// The export that was run, e.g. `wizer.initialize` (removed from the result).
    pub function: String,
    /// Digests of the module before it was pre-initialized.
    pub source: Digests,
}

/// A file in the bundle directory with its size and digests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    /// File name relative to the bundle directory (no directories, no `..`).
    pub file: String,
    /// Size in bytes.
    pub size: u64,
    /// Content digests.
    pub digests: Digests,
}

/// One tool of a bundle. It runs export [`Entry::export`] (`_start` unless named) of module
/// [`Entry::module`] with argv\[0\] = [`Entry::entry`]: a busybox-style module dispatches on
/// that argv\[0\], a plain WASI command is given its own name there, and a reactor's exported
/// function reads its arguments the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Tool name callers use, e.g. `wc`.
    pub name: String,
    /// The argv\[0\] the module is given (a busybox-style module dispatches on it).
    pub entry: String,
    /// The module that runs this entry. Empty only in an entries file, whose entries
    /// belong to its module, and for an entry served natively.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub module: String,
    /// The exported function to call, for an entry of a reactor module (`_initialize` runs
    /// first when the module has it); `None` runs `_start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<String>,
    /// What the tool does, written for a person or an LLM choosing a tool.
    pub description: String,
    /// JSON Schema of the tool's arguments, with `x-argv` rendering hints.
    pub arguments: serde_json::Value,
    /// What the tool may touch; a request can only narrow this.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// Default limits of one invocation.
    pub limits: EntryLimits,
    /// The native binaries this entry stands for.
    #[serde(default, skip_serializing_if = "Originals::is_empty")]
    pub originals: Originals,
    /// A native binary (absolute path) that serves this entry where no module does: an
    /// entry with an empty `entry` point is run by it, as a native tool (the runtime's
    /// allowlist still decides), with this entry's name, description, argument schema and
    /// time limit. So a tool not yet ported to wasm is offered to callers like the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_fallback: Option<PathBuf>,
}

impl Entry {
    /// The native binary that runs this entry instead of a module, if any.
    pub fn served_natively(&self) -> Option<&Path> {
        self.native_fallback
            .as_deref()
            .filter(|_| self.entry.is_empty())
    }

    /// The export this entry calls.
    pub fn export_name(&self) -> &str {
        self.export.as_deref().unwrap_or(COMMAND_EXPORT)
    }
}

/// Default resource limits of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryLimits {
    /// Linear-memory cap in bytes.
    pub memory_bytes: u64,
    /// Wall-clock limit in milliseconds.
    pub timeout_ms: u64,
}

/// The native binaries an entry stands for, its originals: a binary whose content has one
/// of their recorded digests (SHA-256 and BLAKE3 both) runs as this entry
/// ([`Manifest::entry_for_original`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Originals {
    /// Usual absolute paths, e.g. `/usr/bin/wc`.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Digests of known builds of that binary.
    #[serde(default)]
    pub digests: Vec<Digests>,
}

impl Originals {
    fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.digests.is_empty()
    }
}

/// The input of `megavisor pack` for one module: its settings and its entries, before
/// digests of the originals present on the packing machine are added.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesFile {
    /// How the module is named, pooled and pre-initialized.
    #[serde(default)]
    pub module: ModuleSettings,
    /// Entries in the order they are listed to callers.
    pub entries: Vec<Entry>,
}

/// The module section of an entries file; every field has a default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleSettings {
    /// The module's name; default: the `.wasm` file's stem.
    pub name: Option<String>,
    /// [`ModulePool::memory_bytes`]; default: the largest memory limit of its entries.
    pub memory_bytes: Option<u64>,
    /// [`ModulePool::warm`]; default 1.
    pub warm: Option<u32>,
    /// An export to run once at pack time and snapshot into the module
    /// ([`Preinit::function`]), e.g. `wizer.initialize`.
    pub preinit: Option<String>,
    /// Files beside the `.wasm` to mount into its instances ([`DataMount`]); they are
    /// mounted for the pre-initialization too.
    pub data: Option<DataSettings>,
}

/// The data section of an entries file's module.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSettings {
    /// [`DataMount::guest`].
    pub guest: String,
    /// Names of files in the `.wasm` file's directory.
    pub files: Vec<String>,
}

impl EntriesFile {
    /// Reads and validates an entries file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
        let file: EntriesFile =
            serde_json::from_slice(&bytes).map_err(|e| invalid(path, e.to_string()))?;
        file.validate().map_err(|reason| invalid(path, reason))?;
        Ok(file)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(name) = &self.module.name {
            validate_name("module", name)?;
        }
        if self.module.memory_bytes == Some(0) {
            return Err("module memory_bytes must be greater than zero".to_owned());
        }
        if let Some(data) = &self.module.data {
            validate_guest_dir(&data.guest)?;
            for file in &data.files {
                validate_file_name(file)?;
            }
        }
        if let Some(entry) = self.entries.iter().find(|e| !e.module.is_empty()) {
            return Err(format!(
                "entry {:?} names module {:?}: an entries file's entries belong to its module",
                entry.name, entry.module
            ));
        }
        validate_entries(&self.entries)
    }
}

impl Manifest {
    /// Parses and validates manifest bytes of either version; `path` is only used in error
    /// messages.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        #[derive(Deserialize)]
        struct Format {
            format: String,
        }
        let format: Format =
            serde_json::from_slice(bytes).map_err(|e| invalid(path, e.to_string()))?;
        let manifest = match format.format.as_str() {
            FORMAT_V2 => serde_json::from_slice(bytes).map_err(|e| invalid(path, e.to_string()))?,
            FORMAT_V1 => v1::parse(bytes).map_err(|reason| invalid(path, reason))?,
            other => {
                return Err(invalid(
                    path,
                    format!(
                        "format is {other:?}, this runtime reads {FORMAT_V2:?} and {FORMAT_V1:?}"
                    ),
                ));
            }
        };
        manifest
            .validate()
            .map_err(|reason| invalid(path, reason))?;
        Ok(manifest)
    }

    /// The canonical bytes written to `manifest.json` (the bytes that get signed).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("manifest serializes");
        bytes.push(b'\n');
        bytes
    }

    /// Looks an entry up by name.
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Looks a module up by name.
    pub fn module(&self, name: &str) -> Option<&ModuleRecord> {
        self.modules.iter().find(|m| m.name == name)
    }

    /// The entry standing for a native binary with these digests, if any.
    pub fn entry_for_original(&self, digests: &Digests) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.originals.digests.iter().any(|d| d == digests))
    }

    /// Comma-separated entry names, for error messages.
    pub fn entry_names(&self) -> String {
        let names: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
        names.join(", ")
    }

    fn validate(&self) -> Result<(), String> {
        if self.modules.is_empty() {
            return Err("a bundle needs at least one module".to_owned());
        }
        let mut names = HashSet::new();
        let mut files = HashSet::new();
        for module in &self.modules {
            validate_name("module", &module.name)?;
            if !names.insert(module.name.as_str()) {
                return Err(format!("module {:?} is listed twice", module.name));
            }
            if module.pool.memory_bytes == 0 {
                return Err(format!(
                    "module {:?}: pool memory_bytes must be greater than zero",
                    module.name
                ));
            }
            let data = module.data.iter().flat_map(|d| &d.files);
            if let Some(mount) = &module.data {
                validate_guest_dir(&mount.guest)?;
            }
            for record in [&module.wasm, &module.cwasm].into_iter().chain(data) {
                validate_file_name(&record.file)?;
                if !files.insert(record.file.as_str()) {
                    return Err(format!("file {} is named twice", record.file));
                }
                if !record.digests.is_well_formed() {
                    return Err(format!(
                        "digests of {} are not 64 lower-case hex characters",
                        record.file
                    ));
                }
            }
        }
        validate_entries(&self.entries)?;
        for entry in self
            .entries
            .iter()
            .filter(|e| e.served_natively().is_none())
        {
            let module = self.module(&entry.module).ok_or_else(|| {
                format!(
                    "entry {:?} names module {:?}, which the bundle does not have",
                    entry.name, entry.module
                )
            })?;
            if entry.limits.memory_bytes > module.pool.memory_bytes {
                return Err(format!(
                    "entry {:?}: memory limit {} exceeds module {:?}'s {} bytes",
                    entry.name, entry.limits.memory_bytes, module.name, module.pool.memory_bytes
                ));
            }
        }
        Ok(())
    }
}

/// A data mount's guest directory: absolute, without `.`, `..` or empty components.
fn validate_guest_dir(path: &str) -> Result<(), String> {
    let plain = path.strip_prefix('/').is_some_and(|rest| {
        rest.split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
    });
    if plain {
        Ok(())
    } else {
        Err(format!(
            "data guest directory {path:?} must be absolute, without '.', '..' or empty components"
        ))
    }
}

/// Module and entry names: non-empty, A-Z a-z 0-9 . _ - only.
fn validate_name(what: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{what} name {name:?} must be non-empty and use only A-Z a-z 0-9 . _ -"
        ))
    }
}

fn validate_file_name(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0');
    if plain {
        Ok(())
    } else {
        Err(format!(
            "file name {name:?} must be a plain name inside the bundle directory"
        ))
    }
}

fn validate_entries(entries: &[Entry]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for entry in entries {
        validate_name("entry", &entry.name)?;
        if !seen.insert(entry.name.as_str()) {
            return Err(format!("entry {:?} is listed twice", entry.name));
        }
        if let Some(binary) = &entry.native_fallback
            && !binary.is_absolute()
        {
            return Err(format!(
                "entry {:?}: native_fallback {} is not an absolute path",
                entry.name,
                binary.display()
            ));
        }
        if entry.entry.is_empty() && entry.native_fallback.is_none() {
            return Err(format!(
                "entry {:?} has an empty entry point and no native_fallback",
                entry.name
            ));
        }
        if entry.export.as_deref() == Some("") {
            return Err(format!("entry {:?}: export must not be empty", entry.name));
        }
        if entry.arguments.get("type").and_then(|t| t.as_str()) != Some("object") {
            return Err(format!(
                "entry {:?}: arguments must be a JSON Schema with \"type\": \"object\"",
                entry.name
            ));
        }
        if entry.limits.memory_bytes == 0 || entry.limits.timeout_ms == 0 {
            return Err(format!(
                "entry {:?}: limits must be greater than zero",
                entry.name
            ));
        }
        if let Some(bad) = entry.originals.digests.iter().find(|d| !d.is_well_formed()) {
            return Err(format!(
                "entry {:?}: original digest {bad:?} is not 64 lower-case hex characters",
                entry.name
            ));
        }
        if let Some(bad) = entry.originals.paths.iter().find(|p| !p.starts_with('/')) {
            return Err(format!(
                "entry {:?}: original path {bad:?} is not absolute",
                entry.name
            ));
        }
    }
    Ok(())
}

fn invalid(path: &Path, reason: String) -> Error {
    Error::InvalidManifest {
        file: path.to_owned(),
        reason,
    }
}
