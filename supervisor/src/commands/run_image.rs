//! `megavisor run-image IMAGE PATH [ARGS]`: runs what the image map says runs for PATH of
//! a recompiled image: its entry in a fresh instance with the image's root mounted
//! read-only at `/`, or, for a path the map runs natively, the binary itself in the native
//! sandbox on the image's root behind the exec gate (which needs root). A path that is not
//! in the map, or whose content is no longer what the map records, is refused with EACCES
//! (exit 126).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use megavisor_core::capability::Grant;
use megavisor_core::native::{Allowlist, AllowlistConfig};
use megavisor_core::{Access, Error, Mount, Result, Runtime, ToolRef};
use megavisor_image::map::{MAP_DIR, MAP_FILE};
use megavisor_image::unpack::{TempDir, unpack_to_scratch};
use megavisor_image::{Disposition, MappedRoot, Resolved, UnpackLimits};

use super::{build_request, bundle_dir, open_runtime, policy, trust_policy};
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
        return run_native(&args, &mapped, &resolved, tool_args);
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

/// Runs a path the map gives to the native sandbox: the binary itself, in a sandbox whose
/// read-only root is the image's, behind the exec gate, which lets it (and what it starts)
/// execute only the image's files that the map runs natively (their loader included).
fn run_native(
    args: &RunImageArgs,
    mapped: &MappedRoot,
    resolved: &Resolved,
    tool_args: &[String],
) -> Result<ExitCode> {
    let root = mapped.root().dir();
    let mut policy = policy::load(&args.bundle.policy, None)?;
    let mut native: Vec<String> = mapped
        .map()
        .files
        .values()
        .filter(|mapping| mapping.run == Disposition::Native)
        .map(|mapping| mapping.digests.sha256.clone())
        .collect();
    // The fleet's allowlist, when one is given, can take back what the map allows: a
    // digest it no longer lists runs nowhere, whatever maps were signed before.
    let fleet = &policy.native;
    if fleet.allowlist_file.is_some() || !fleet.digests.is_empty() {
        let listed = Allowlist::new(&AllowlistConfig {
            file: fleet.allowlist_file.clone(),
            digests: fleet.digests.clone(),
            ..AllowlistConfig::default()
        })?
        .digests();
        if !listed.contains(&resolved.digests.sha256) && !listed.contains(&resolved.digests.blake3)
        {
            return Err(Error::NotAllowed(format!(
                "{} (sha256 {}) runs natively by the image map, but the fleet's allowlist does \
                 not list it (any more)",
                resolved.path, resolved.digests.sha256
            )));
        }
        native.retain(|digest| listed.contains(digest));
    }
    policy.native.binaries.clear();
    policy.native.allowlist_file = None;
    policy.native.digests = native;
    policy.sandbox.enabled = true;
    policy.sandbox.exec_gate = true;
    policy.sandbox.root = Some(root.to_owned());
    let mut options = policy.runtime_options(args.bundle.trust.cache_dir.clone())?;
    options.engine.max_concurrency = 1;
    // The map is this root's whole policy: not even the bundle's originals are let in.
    if let Some(sandbox) = options.native.as_mut().and_then(|n| n.sandbox.as_mut()) {
        sandbox.gate_originals = false;
    }
    let runtime = Runtime::open(
        &bundle_dir(&args.bundle),
        &trust_policy(&args.bundle.trust)?,
        options,
    )?;
    // The path the kernel resolved inside the image when the map's check hashed it, so no
    // symlink of the image is followed on the host; the allowlist opens and hashes it again
    // and runs that sealed copy.
    let binary = root.join(resolved.file_path.trim_start_matches('/'));
    let mut request = build_request(&resolved.path, tool_args, &args.invoke)?;
    request.tool = ToolRef::Native(binary);
    // As it was called: a busybox-style binary dispatches on the name.
    request.argv0 = Some(resolved.path.clone());
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
