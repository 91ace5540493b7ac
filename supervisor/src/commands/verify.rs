//! `megavisor verify BUNDLE`: checks the signature and every file of every module, and says
//! whether the precompiled modules fit this engine.

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
    for module in &manifest.modules {
        let entries = manifest.entries.iter().filter(|e| e.module == module.name);
        let preinit = match &module.preinit {
            Some(preinit) => format!(
                ", pre-initialized by {} from sha256 {}",
                preinit.function, preinit.source.sha256
            ),
            None => String::new(),
        };
        outln!(
            "module {}: {} entries, {} MiB per instance, {} warm{preinit}",
            module.name,
            entries.count(),
            module.pool.memory_bytes >> 20,
            module.pool.warm
        );
        for record in [&module.wasm, &module.cwasm] {
            outln!(
                "  {}: ok ({} bytes, sha256 {}, blake3 {})",
                record.file,
                record.size,
                record.digests.sha256,
                record.digests.blake3
            );
        }
    }
    let this_engine = engine::fingerprint(&engine::build_engine(&EngineOptions::default())?);
    let fits = manifest.engine == this_engine;
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
