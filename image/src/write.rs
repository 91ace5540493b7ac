//! Writing the recompiled image: the original layers, byte for byte, plus one layer holding
//! the signed image map, a configuration that records that layer, and a manifest whose
//! annotations name megavisor's runtime. It is written twice: as an OCI image layout
//! directory and as a tarball holding both that layout and `docker save`'s `manifest.json`,
//! which `ctr images import` and `docker load` both read.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use megavisor_core::{Error, Result};
use oci_spec::image::{
    Descriptor, DescriptorBuilder, Digest, ImageIndexBuilder, ImageManifestBuilder, MediaType,
};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::layout::{CONTAINERD_NAME_ANNOTATION, Hashing, ImageDescription, REF_NAME_ANNOTATION};
use crate::map::{MAP_DIR, MAP_FILE, SIGNATURE_FILE};
use crate::source::ImageSource;

/// The runtime a recompiled image is meant for: containerd's name of megavisor's shim.
pub const RUNTIME: &str = "io.containerd.megavisor.v1";
/// The manifest annotation naming [`RUNTIME`].
pub const RUNTIME_ANNOTATION: &str = "io.megavisor.runtime";
/// The manifest annotation (and configuration label) holding the map's `sha256:` digest.
pub const MAP_ANNOTATION: &str = "io.megavisor.image-map";
/// The manifest annotation holding the bundle's `sha256:` digest.
pub const BUNDLE_ANNOTATION: &str = "io.megavisor.bundle";

/// The image written.
#[derive(Debug, Clone)]
pub struct WrittenImage {
    /// The OCI image layout directory.
    pub layout: PathBuf,
    /// The tarball.
    pub tarball: PathBuf,
    /// Its name, a full reference (`docker.io/library/NAME:TAG`).
    pub name: String,
    /// `sha256:<hex>` of its manifest.
    pub digest: String,
}

/// What goes into the recompiled image besides the original's layers.
pub struct Recompiled<'a> {
    /// The signed map's bytes.
    pub map: &'a [u8],
    /// Its signature's bytes.
    pub signature: &'a [u8],
    /// `sha256:<hex>` of the bundle's manifest.
    pub bundle_digest: &'a str,
    /// The image's name.
    pub name: &'a str,
}

