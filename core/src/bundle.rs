//! Opening a bundle directory: signature first, then every file's size and digests, of
//! every module, all before a single byte of any is compiled or deserialized: a hash
//! mismatch anywhere fails the whole bundle, naming the file, before anything of it is used.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::digest::Digests;
use crate::error::{Error, Result};
use crate::manifest::{FileRecord, MANIFEST_FILE, MAX_MANIFEST_BYTES, Manifest, SIGNATURE_FILE};
use crate::signing::{Authenticity, TrustPolicy, verify_manifest};

/// A bundle whose manifest is authentic (or explicitly accepted unsigned) and whose
/// modules' bytes match the manifest. The bytes held here are the bytes that were hashed,
/// so nothing can swap a file between verification and use.
#[derive(Debug)]
pub struct VerifiedBundle {
    /// The bundle directory.
    pub dir: PathBuf,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// `sha256:<hex>` of the manifest file's bytes, what an image map names the bundle by.
    pub manifest_digest: String,
    /// How the manifest's authenticity was established.
    pub authenticity: Authenticity,
    /// The verified files of each module, in the manifest's order.
    pub modules: Vec<ModuleFiles>,
}

/// The verified bytes of one module.
#[derive(Debug)]
pub struct ModuleFiles {
    /// The `.wasm` bytes.
    pub wasm: Vec<u8>,
    /// The `.cwasm` bytes.
    pub cwasm: Vec<u8>,
    /// The data files' bytes, in the manifest's order.
    pub data: Vec<Vec<u8>>,
}

impl VerifiedBundle {
    /// Verifies the bundle in `dir` under `policy`.
    pub fn open(dir: &Path, policy: &TrustPolicy) -> Result<Self> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest_bytes = read_limited(&manifest_path, MAX_MANIFEST_BYTES)?;
        let signature_path = dir.join(SIGNATURE_FILE);
        let signature = match std::fs::read(&signature_path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(signature_path, "read", e)),
        };
        let authenticity = verify_manifest(
            &manifest_bytes,
            signature.as_deref(),
            &manifest_path,
            policy,
        )?;
        if let Authenticity::Unverified { reason } = &authenticity {
            tracing::warn!(bundle = %dir.display(), %reason, "accepting manifest without a valid signature (allow-unsigned)");
        }
        let manifest = Manifest::parse(&manifest_bytes, &manifest_path)?;
        let manifest_digest = format!("sha256:{}", Digests::of_bytes(&manifest_bytes).sha256);
        let modules = manifest
            .modules
            .iter()
            .map(|module| {
                Ok(ModuleFiles {
                    wasm: read_verified(dir, &module.wasm)?,
                    cwasm: read_verified(dir, &module.cwasm)?,
                    data: module
                        .data
                        .iter()
                        .flat_map(|d| &d.files)
                        .map(|record| read_verified(dir, record))
                        .collect::<Result<_>>()?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(VerifiedBundle {
            dir: dir.to_owned(),
            manifest,
            manifest_digest,
            authenticity,
            modules,
        })
    }
}

/// Reads a file named by the manifest and checks its size and both digests.
fn read_verified(dir: &Path, record: &FileRecord) -> Result<Vec<u8>> {
    let path = dir.join(&record.file);
    let bytes = read_limited(&path, record.size)?;
    if bytes.len() as u64 != record.size {
        return Err(Error::SizeMismatch {
            file: path,
            expected: record.size,
            actual: bytes.len() as u64,
        });
    }
    record.digests.verify(&Digests::of_bytes(&bytes), &path)?;
    Ok(bytes)
}

/// Reads at most `limit` bytes; a longer file is a size mismatch, found without reading it all.
fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let actual = file
        .metadata()
        .map_err(|e| Error::io(path, "stat", e))?
        .len();
    if actual > limit {
        return Err(Error::SizeMismatch {
            file: path.to_owned(),
            expected: limit,
            actual,
        });
    }
    let mut bytes = Vec::with_capacity(actual as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, "read", e))?;
    Ok(bytes)
}
