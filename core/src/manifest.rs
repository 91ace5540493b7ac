//! Manifest v1: the one description of a bundle that every part of megavisor reads.
//!
//! A bundle is a directory holding `manifest.json`, its detached Ed25519 signature
//! `manifest.json.sig`, the megabinary `.wasm` and its precompiled `.cwasm`. The manifest
//! records the size and both digests of each file, and one [`Entry`] per tool: how to
//! dispatch it, how to describe it to an LLM, what it may touch, and which native binaries
//! (by content digest) it stands for.
//!
//! Unknown fields are refused: a security-relevant field that this version does not
//! understand must not be silently ignored.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::capability::Capability;
use crate::digest::Digests;
use crate::error::{Error, Result};

/// The `format` string of this manifest version.
pub const FORMAT_V1: &str = "megavisor-manifest/v1";

/// File name of the manifest inside a bundle directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// File name of the detached signature inside a bundle directory.
pub const SIGNATURE_FILE: &str = "manifest.json.sig";

/// Largest manifest accepted, so a hostile file cannot exhaust memory before it is checked.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// A parsed and validated v1 manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT_V1`].
    pub format: String,
    /// A short name for the bundle, e.g. `default`.
    pub name: String,
    /// The megabinary and its precompiled form.
    pub megabinary: Megabinary,
    /// The tools the megabinary provides.
    pub entries: Vec<Entry>,
}

/// The megabinary files of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Megabinary {
    /// The portable WebAssembly module.
    pub wasm: FileRecord,
    /// Its ahead-of-time compiled form (native code).
    pub cwasm: FileRecord,
    /// Fingerprint of the engine configuration that produced the `.cwasm`; a runtime whose
    /// engine fingerprint differs recompiles from the verified `.wasm` instead of loading it.
    pub engine: String,
    /// Wasmtime version that produced the `.cwasm`, for people reading the manifest.
    pub wasmtime: String,
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

/// One tool of the megabinary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Tool name callers use, e.g. `wc`.
    pub name: String,
    /// The argv\[0\] the megabinary dispatches on.
    pub entry: String,
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
    /// A native binary (absolute path) that serves this entry where the megabinary does not:
    /// an entry with an empty `entry` point is run by it, as a native tool (the runtime's
    /// allowlist still decides), with this entry's name, description, argument schema and
    /// time limit. So a tool not yet ported to wasm is offered to callers like the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_fallback: Option<PathBuf>,
}

impl Entry {
    /// The native binary that runs this entry instead of the megabinary, if any.
    pub fn served_natively(&self) -> Option<&Path> {
        self.native_fallback
            .as_deref()
            .filter(|_| self.entry.is_empty())
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

/// The input of `megavisor pack`: the entries of a megabinary, before digests of the
/// originals present on the packing machine are added.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesFile {
    /// Entries in the order they are listed to callers.
    pub entries: Vec<Entry>,
}

impl EntriesFile {
    /// Reads and validates an entries file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
        let file: EntriesFile =
            serde_json::from_slice(&bytes).map_err(|e| invalid(path, e.to_string()))?;
        validate_entries(&file.entries).map_err(|reason| invalid(path, reason))?;
        Ok(file)
    }
}

impl Manifest {
    /// Parses and validates manifest bytes; `path` is only used in error messages.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| invalid(path, e.to_string()))?;
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
        if self.format != FORMAT_V1 {
            return Err(format!(
                "format is {:?}, this runtime reads {FORMAT_V1:?}",
                self.format
            ));
        }
        for record in [&self.megabinary.wasm, &self.megabinary.cwasm] {
            validate_file_name(&record.file)?;
            if !record.digests.is_well_formed() {
                return Err(format!(
                    "digests of {} are not 64 lower-case hex characters",
                    record.file
                ));
            }
        }
        validate_entries(&self.entries)
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
        let valid_name = !entry.name.is_empty()
            && entry
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid_name {
            return Err(format!(
                "entry name {:?} must be non-empty and use only A-Z a-z 0-9 . _ -",
                entry.name
            ));
        }
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
