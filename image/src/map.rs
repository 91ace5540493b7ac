//! The image map: for every executable path of one image, its content's digests and what
//! runs in its place. It is signed like a bundle's manifest (the same Ed25519 keys and
//! signature file format) and names the image and the bundle it was made for, so a map
//! cannot be carried over to another image or a bundle it was not checked against.
//!
//! The recompiled image carries it as its top layer, at [`MAP_DIR`]`/`[`MAP_FILE`] of the
//! root, beside its signature [`SIGNATURE_FILE`].

use std::collections::BTreeMap;
use std::path::Path;

use megavisor_core::signing::{Authenticity, verify_manifest};
use megavisor_core::{Digests, Error, ManifestSigner, Result, TrustPolicy};
use serde::{Deserialize, Serialize};

/// The directory of the root holding the map.
pub const MAP_DIR: &str = ".megavisor";
/// The map's file name.
pub const MAP_FILE: &str = "image-map.json";
/// Its signature's file name.
pub const SIGNATURE_FILE: &str = "image-map.json.sig";
/// The format version this build writes and reads.
pub const MAP_VERSION: u32 = 1;
/// The largest map read.
const MAX_MAP_BYTES: u64 = 64 << 20;

/// A signed map of one image's executables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageMap {
    /// [`MAP_VERSION`].
    pub version: u32,
    /// The image it maps.
    pub image: ImageRecord,
    /// The bundle its entries are of.
    pub bundle: BundleRecord,
    /// Every executable path of the image (regular files with an execute bit, and symlinks
    /// that resolve to one inside the image), absolute within the image.
    pub files: BTreeMap<String, FileMapping>,
}

/// Which image a map is of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRecord {
    /// `sha256:<hex>` of the original image's manifest (of its configuration, for a
    /// `docker save` tarball).
    pub digest: String,
    /// The original image's name, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Which bundle a map's entries are of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleRecord {
    /// The bundle's name.
    pub name: String,
    /// `sha256:<hex>` of its `manifest.json`.
    pub digest: String,
}

/// One executable path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMapping {
    /// For a symlink: the regular file it resolves to inside the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Size of the content, bytes.
    pub size: u64,
    /// Digests of the content.
    #[serde(flatten)]
    pub digests: Digests,
    /// What runs when the path is executed.
    pub run: Disposition,
}

/// What runs in place of an executable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Disposition {
    /// This entry of the bundle, in a fresh instance.
    Entry(String),
    /// The binary itself, in the native sandbox, under the exec gate.
    Native,
    /// Nothing: executing it fails with EACCES.
    Denied,
}

impl ImageMap {
    /// The map's bytes as signed and stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("an image map serializes");
        bytes.push(b'\n');
        bytes
    }

    /// The map's bytes and the bytes of its signature by `signer`.
    pub fn signed(&self, signer: &ManifestSigner) -> (Vec<u8>, Vec<u8>) {
        let bytes = self.to_bytes();
        let signature = signer.sign(&bytes);
        (bytes, signature)
    }

    /// Reads the map in `root` (an image's root directory) and checks its signature under
    /// `policy`.
    pub fn load_verified(root: &Path, policy: &TrustPolicy) -> Result<(Self, Authenticity)> {
        let dir = root.join(MAP_DIR);
        let path = dir.join(MAP_FILE);
        let bytes = read_limited(&path)?.ok_or_else(|| {
            Error::NotAllowed(format!(
                "{} has no image map ({MAP_DIR}/{MAP_FILE}): the image was not recompiled for \
                 megavisor (`megavisor recompile`)",
                root.display()
            ))
        })?;
        let signature = read_limited(&dir.join(SIGNATURE_FILE))?;
        let authenticity = verify_manifest(&bytes, signature.as_deref(), &path, policy)?;
        let map: ImageMap = serde_json::from_slice(&bytes).map_err(|e| Error::InvalidManifest {
            file: path.clone(),
            reason: e.to_string(),
        })?;
        if map.version != MAP_VERSION {
            return Err(Error::InvalidManifest {
                file: path,
                reason: format!(
                    "image map version {} is not the version {MAP_VERSION} this build reads",
                    map.version
                ),
            });
        }
        Ok((map, authenticity))
    }

    /// Checks that the map was made for the bundle whose manifest has `digest`.
    pub fn check_bundle(&self, name: &str, digest: &str) -> Result<()> {
        if self.bundle.digest == digest {
            return Ok(());
        }
        Err(Error::NotAllowed(format!(
            "the image map was made for bundle {:?} ({}), not for the bundle in use, {name:?} \
             ({digest}): recompile the image against this bundle",
            self.bundle.name, self.bundle.digest
        )))
    }

    /// How many paths run an entry, natively, or not at all.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for mapping in self.files.values() {
            match mapping.run {
                Disposition::Entry(_) => counts.mapped += 1,
                Disposition::Native => counts.native += 1,
                Disposition::Denied => counts.denied += 1,
            }
        }
        counts
    }
}

/// Paths by disposition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Paths that run a bundle entry.
    pub mapped: usize,
    /// Paths that run natively.
    pub native: usize,
    /// Paths that may not run.
    pub denied: usize,
}

/// A file's bytes, `None` when it does not exist.
fn read_limited(path: &Path) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, "open", e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_MAP_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, "read", e))?;
    if bytes.len() as u64 > MAX_MAP_BYTES {
        return Err(Error::InvalidManifest {
            file: path.to_owned(),
            reason: format!("larger than the limit of {MAX_MAP_BYTES} bytes"),
        });
    }
    Ok(Some(bytes))
}
