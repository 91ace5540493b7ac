//! What an image is made of: its digest and name, its configuration, and its layers in
//! order, read from an OCI image layout (`index.json` -> manifest -> config and layers) or
//! from `docker save`'s `manifest.json`. Every blob named by digest is checked against it
//! when read, and every layer against its `diff_id` in the configuration.

use std::io::Read;

use megavisor_core::{Error, Result};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;
use sha2::Digest as _;

use crate::source::ImageSource;

/// The annotation containerd names an imported image by.
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI annotation naming an image in a layout.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// An image, described: enough to apply its layers and to write it again with one more.
#[derive(Debug, Clone)]
pub struct ImageDescription {
    /// `sha256:<hex>` of the image manifest (OCI), or of the configuration (`docker save`,
    /// where it is the image id).
    pub digest: String,
    /// The image's name, when the layout or tarball gives one (`repo:tag` or a full
    /// reference).
    pub name: Option<String>,
    /// The configuration's bytes, exactly as stored.
    pub config: Vec<u8>,
    /// The layers, lowest first.
    pub layers: Vec<Layer>,
}

/// One layer of an image.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The member holding it.
    pub member: String,
    /// `sha256:<hex>` of the stored blob, when the image names it by digest.
    pub blob_digest: Option<String>,
    /// `sha256:<hex>` of the uncompressed tar stream (the configuration's `diff_id`).
    pub diff_id: String,
    /// Its media type as recorded (a `docker save` layer has none).
    pub media_type: Option<String>,
}

/// `docker save`'s `manifest.json`: one object per image.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerImage {
    config: String,
    #[serde(default)]
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

/// Describes the image in `source` (the one image of a layout, or the one for this
/// machine's platform when there are several).
pub fn describe(source: &ImageSource) -> Result<ImageDescription> {
    if source.has("index.json") {
        describe_oci(source)
    } else if source.has("manifest.json") {
        describe_docker(source)
    } else {
        Err(Error::BadRequest(format!(
            "{} is neither an OCI image layout nor an image tarball: it has no index.json \
             and no manifest.json",
            source.path().display()
        )))
    }
}

fn describe_oci(source: &ImageSource) -> Result<ImageDescription> {
    let index_bytes = source.read_member("index.json")?;
    let index: ImageIndex = parse_json(source, "index.json", &index_bytes)?;
    let mut descriptor = choose_manifest(source, "index.json", index.manifests())?.clone();
    let name = descriptor.annotations().as_ref().and_then(|annotations| {
        annotations
            .get(CONTAINERD_NAME_ANNOTATION)
            .or_else(|| annotations.get(REF_NAME_ANNOTATION))
            .cloned()
    });
    // A nested index (a multi-platform image): one more level down.
    if *descriptor.media_type() == MediaType::ImageIndex {
        let member = blob_member(source, &descriptor)?;
        let bytes = read_blob(source, &descriptor)?;
        let nested: ImageIndex = parse_json(source, &member, &bytes)?;
        descriptor = choose_manifest(source, &member, nested.manifests())?.clone();
    }
    let manifest_bytes = read_blob(source, &descriptor)?;
    let member = blob_member(source, &descriptor)?;
    let manifest: ImageManifest = parse_json(source, &member, &manifest_bytes)?;
    let config = read_blob(source, manifest.config())?;
    let diff_ids = diff_ids(source, &blob_member(source, manifest.config())?, &config)?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(Error::BadRequest(format!(
            "image {}: its manifest lists {} layers but its configuration {}",
            source.path().display(),
            manifest.layers().len(),
            diff_ids.len()
        )));
    }
    let layers = manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(layer, diff_id)| {
            Ok(Layer {
                member: blob_member(source, layer)?,
                blob_digest: Some(layer.digest().to_string()),
                diff_id,
                media_type: Some(layer.media_type().to_string()),
            })
        })
        .collect::<Result<_>>()?;
    Ok(ImageDescription {
        digest: descriptor.digest().to_string(),
        name,
        config,
        layers,
    })
}

