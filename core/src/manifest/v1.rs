//! Reading a v1 manifest: one megabinary, whose entries all dispatch on argv\[0\]. It is
//! read as a v2 manifest of one module named after the `.wasm` file's stem.

use serde::Deserialize;

use super::{Entry, FORMAT_V2, FileRecord, Manifest, ModulePool, ModuleRecord};

/// The memory cap of a v1 bundle's module: the default engine maximum of a v1 runtime.
const V1_MODULE_MEMORY_BYTES: u64 = 1 << 30;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestV1 {
    /// Checked before this struct is parsed.
    #[serde(rename = "format")]
    _format: serde::de::IgnoredAny,
    name: String,
    megabinary: Megabinary,
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Megabinary {
    wasm: FileRecord,
    cwasm: FileRecord,
    engine: String,
    wasmtime: String,
}

/// Parses v1 manifest bytes into the v2 shape (validated by the caller).
pub(super) fn parse(bytes: &[u8]) -> Result<Manifest, String> {
    let v1: ManifestV1 = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let module = v1
        .megabinary
        .wasm
        .file
        .strip_suffix(".wasm")
        .unwrap_or(&v1.megabinary.wasm.file)
        .to_owned();
    if let Some(entry) = v1
        .entries
        .iter()
        .find(|e| e.export.is_some() || !e.module.is_empty())
    {
        return Err(format!(
            "entry {:?} uses v2 fields (module, export) in a v1 manifest",
            entry.name
        ));
    }
    // A v1 runtime capped an instance only by the engine's maximum, 1 GiB by default.
    let memory_bytes = v1
        .entries
        .iter()
        .map(|e| e.limits.memory_bytes)
        .fold(V1_MODULE_MEMORY_BYTES, u64::max);
    let entries = v1
        .entries
        .into_iter()
        .map(|mut entry| {
            if entry.served_natively().is_none() {
                entry.module = module.clone();
            }
            entry
        })
        .collect();
    Ok(Manifest {
        format: FORMAT_V2.to_owned(),
        name: v1.name,
        engine: v1.megabinary.engine,
        wasmtime: v1.megabinary.wasmtime,
        modules: vec![ModuleRecord {
            name: module,
            wasm: v1.megabinary.wasm,
            cwasm: v1.megabinary.cwasm,
            pool: ModulePool {
                memory_bytes,
                warm: 1,
            },
            preinit: None,
            data: None,
        }],
        entries,
    })
}