/// Writes `image` (read from `source`) with the map layer added, under `out`
/// (`out/oci/` and `out/image.tar`).
pub fn write_image(
    out: &Path,
    source: &ImageSource,
    image: &ImageDescription,
    extra: &Recompiled,
) -> Result<WrittenImage> {
    let layout = out.join("oci");
    if layout.exists() {
        std::fs::remove_dir_all(&layout).map_err(|e| Error::io(&layout, "replace", e))?;
    }
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| Error::io(&blobs, "create", e))?;

    let mut layers = Vec::new();
    for layer in &image.layers {
        let (reader, _) = source.open_member(&layer.member)?;
        let staging = blobs.join(".incoming");
        let mut file = File::create(&staging).map_err(|e| Error::io(&staging, "create", e))?;
        let mut hashing = BufReader::new(Hashing::new(reader));
        let gzip = hashing
            .fill_buf()
            .map_err(|e| Error::io(source.member_path(&layer.member), "read", e))?
            .starts_with(&[0x1f, 0x8b]);
        std::io::copy(&mut hashing, &mut file)
            .map_err(|e| Error::io(source.member_path(&layer.member), "copy", e))?;
        let (digest, size, _) = hashing
            .into_inner()
            .finish()
            .map_err(|e| Error::io(source.member_path(&layer.member), "read", e))?;
        let blob = blobs.join(hex_of(&digest));
        std::fs::rename(&staging, &blob).map_err(|e| Error::io(&blob, "write", e))?;
        let media_type = match &layer.media_type {
            Some(media_type) => MediaType::from(media_type.as_str()),
            None if gzip => MediaType::ImageLayerGzip,
            None => MediaType::ImageLayer,
        };
        layers.push(descriptor(media_type, &digest, size)?);
    }

    let map_layer = map_layer(extra.map, extra.signature)?;
    let map_layer_digest = sha256(&map_layer);
    write_blob(&blobs, &map_layer)?;
    layers.push(descriptor(
        MediaType::ImageLayer,
        &map_layer_digest,
        map_layer.len() as u64,
    )?);

    let map_digest = sha256(extra.map);
    let config = config_with_map_layer(&image.config, &map_layer_digest, &map_digest)?;
    let config_digest = write_blob(&blobs, &config)?;
    let annotations = HashMap::from([
        (RUNTIME_ANNOTATION.to_owned(), RUNTIME.to_owned()),
        (MAP_ANNOTATION.to_owned(), map_digest),
        (BUNDLE_ANNOTATION.to_owned(), extra.bundle_digest.to_owned()),
    ]);
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            MediaType::ImageConfig,
            &config_digest,
            config.len() as u64,
        )?)
        .layers(layers.clone())
        .annotations(annotations)
        .build()
        .map_err(oci_error)?;
    let manifest_bytes = serde_json::to_vec(&manifest).expect("a manifest serializes");
    let manifest_digest = write_blob(&blobs, &manifest_bytes)?;

    let name = full_reference(extra.name);
    let mut manifest_descriptor = descriptor(
        MediaType::ImageManifest,
        &manifest_digest,
        manifest_bytes.len() as u64,
    )?;
    manifest_descriptor.set_annotations(Some(HashMap::from([
        (CONTAINERD_NAME_ANNOTATION.to_owned(), name.clone()),
        (REF_NAME_ANNOTATION.to_owned(), tag_of(&name).to_owned()),
    ])));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_descriptor])
        .build()
        .map_err(oci_error)?;
    let index_bytes = serde_json::to_vec(&index).expect("an index serializes");
    let oci_layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    write_file(&layout.join("index.json"), &index_bytes)?;
    write_file(&layout.join("oci-layout"), oci_layout)?;

    // docker save's manifest.json, beside the layout, for loaders that read only that.
    let docker_manifest = json!([{
        "Config": format!("blobs/sha256/{}", hex_of(&config_digest)),
        "RepoTags": [short_reference(&name)],
        "Layers": layers
            .iter()
            .map(|layer| format!("blobs/sha256/{}", layer.digest().digest()))
            .collect::<Vec<_>>(),
    }]);
    let docker_manifest = serde_json::to_vec(&docker_manifest).expect("JSON serializes");
    let tarball = out.join("image.tar");
    write_tarball(&tarball, &layout, &docker_manifest)?;
    Ok(WrittenImage {
        layout,
        tarball,
        name,
        digest: manifest_digest,
    })
}

/// The map layer: `.megavisor/` with the map and its signature, read-only, owned by root,
/// with no timestamps, so the same map always makes the same layer.
fn map_layer(map: &[u8], signature: &[u8]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(0);
    dir.set_cksum();
    let fail = |e: std::io::Error| Error::io("<map layer>", "build", e);
    builder
        .append_data(&mut dir, format!("{MAP_DIR}/"), std::io::empty())
        .map_err(fail)?;
    for (name, bytes) in [(MAP_FILE, map), (SIGNATURE_FILE, signature)] {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o444);
        header.set_size(bytes.len() as u64);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, format!("{MAP_DIR}/{name}"), bytes)
            .map_err(fail)?;
    }
    builder.into_inner().map_err(fail)
}

/// The original configuration with the map layer recorded: its `diff_id`, a history line
/// and a label with the map's digest. Every other field is kept as it was.
fn config_with_map_layer(config: &[u8], diff_id: &str, map_digest: &str) -> Result<Vec<u8>> {
    let mut config: Value = serde_json::from_slice(config)
        .map_err(|e| Error::BadRequest(format!("the image configuration is not JSON: {e}")))?;
    let object = config
        .as_object_mut()
        .ok_or_else(|| Error::BadRequest("the image configuration is not an object".into()))?;
    let rootfs = object
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    match rootfs.get_mut("diff_ids").and_then(Value::as_array_mut) {
        Some(diff_ids) => diff_ids.push(json!(diff_id)),
        None => {
            return Err(Error::BadRequest(
                "the image configuration has no rootfs.diff_ids".into(),
            ));
        }
    }
    if let Some(history) = object.get_mut("history").and_then(Value::as_array_mut) {
        history.push(json!({
            "created_by": "megavisor recompile",
            "comment": format!("the signed image map {map_digest}"),
        }));
    }
    let settings = object.entry("config").or_insert_with(|| json!({}));
    if let Some(settings) = settings.as_object_mut() {
        let labels = settings.entry("Labels").or_insert_with(|| json!({}));
        if labels.is_null() {
            *labels = json!({});
        }
        if let Some(labels) = labels.as_object_mut() {
            labels.insert(MAP_ANNOTATION.to_owned(), json!(map_digest));
        }
    }
    Ok(serde_json::to_vec(&config).expect("JSON serializes"))
}