fn describe_docker(source: &ImageSource) -> Result<ImageDescription> {
    let bytes = source.read_member("manifest.json")?;
    let images: Vec<DockerImage> = parse_json(source, "manifest.json", &bytes)?;
    let image = match images.as_slice() {
        [image] => image,
        [] => {
            return Err(Error::BadRequest(format!(
                "image tarball {}: manifest.json lists no image",
                source.path().display()
            )));
        }
        _ => {
            return Err(Error::BadRequest(format!(
                "image tarball {}: manifest.json lists {} images; save one image per tarball",
                source.path().display(),
                images.len()
            )));
        }
    };
    let config = source.read_member(&image.config)?;
    let diff_ids = diff_ids(source, &image.config, &config)?;
    if diff_ids.len() != image.layers.len() {
        return Err(Error::BadRequest(format!(
            "image tarball {}: manifest.json lists {} layers but the configuration {}",
            source.path().display(),
            image.layers.len(),
            diff_ids.len()
        )));
    }
    let layers = image
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(member, diff_id)| Layer {
            member: member.clone(),
            blob_digest: member
                .strip_prefix("blobs/sha256/")
                .map(|hex| format!("sha256:{hex}")),
            diff_id,
            media_type: None,
        })
        .collect();
    Ok(ImageDescription {
        digest: format!("sha256:{}", hex::encode(sha2::Sha256::digest(&config))),
        name: image.repo_tags.first().cloned(),
        config,
        layers,
    })
}

/// The manifest to use among an index's: the only one, or the one for this platform.
fn choose_manifest<'a>(
    source: &ImageSource,
    member: &str,
    manifests: &'a [Descriptor],
) -> Result<&'a Descriptor> {
    if let [only] = manifests {
        return Ok(only);
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    manifests
        .iter()
        .find(|d| {
            d.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == "linux" && p.architecture().to_string() == arch
            })
        })
        .ok_or_else(|| {
            Error::BadRequest(format!(
                "image {}: {member} lists {} manifests and none for linux/{arch}",
                source.path().display(),
                manifests.len()
            ))
        })
}

/// The member holding the blob `descriptor` names.
fn blob_member(source: &ImageSource, descriptor: &Descriptor) -> Result<String> {
    let digest = descriptor.digest();
    let hex = digest.digest();
    if digest.algorithm().to_string() != "sha256"
        || hex.len() != 64
        || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(Error::BadRequest(format!(
            "image {} names a blob by {digest}: only sha256 digests are supported",
            source.path().display()
        )));
    }
    Ok(format!("blobs/sha256/{hex}"))
}

/// A small blob, read whole and checked against its digest and size.
fn read_blob(source: &ImageSource, descriptor: &Descriptor) -> Result<Vec<u8>> {
    let member = blob_member(source, descriptor)?;
    let bytes = source.read_member(&member)?;
    let actual = hex::encode(sha2::Sha256::digest(&bytes));
    if actual != descriptor.digest().digest() {
        return Err(Error::HashMismatch {
            file: source.member_path(&member),
            algorithm: "sha256",
            expected: descriptor.digest().digest().to_owned(),
            actual,
        });
    }
    if bytes.len() as u64 != descriptor.size() {
        return Err(Error::SizeMismatch {
            file: source.member_path(&member),
            expected: descriptor.size(),
            actual: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// The configuration's `rootfs.diff_ids`.
fn diff_ids(source: &ImageSource, member: &str, config: &[u8]) -> Result<Vec<String>> {
    let config: ImageConfiguration = parse_json(source, member, config)?;
    Ok(config.rootfs().diff_ids().clone())
}

fn parse_json<T: serde::de::DeserializeOwned>(
    source: &ImageSource,
    member: &str,
    bytes: &[u8],
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::BadRequest(format!(
            "{} is not a valid image document: {e}",
            source.member_path(member).display()
        ))
    })
}

/// A reader that hashes what passes through it (SHA-256), to check a stream against the
/// digest that names it once it has been read to its end.
pub struct Hashing<R> {
    inner: R,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<R: Read> Hashing<R> {
    /// Hashes what `inner` yields.
    pub fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: sha2::Sha256::new(),
            bytes: 0,
        }
    }

    /// Reads what is left, and returns `sha256:<hex>` of everything read, the size and the
    /// inner reader.
    pub fn finish(mut self) -> std::io::Result<(String, u64, R)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        Ok((digest, self.bytes, self.inner))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}
