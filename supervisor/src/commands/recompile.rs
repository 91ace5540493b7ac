//! `megavisor recompile IMAGE --out OUT`: maps every executable of a container image by
//! content to a bundle entry, the native sandbox or nothing, and writes the signed image
//! map and the recompiled image (an OCI layout and a tarball), with progress on stderr and
//! a summary (or `--json`) on stdout.

use std::collections::HashSet;
use std::process::ExitCode;

use megavisor_core::native::{Allowlist, AllowlistConfig};
use megavisor_core::{ManifestSigner, Result};
use megavisor_image::map::Counts;
use megavisor_image::{Disposition, Job, OperatorMap, Progress, UnpackLimits, recompile};
use serde_json::json;

use super::{open_runtime, policy};
use crate::args::RecompileArgs;
use crate::render::outln;

pub fn run(args: RecompileArgs) -> Result<ExitCode> {
    let signer = ManifestSigner::load(&args.key)?;
    let runtime = open_runtime(&args.bundle)?;
    let operator_map = match &args.map {
        Some(path) => OperatorMap::load(path)?,
        None => OperatorMap::default(),
    };
    // The fleet's allowlist, file and flags alike: what it allows by content runs natively.
    let native = policy::load(&args.bundle.policy, None)?.native;
    let native_digests: HashSet<String> = Allowlist::new(&AllowlistConfig {
        file: native.allowlist_file.clone(),
        digests: native.digests.clone(),
        ..AllowlistConfig::default()
    })?
    .digests();
    let defaults = UnpackLimits::default();
    let limits = UnpackLimits {
        max_file_bytes: args.max_file_size.unwrap_or(defaults.max_file_bytes),
        max_total_bytes: args.max_image_size.unwrap_or(defaults.max_total_bytes),
        ..defaults
    };
    let job = Job {
        image: &args.image,
        out: &args.out,
        manifest: runtime.manifest(),
        bundle_digest: runtime.manifest_digest(),
        operator_map: &operator_map,
        native_digests: &native_digests,
        signer: &signer,
        name: args.name.as_deref(),
        limits,
    };
    let outcome = recompile(&job, &mut |progress| match progress {
        Progress::Layer {
            index,
            count,
            member,
        } => eprintln!("recompile: applying layer {index}/{count} ({member})"),
        Progress::Hashing => eprintln!("recompile: hashing the executables"),
        Progress::Writing => eprintln!("recompile: writing the image"),
    })?;
    let counts = outcome.map.counts();
    if args.json {
        let summary = json!({
            "image": {
                "name": outcome.image.name,
                "digest": outcome.image.digest,
                "layout": outcome.image.layout,
                "tarball": outcome.image.tarball,
            },
            "map_file": outcome.map_file,
            "counts": counts,
            "map": outcome.map,
        });
        outln!("{}", serde_json::to_string_pretty(&summary).expect("JSON"));
        return Ok(ExitCode::SUCCESS);
    }
    print_table(&outcome.map, counts);
    outln!(
        "image {} ({}) from {}",
        outcome.image.name,
        outcome.image.digest,
        outcome.map.image.digest
    );
    outln!("  layout:    {}", outcome.image.layout.display());
    outln!("  tarball:   {}", outcome.image.tarball.display());
    outln!(
        "  image map: {} (signed by key {})",
        outcome.map_file.display(),
        signer.public().id()
    );
    Ok(ExitCode::SUCCESS)
}

fn print_table(map: &megavisor_image::ImageMap, counts: Counts) {
    let width = map.files.keys().map(String::len).max().unwrap_or(4).max(4);
    outln!("{:<width$}  {:<16}  SHA256", "PATH", "RUNS");
    for (path, mapping) in &map.files {
        let runs = match &mapping.run {
            Disposition::Entry(name) => format!("entry {name}"),
            Disposition::Native => "native".to_owned(),
            Disposition::Denied => "denied".to_owned(),
        };
        outln!(
            "{path:<width$}  {runs:<16}  {}",
            &mapping.digests.sha256[..16]
        );
    }
    outln!(
        "{} mapped, {} native, {} denied",
        counts.mapped,
        counts.native,
        counts.denied
    );
}