fn write_tarball(path: &Path, layout: &Path, docker_manifest: &[u8]) -> Result<()> {
    let file = File::create(path).map_err(|e| Error::io(path, "create", e))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    builder.mode(tar::HeaderMode::Deterministic);
    let fail = |e: std::io::Error| Error::io(path, "write", e);
    for name in ["oci-layout", "index.json"] {
        builder
            .append_path_with_name(layout.join(name), name)
            .map_err(fail)?;
    }
    let blobs = layout.join("blobs/sha256");
    let mut names: Vec<_> = std::fs::read_dir(&blobs)
        .map_err(|e| Error::io(&blobs, "list", e))?
        .filter_map(|entry| entry.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    for name in names {
        let name = name.to_string_lossy().into_owned();
        builder
            .append_path_with_name(blobs.join(&name), format!("blobs/sha256/{name}"))
            .map_err(fail)?;
    }
    let mut header = tar::Header::new_ustar();
    header.set_mode(0o644);
    header.set_size(docker_manifest.len() as u64);
    header.set_mtime(0);
    header.set_cksum();
    builder
        .append_data(&mut header, "manifest.json", docker_manifest)
        .map_err(fail)?;
    builder
        .into_inner()
        .and_then(|mut writer| writer.flush())
        .map_err(fail)
}

fn descriptor(media_type: MediaType, digest: &str, size: u64) -> Result<Descriptor> {
    let digest = Digest::from_str(digest).map_err(oci_error)?;
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest)
        .size(size)
        .build()
        .map_err(oci_error)
}

fn write_blob(blobs: &Path, bytes: &[u8]) -> Result<String> {
    let digest = sha256(bytes);
    write_file(&blobs.join(hex_of(&digest)), bytes)?;
    Ok(digest)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, "write", e))
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn oci_error(e: oci_spec::OciSpecError) -> Error {
    Error::BadRequest(format!("cannot build the image's OCI documents: {e}"))
}

/// `NAME` as a full reference, the way containerd names images: `busybox` is
/// `docker.io/library/busybox:latest`, `me/tool:1` is `docker.io/me/tool:1`.
pub fn full_reference(name: &str) -> String {
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    let has_registry = first.contains('.') || first.contains(':') || first == "localhost";
    let mut full = match (first.is_empty(), has_registry) {
        (true, _) => format!("docker.io/library/{rest}"),
        (false, true) => name.to_owned(),
        (false, false) => format!("docker.io/{name}"),
    };
    let last = full.rsplit('/').next().unwrap_or_default();
    if !last.contains(':') && !last.contains('@') {
        full.push_str(":latest");
    }
    full
}

/// The tag of a full reference (what follows its last `:` in the last component).
fn tag_of(reference: &str) -> &str {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    last.rsplit_once(':').map_or("latest", |(_, tag)| tag)
}

/// A full reference as `docker save` writes it: without `docker.io/library/`.
fn short_reference(reference: &str) -> &str {
    reference
        .strip_prefix("docker.io/library/")
        .or_else(|| reference.strip_prefix("docker.io/"))
        .unwrap_or(reference)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_named_as_containerd_names_them() {
        assert_eq!(
            full_reference("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(full_reference("tools:1.0"), "docker.io/library/tools:1.0");
        assert_eq!(full_reference("me/tool:1"), "docker.io/me/tool:1");
        assert_eq!(
            full_reference("registry.example:5000/team/tool"),
            "registry.example:5000/team/tool:latest"
        );
        assert_eq!(tag_of("docker.io/library/tools:1.0"), "1.0");
        assert_eq!(short_reference("docker.io/library/tools:1.0"), "tools:1.0");
        assert_eq!(short_reference("docker.io/me/tool:1"), "me/tool:1");
    }
}
