//! Shared set-up of the integration tests: the bundles and key that `make setup` builds from
//! the guest sources in this repository.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};

use megavisor_core::{EngineOptions, Runtime, RuntimeOptions, TrustPolicy};

/// The set-up's build directory (override with MEGAVISOR_BUILD_DIR).
pub fn build_dir() -> PathBuf {
    let dir = std::env::var_os("MEGAVISOR_BUILD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../build"));
    assert!(
        dir.join("bundle/manifest.json").exists() && dir.join("test-bundle/manifest.json").exists(),
        "bundles missing under {}: run `make setup` first",
        dir.display()
    );
    dir
}

pub fn public_key() -> PathBuf {
    build_dir().join("keys/megavisor.pub")
}

pub fn policy() -> TrustPolicy {
    TrustPolicy::from_key_files(&[public_key()]).expect("set-up key loads")
}

pub fn options() -> RuntimeOptions {
    RuntimeOptions {
        engine: EngineOptions {
            max_concurrency: 4,
            max_memory_bytes: 256 << 20,
            ..EngineOptions::default()
        },
        ..RuntimeOptions::default()
    }
}

pub fn test_runtime() -> Runtime {
    test_runtime_with(options())
}

pub fn test_runtime_with(options: RuntimeOptions) -> Runtime {
    Runtime::open(&build_dir().join("test-bundle"), &policy(), options).expect("test bundle opens")
}

pub fn default_runtime() -> Runtime {
    Runtime::open(&build_dir().join("bundle"), &policy(), options()).expect("default bundle opens")
}

/// A private copy of a bundle, to tamper with.
pub fn copy_bundle(name: &str) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for file in std::fs::read_dir(build_dir().join(name)).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), copy.path().join(file.file_name())).unwrap();
    }
    copy
}

pub fn stdout(out: &megavisor_core::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}
