//! `recompile`: an image in, its signed image map and the recompiled image out.
//!
//! Each executable path of the image runs, in this order of precedence:
//! 1. what the operator's map file says for that path;
//! 2. what it says for that content's digest (SHA-256 or BLAKE3);
//! 3. the bundle entry whose originals record that content;
//! 4. natively, when the fleet allowlist lists that content's digest;
//! 5. nothing: it is denied.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use megavisor_core::{Error, Manifest, ManifestSigner, Result};
use serde::Deserialize;

use crate::layout::{ImageDescription, describe};
use crate::map::{BundleRecord, Disposition, FileMapping, ImageMap, ImageRecord, MAP_VERSION};
use crate::root::{Executable, Root};
use crate::source::ImageSource;
use crate::unpack::{UnpackLimits, Unpacker};
use crate::write::{Recompiled, WrittenImage, write_image};

/// The name a recompiled image gets when neither the operator nor the image names it.
pub const DEFAULT_NAME: &str = "megavisor/recompiled:latest";

/// An operator's map file (TOML): what runs for given paths or digests of an image.
///
/// ```toml
/// [paths]
/// "/bin/ls" = { entry = "ls" }       # busybox-style: the path names the tool
/// "/usr/local/bin/helper" = "native"
/// "/bin/rm" = "denied"
///
/// [digests]
/// "<sha256 or blake3 hex>" = { entry = "wc" }
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorMap {
    /// By absolute path within the image.
    #[serde(default)]
    pub paths: BTreeMap<String, Disposition>,
    /// By the content's SHA-256 or BLAKE3 hex digest.
    #[serde(default)]
    pub digests: BTreeMap<String, Disposition>,
}

impl OperatorMap {
    /// Reads a map file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
        let mut map: OperatorMap = toml::from_str(&text)
            .map_err(|e| Error::BadRequest(format!("map file {}: {e}", path.display())))?;
        map.digests = std::mem::take(&mut map.digests)
            .into_iter()
            .map(|(digest, run)| (digest.to_ascii_lowercase(), run))
            .collect();
        if let Some(bad) = map.paths.keys().find(|p| !p.starts_with('/')) {
            return Err(Error::BadRequest(format!(
                "map file {}: path {bad:?} is not absolute within the image",
                path.display()
            )));
        }
        if let Some(bad) = map
            .digests
            .keys()
            .find(|d| d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(Error::BadRequest(format!(
                "map file {}: digest {bad:?} is not 64 hex digits (SHA-256 or BLAKE3)",
                path.display()
            )));
        }
        Ok(map)
    }

    fn entries(&self) -> impl Iterator<Item = &str> {
        self.paths
            .values()
            .chain(self.digests.values())
            .filter_map(|run| match run {
                Disposition::Entry(name) => Some(name.as_str()),
                _ => None,
            })
    }
}

/// One recompilation.
pub struct Job<'a> {
    /// The image: a layout directory or a tarball.
    pub image: &'a Path,
    /// The output directory.
    pub out: &'a Path,
    /// The bundle's manifest, whose entries the map names.
    pub manifest: &'a Manifest,
    /// `sha256:<hex>` of that manifest's file.
    pub bundle_digest: &'a str,
    /// The operator's map file, if any.
    pub operator_map: &'a OperatorMap,
    /// Digests the fleet allowlist allows to run natively.
    pub native_digests: &'a HashSet<String>,
    /// The key that signs the map.
    pub signer: &'a ManifestSigner,
    /// The recompiled image's name; default: the original's, else [`DEFAULT_NAME`].
    pub name: Option<&'a str>,
    /// Limits on what the image may unpack to.
    pub limits: UnpackLimits,
}

/// What a recompilation reports as it goes.
#[derive(Debug)]
pub enum Progress<'a> {
    /// Applying layer `index` (from 1) of `count`.
    Layer {
        /// From 1.
        index: usize,
        /// Layers in all.
        count: usize,
        /// Its member in the image.
        member: &'a str,
    },
    /// Hashing the unpacked root's executables.
    Hashing,
    /// Writing the recompiled image.
    Writing,
}

