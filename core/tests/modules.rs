//! A v2 bundle of several modules: each module's entries run in fresh instances of their
//! own module (busybox-style dispatch, a reactor's exports, a module pre-initialized at
//! pack time), a tampered module anywhere refuses the whole bundle naming it, and v1
//! bundles still load.

mod common;

use std::path::PathBuf;

use megavisor_core::manifest::{MANIFEST_FILE, Manifest, SIGNATURE_FILE};
use megavisor_core::pack::{ModuleSource, PackSpec, pack};
use megavisor_core::{EngineOptions, ErrorKind, ManifestSigner, Request, Runtime};

fn run(runtime: &Runtime, tool: &str, args: &[&str]) -> megavisor_core::Output {
    runtime
        .run(&Request::new(tool).args(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

fn signer() -> ManifestSigner {
    ManifestSigner::load(&common::build_dir().join("keys/megavisor")).expect("set-up key loads")
}

fn guest(file: &str) -> PathBuf {
    common::build_dir().join("guest").join(file)
}

#[test]
fn every_module_serves_its_own_entries() {
    let runtime = common::test_runtime();
    let names: Vec<&str> = runtime
        .manifest()
        .modules
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["testbin", "reactor", "preinit"]);
    // Busybox-style dispatch on argv[0].
    assert_eq!(common::stdout(&run(&runtime, "args", &["x"])), "args\nx\n");
    // A reactor's exported function, with argv[0] = the entry and its status returned.
    let greeted = run(&runtime, "greet", &["hello", "world"]);
    assert_eq!(common::stdout(&greeted), "greet hello world\n");
    assert_eq!(greeted.exit_code, 0);
    assert_eq!(run(&runtime, "greet", &["fail"]).exit_code, 3);
}

#[test]
fn a_preinitialized_module_starts_from_its_snapshot_every_call() {
    let runtime = common::test_runtime();
    // The same reactor, packed as is: its initializer never ran.
    assert_eq!(
        common::stdout(&run(&runtime, "state", &[])),
        "initialized=0 square(9)=0\n"
    );
    let preinit = runtime.manifest().module("preinit").unwrap();
    let source = &preinit.preinit.as_ref().expect("recorded").source;
    assert_eq!(
        *source,
        runtime.manifest().module("reactor").unwrap().wasm.digests
    );
    for _ in 0..3 {
        assert_eq!(
            common::stdout(&run(&runtime, "preinit-state", &[])),
            "initialized=1 square(9)=81\n"
        );
    }
}

#[test]
fn a_tampered_module_anywhere_refuses_the_bundle_naming_it() {
    for file in ["preinit.cwasm", "reactor.wasm"] {
        let dir = common::copy_bundle("test-bundle");
        let path = dir.path().join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let err = match Runtime::open(dir.path(), &common::policy(), common::options()) {
            Ok(_) => panic!("a bundle with a tampered {file} opened"),
            Err(e) => e,
        };
        assert_eq!(err.kind(), ErrorKind::HashMismatch, "{err}");
        assert!(err.to_string().contains(file), "{file}: {err}");
    }
}

#[test]
fn a_v1_bundle_still_loads_as_one_module() {
    let dir = common::copy_bundle("test-bundle");
    let v2 = Manifest::parse(
        &std::fs::read(dir.path().join(MANIFEST_FILE)).unwrap(),
        dir.path(),
    )
    .unwrap();
    let testbin = &v2.modules[0];
    let entries: Vec<serde_json::Value> = v2
        .entries
        .iter()
        .filter(|e| e.module == testbin.name || e.served_natively().is_some())
        .map(|e| {
            let mut e = serde_json::to_value(e).unwrap();
            e.as_object_mut().unwrap().remove("module");
            e
        })
        .collect();
    let v1 = serde_json::json!({
        "format": "megavisor-manifest/v1",
        "name": "old",
        "megabinary": {
            "wasm": testbin.wasm,
            "cwasm": testbin.cwasm,
            "engine": v2.engine,
            "wasmtime": v2.wasmtime,
        },
        "entries": entries,
    });
    let bytes = serde_json::to_vec_pretty(&v1).unwrap();
    std::fs::write(dir.path().join(MANIFEST_FILE), &bytes).unwrap();
    std::fs::write(dir.path().join(SIGNATURE_FILE), signer().sign(&bytes)).unwrap();
    let runtime = Runtime::open(dir.path(), &common::policy(), common::options()).unwrap();
    let manifest = runtime.manifest();
    assert_eq!(manifest.modules.len(), 1);
    assert_eq!(manifest.modules[0].name, "testbin");
    assert!(
        manifest
            .entries
            .iter()
            .all(|e| e.served_natively().is_some() || e.module == "testbin")
    );
    assert_eq!(
        common::stdout(&run(&runtime, "args", &["v1"])),
        "args\nv1\n"
    );
}

/// Packs the reactor with `entries` (JSON) into a fresh bundle.
fn pack_reactor(
    entries: serde_json::Value,
) -> (tempfile::TempDir, megavisor_core::Result<Manifest>) {
    let dir = tempfile::tempdir().unwrap();
    let entries_file = dir.path().join("entries.json");
    std::fs::write(&entries_file, entries.to_string()).unwrap();
    let modules = [ModuleSource {
        wasm: guest("reactor.wasm"),
        entries: entries_file,
    }];
    let spec = PackSpec {
        modules: &modules,
        name: "probe",
        out_dir: &dir.path().join("bundle"),
        engine: &EngineOptions::default(),
    };
    let packed = pack(&spec, &signer(), &mut |_| {});
    (dir, packed)
}

fn reactor_entry(name: &str, export: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name, "entry": name, "export": export, "description": "probe",
        "arguments": {"type": "object"},
        "limits": {"memory_bytes": 4194304, "timeout_ms": 1000}
    })
}

