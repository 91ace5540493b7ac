//! `megavisor run-image IMAGE PATH [ARGS]`: runs what the image map says runs for PATH of
//! a recompiled image, in a fresh instance with the image's root mounted read-only at `/`;
//! a path that is not in the map, or whose content is no longer what the map records, is
//! refused with EACCES (exit 126).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use megavisor_core::capability::Grant;
use megavisor_core::{Access, Error, Mount, Result};
use megavisor_image::map::{MAP_DIR, MAP_FILE};
use megavisor_image::unpack::{TempDir, unpack_to_scratch};
use megavisor_image::{Disposition, MappedRoot, UnpackLimits};

use super::{build_request, open_runtime, trust_policy};
use crate::args::RunImageArgs;
use crate::render;

pub fn run(args: RunImageArgs) -> Result<ExitCode> {
    let (path, tool_args) = args.command.split_first().expect("clap requires PATH");
    let runtime = open_runtime(&args.bundle)?;
    let (root, _scratch) = image_root(&args.image)?;
    let mapped = MappedRoot::open(&root, &trust_policy(&args.bundle.trust)?)?;
    mapped
        .map()
        .check_bundle(&runtime.manifest().name, runtime.manifest_digest())?;
    let resolved = mapped.resolve(path)?;
    let Disposition::Entry(tool) = &resolved.run else {
        return Err(Error::NotAllowed(format!(
            "{path} (sha256 {}) runs natively by the image map; run-image runs only mapped \
             entries (native ones run through the shim, in the native sandbox)",
            resolved.digests.sha256
        )));
    };
    let mut request = build_request(tool, tool_args, &args.invoke)?;
    let entry = runtime
        .manifest()
        .entry(tool)
        .ok_or_else(|| Error::ToolNotFound {
            name: tool.clone(),
            available: runtime.manifest().entry_names(),
        })?;
    // The image's root is shown to the tools that may read `/`; others run as they would
    // anywhere, seeing no files.
    let reads_root = Grant::new(&entry.name, &entry.capabilities, None).is_ok_and(|grant| {
        grant
            .check_mount(&entry.name, "/", Access::ReadOnly)
            .is_ok()
    });
    if reads_root {
        request = request.mount(Mount {
            host: mapped.root().dir().to_owned(),
            guest: "/".to_owned(),
            access: Access::ReadOnly,
        });
    }
    Ok(render::report(runtime.run(&request), args.invoke.json))
}

/// The image's root: IMAGE itself when it is an unpacked root (it holds the map), else
/// IMAGE's layers applied to a scratch directory that lives as long as the result.
fn image_root(image: &Path) -> Result<(PathBuf, Option<TempDir>)> {
    if image.join(MAP_DIR).join(MAP_FILE).is_file() {
        return Ok((image.to_owned(), None));
    }
    let scratch = unpack_to_scratch(image, UnpackLimits::default())?;
    if !scratch.path().join(MAP_DIR).join(MAP_FILE).is_file() {
        return Err(Error::NotAllowed(format!(
            "image {} has no image map ({MAP_DIR}/{MAP_FILE}): it was not recompiled for \
             megavisor (`megavisor recompile`)",
            image.display()
        )));
    }
    Ok((scratch.path().to_owned(), Some(scratch)))
}