/// What a recompilation produced.
#[derive(Debug)]
pub struct Outcome {
    /// The signed map.
    pub map: ImageMap,
    /// Where the map and its signature were written (besides inside the image).
    pub map_file: PathBuf,
    /// The recompiled image.
    pub image: WrittenImage,
}

/// Recompiles `job.image` into `job.out`.
pub fn recompile(job: &Job, progress: &mut dyn FnMut(Progress)) -> Result<Outcome> {
    for name in job.operator_map.entries() {
        if job.manifest.entry(name).is_none() {
            return Err(Error::ToolNotFound {
                name: format!("{name} (named by the map file)"),
                available: job.manifest.entry_names(),
            });
        }
    }
    let source = ImageSource::open(job.image)?;
    let image = describe(&source)?;
    std::fs::create_dir_all(job.out).map_err(|e| Error::io(job.out, "create", e))?;
    let scratch = tempfile::Builder::new()
        .prefix(".rootfs-")
        .tempdir_in(job.out)
        .map_err(|e| Error::io(job.out, "create a scratch root in", e))?;
    let mut unpacker = Unpacker::new(scratch.path(), job.limits)?;
    for (index, layer) in image.layers.iter().enumerate() {
        progress(Progress::Layer {
            index: index + 1,
            count: image.layers.len(),
            member: &layer.member,
        });
        unpacker.apply(&source, layer)?;
    }
    progress(Progress::Hashing);
    let executables = Root::open(scratch.path())?.executables()?;
    let map = map_of(job, &image, executables);
    let (map_bytes, signature) = map.signed(job.signer);
    progress(Progress::Writing);
    let name = job
        .name
        .map(str::to_owned)
        .or_else(|| image.name.clone())
        .unwrap_or_else(|| DEFAULT_NAME.to_owned());
    let written = write_image(
        job.out,
        &source,
        &image,
        &Recompiled {
            map: &map_bytes,
            signature: &signature,
            bundle_digest: job.bundle_digest,
            name: &name,
        },
    )?;
    let map_file = job.out.join(crate::map::MAP_FILE);
    let signature_file = job.out.join(crate::map::SIGNATURE_FILE);
    std::fs::write(&map_file, &map_bytes).map_err(|e| Error::io(&map_file, "write", e))?;
    std::fs::write(&signature_file, &signature)
        .map_err(|e| Error::io(&signature_file, "write", e))?;
    Ok(Outcome {
        map,
        map_file,
        image: written,
    })
}

fn map_of(job: &Job, image: &ImageDescription, executables: Vec<Executable>) -> ImageMap {
    let files = executables
        .into_iter()
        .map(|executable| {
            let digests = &executable.digests;
            let by_digest = || {
                job.operator_map
                    .digests
                    .get(&digests.sha256)
                    .or_else(|| job.operator_map.digests.get(&digests.blake3))
                    .cloned()
            };
            let run = job
                .operator_map
                .paths
                .get(&executable.path)
                .cloned()
                .or_else(by_digest)
                .or_else(|| {
                    job.manifest
                        .entry_for_original(digests)
                        .map(|entry| Disposition::Entry(entry.name.clone()))
                })
                .or_else(|| {
                    (job.native_digests.contains(&digests.sha256)
                        || job.native_digests.contains(&digests.blake3))
                    .then_some(Disposition::Native)
                })
                .unwrap_or(Disposition::Denied);
            let mapping = FileMapping {
                target: executable.target,
                size: executable.size,
                digests: executable.digests,
                run,
            };
            (executable.path, mapping)
        })
        .collect();
    ImageMap {
        version: MAP_VERSION,
        image: ImageRecord {
            digest: image.digest.clone(),
            name: image.name.clone(),
        },
        bundle: BundleRecord {
            name: job.manifest.name.clone(),
            digest: job.bundle_digest.to_owned(),
        },
        files,
    }
}
