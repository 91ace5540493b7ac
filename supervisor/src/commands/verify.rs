//! `megavisor verify BUNDLE`: checks the signature and every file, and says whether the
//! precompiled module fits this engine.

use std::process::ExitCode;

use megavisor_core::bundle::VerifiedBundle;
use megavisor_core::signing::Authenticity;
use megavisor_core::{EngineOptions, Result, engine};

use super::trust_policy;
use crate::args::VerifyArgs;
use crate::render::outln;

pub fn run(args: VerifyArgs) -> Result<ExitCode> {
    let bundle = VerifiedBundle::open(&args.bundle, &trust_policy(&args.trust)?)?;
    let manifest = &bundle.manifest;
    match &bundle.authenticity {
        Authenticity::Signed { key_id } => outln!("signature: ok (key {key_id})"),
        Authenticity::Unverified { reason } => {
            outln!("signature: NOT VERIFIED, accepted by --allow-unsigned ({reason})")
        }
    }
    for record in [&manifest.megabinary.wasm, &manifest.megabinary.cwasm] {
        outln!(
            "{}: ok ({} bytes, sha256 {}, blake3 {})",
            record.file,
            record.size,
            record.digests.sha256,
            record.digests.blake3
        );
    }
    let this_engine = engine::fingerprint(&engine::build_engine(&EngineOptions::default())?);
    let fits = manifest.megabinary.engine == this_engine;
    outln!(
        "precompiled for this engine: {}",
        if fits {
            "yes"
        } else {
            "no (will be recompiled into the private cache on load)"
        }
    );
    outln!(
        "bundle {:?}: {} entries: {}",
        manifest.name,
        manifest.entries.len(),
        manifest.entry_names()
    );
    Ok(ExitCode::SUCCESS)
}
