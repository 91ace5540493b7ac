//! A manifest and its signature file, as a bundle on disk brings them: parsed, validated,
//! checked against a trusted key. Any input is an answer or a typed error, never a panic;
//! a manifest that parses serializes to one that parses the same.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use megavisor_core::signing::verify_manifest;
use megavisor_core::{Manifest, ManifestSigner, TrustPolicy};

fn policy() -> &'static TrustPolicy {
    static POLICY: OnceLock<TrustPolicy> = OnceLock::new();
    POLICY.get_or_init(|| TrustPolicy {
        keys: vec![ManifestSigner::generate().public()],
        allow_unsigned: false,
    })
}

fuzz_target!(|data: &[u8]| {
    let (manifest, signature) = megavisor_fuzz::two_parts(data);
    let path = Path::new("manifest.json");
    if let Ok(parsed) = Manifest::parse(manifest, path) {
        let again = Manifest::parse(&parsed.to_bytes(), path).expect("its own bytes parse");
        assert_eq!(parsed, again);
    }
    let _ = verify_manifest(manifest, Some(signature), path, policy());
});
