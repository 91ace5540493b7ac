//! A bundle is refused before any of it runs when its megabinary, its precompiled module or
//! its manifest was tampered with, or when it is signed by a key nobody trusts.

mod common;

use std::path::Path;

use megavisor_core::manifest::{MANIFEST_FILE, Manifest, SIGNATURE_FILE};
use megavisor_core::{ErrorKind, ManifestSigner, Runtime, TrustPolicy};

fn open(dir: &Path, policy: &TrustPolicy) -> megavisor_core::Error {
    match Runtime::open(dir, policy, common::options()) {
        Ok(_) => panic!("tampered bundle at {} was accepted", dir.display()),
        Err(e) => e,
    }
}

fn flip_last_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    *bytes.last_mut().unwrap() ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn manifest_of(dir: &Path) -> Manifest {
    Manifest::parse(&std::fs::read(dir.join(MANIFEST_FILE)).unwrap(), dir).unwrap()
}

#[test]
fn untouched_bundle_opens_signed() {
    let runtime = common::test_runtime();
    assert!(matches!(
        runtime.authenticity(),
        megavisor_core::signing::Authenticity::Signed { .. }
    ));
}

#[test]
fn tampered_megabinary_is_refused_naming_file_and_digests() {
    let dir = common::copy_bundle("test-bundle");
    let manifest = manifest_of(dir.path());
    let wasm = dir.path().join(&manifest.modules[0].wasm.file);
    flip_last_byte(&wasm);
    let err = open(dir.path(), &common::policy());
    assert_eq!(err.kind(), ErrorKind::HashMismatch);
    let msg = err.to_string();
    assert!(msg.contains(&wasm.display().to_string()), "{msg}");
    assert!(
        msg.contains(&manifest.modules[0].wasm.digests.sha256),
        "expected digest missing: {msg}"
    );
}

#[test]
fn tampered_precompiled_module_is_refused_before_deserialization() {
    let dir = common::copy_bundle("test-bundle");
    let manifest = manifest_of(dir.path());
    let cwasm = dir.path().join(&manifest.modules[0].cwasm.file);
    flip_last_byte(&cwasm);
    let err = open(dir.path(), &common::policy());
    assert_eq!(err.kind(), ErrorKind::HashMismatch);
    assert!(err.to_string().contains(".cwasm"), "{err}");
}

#[test]
fn truncated_megabinary_is_a_size_mismatch() {
    let dir = common::copy_bundle("test-bundle");
    let manifest = manifest_of(dir.path());
    let wasm = dir.path().join(&manifest.modules[0].wasm.file);
    let bytes = std::fs::read(&wasm).unwrap();
    std::fs::write(&wasm, &bytes[..bytes.len() / 2]).unwrap();
    let err = open(dir.path(), &common::policy());
    assert_eq!(err.kind(), ErrorKind::HashMismatch);
    assert!(err.to_string().contains("size mismatch"), "{err}");
}

#[test]
fn tampered_manifest_is_refused_by_its_signature() {
    let dir = common::copy_bundle("test-bundle");
    let path = dir.path().join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    // Grant every tool more memory: a meaningful edit an attacker might make.
    std::fs::write(&path, text.replacen("67108864", "1073741824", 1)).unwrap();
    let err = open(dir.path(), &common::policy());
    assert_eq!(err.kind(), ErrorKind::BadSignature);
    assert!(err.to_string().contains("does not verify"), "{err}");
}

#[test]
fn wrong_key_is_refused_and_named() {
    let other = ManifestSigner::generate();
    let policy = TrustPolicy {
        keys: vec![other.public()],
        allow_unsigned: false,
    };
    let err = open(&common::build_dir().join("test-bundle"), &policy);
    assert_eq!(err.kind(), ErrorKind::BadSignature);
    assert!(
        err.to_string().contains("not among the trusted keys"),
        "{err}"
    );
}

#[test]
fn unsigned_manifest_needs_explicit_allow_unsigned() {
    let dir = common::copy_bundle("test-bundle");
    std::fs::remove_file(dir.path().join(SIGNATURE_FILE)).unwrap();
    let err = open(dir.path(), &common::policy());
    assert_eq!(err.kind(), ErrorKind::BadSignature);
    assert!(err.to_string().contains("unsigned"), "{err}");
    let lax = TrustPolicy {
        keys: vec![],
        allow_unsigned: true,
    };
    let runtime =
        Runtime::open(dir.path(), &lax, common::options()).expect("allow-unsigned accepts it");
    assert!(matches!(
        runtime.authenticity(),
        megavisor_core::signing::Authenticity::Unverified { .. }
    ));
}

#[test]
fn allow_unsigned_still_checks_file_digests() {
    let dir = common::copy_bundle("test-bundle");
    std::fs::remove_file(dir.path().join(SIGNATURE_FILE)).unwrap();
    let manifest = manifest_of(dir.path());
    flip_last_byte(&dir.path().join(&manifest.modules[0].wasm.file));
    let lax = TrustPolicy {
        keys: vec![],
        allow_unsigned: true,
    };
    assert_eq!(open(dir.path(), &lax).kind(), ErrorKind::HashMismatch);
}

#[test]
fn foreign_engine_recompiles_into_a_private_cache() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("megavisor-cache");
    let mut options = common::options();
    // Fuel metering changes the compiled code, so the bundle's .cwasm does not fit.
    options.engine.fuel = true;
    options.engine.cache_dir = Some(cache_dir.clone());
    let first = common::test_runtime_with(options.clone());
    assert_eq!(
        first.startup().origin,
        megavisor_core::engine::ModuleOrigin::Compiled
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cache_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let second = common::test_runtime_with(options);
    assert_eq!(
        second.startup().origin,
        megavisor_core::engine::ModuleOrigin::Cache
    );
    let out = second.run(&megavisor_core::Request::new("true")).unwrap();
    assert_eq!(out.exit_code, 0);
    let default = common::test_runtime();
    assert_eq!(
        default.startup().origin,
        megavisor_core::engine::ModuleOrigin::Precompiled
    );
}

#[test]
fn cache_directory_writable_by_others_is_refused() {
    let cache = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut options = common::options();
    options.engine.fuel = true;
    options.engine.cache_dir = Some(cache.path().to_owned());
    let err = match Runtime::open(
        &common::build_dir().join("test-bundle"),
        &common::policy(),
        options,
    ) {
        Ok(_) => panic!("a world-writable cache must not be trusted"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert!(err.to_string().contains("mode 0700"), "{err}");
}
