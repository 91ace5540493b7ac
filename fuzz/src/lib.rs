//! What the fuzz targets share: the set-up's test bundle, loaded once, for the targets that
//! convert requests against a real manifest (argument schemas, entries).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use megavisor_core::{EngineOptions, Runtime, RuntimeOptions, TrustPolicy};

/// The set-up's build directory (`make setup` made it), or `MEGAVISOR_BUILD_DIR`.
fn build_dir() -> PathBuf {
    std::env::var_os("MEGAVISOR_BUILD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../build"))
}

/// The runtime of the test bundle.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let build = build_dir();
        let policy = TrustPolicy::from_key_files(&[build.join("keys/megavisor.pub")])
            .expect("the set-up's key (run `make setup`)");
        let options = RuntimeOptions {
            engine: EngineOptions {
                max_concurrency: 1,
                ..EngineOptions::default()
            },
            ..RuntimeOptions::default()
        };
        Runtime::open(&build.join("test-bundle"), &policy, options)
            .expect("the set-up's test bundle (run `make setup`)")
    })
}

/// `data` split at its first NUL: two inputs in one (the second empty without a NUL).
pub fn two_parts(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}