#[test]
fn an_entry_whose_export_cannot_be_called_fails_the_bundle_at_open() {
    for (export, needle) in [
        ("bump", "neither [] -> [] nor [] -> [i32]"),
        ("nowhere", "exports no function of that name"),
    ] {
        let (dir, packed) =
            pack_reactor(serde_json::json!({"entries": [reactor_entry("bad", export)]}));
        packed.expect("pack checks entries, not exports");
        let err = match Runtime::open(
            &dir.path().join("bundle"),
            &common::policy(),
            common::options(),
        ) {
            Ok(_) => panic!("export {export} was accepted"),
            Err(e) => e,
        };
        let message = err.to_string();
        assert!(
            message.contains("module reactor") && message.contains(export),
            "{message}"
        );
        assert!(message.contains(needle), "{message}");
    }
}

#[test]
fn pack_refuses_what_a_bundle_cannot_hold() {
    let (_dir, packed) = pack_reactor(serde_json::json!({
        "module": {"preinit": "no.such.function"},
        "entries": [reactor_entry("greet", "greet")]
    }));
    let message = packed.expect_err("a missing initializer").to_string();
    assert!(
        message.contains("pre-initialize module reactor") && message.contains("no.such.function"),
        "{message}"
    );

    let (_dir, packed) = pack_reactor(serde_json::json!({
        "module": {"memory_bytes": 65536},
        "entries": [reactor_entry("greet", "greet")]
    }));
    let message = packed
        .expect_err("an entry over its module's memory")
        .to_string();
    assert!(message.contains("exceeds module \"reactor\""), "{message}");

    let mut named = reactor_entry("greet", "greet");
    named["module"] = "elsewhere".into();
    let (_dir, packed) = pack_reactor(serde_json::json!({"entries": [named]}));
    let message = packed.expect_err("an entry naming a module").to_string();
    assert!(message.contains("belong to its module"), "{message}");
}
