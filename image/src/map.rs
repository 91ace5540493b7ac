//! The image map: for every executable path of one image, its content's digests and what
//! runs in its place. It is signed like a bundle's manifest (the same Ed25519 keys and
//! signature file format). It names the bundle it was made for, and a runner refuses it
//! with any other bundle; it also records the image it was made from, for the operator.
//!
//! The recompiled image carries it as its top layer, at [`MAP_DIR`]`/`[`MAP_FILE`] of the
//! root, beside its signature [`SIGNATURE_FILE`].
//!
//! A map pins the content of every *executable* of the image. The rest of the image
//! (libraries, scripts, data, and what a later image built on it adds) is not in it: a
//! mapped path runs only if its content is the one recorded, but a native binary reads
//! whatever libraries the root holds.

use std::collections::BTreeMap;

use megavisor_core::signing::{Authenticity, verify_manifest};
use megavisor_core::{Digests, Error, ManifestSigner, Result, TrustPolicy};
use serde::{Deserialize, Serialize};

use crate::root::Root;

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

    /// Reads the map in `root` (an image's root) and checks its signature under `policy`.
    /// Both files are read inside the root, as regular files: a map the image turned into
    /// a symlink to the host, or a FIFO, is refused.
    pub fn load_verified(root: &Root, policy: &TrustPolicy) -> Result<(Self, Authenticity)> {
        let inside = format!("/{MAP_DIR}/{MAP_FILE}");
        let path = root.dir().join(MAP_DIR).join(MAP_FILE);
        let bytes = root.read_file(&inside, MAX_MAP_BYTES)?.ok_or_else(|| {
            Error::NotAllowed(format!(
                "{} has no image map ({MAP_DIR}/{MAP_FILE}): the image was not recompiled for \
                 megavisor (`megavisor recompile`)",
                root.dir().display()
            ))
        })?;
        let signature = root.read_file(&format!("/{MAP_DIR}/{SIGNATURE_FILE}"), MAX_MAP_BYTES)?;
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
