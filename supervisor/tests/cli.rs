//! The `megavisor` program as a user runs it: a real process, real bundles from the set-up.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn build_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../build");
    assert!(
        dir.join("bundle/manifest.json").exists(),
        "run `make setup` first"
    );
    dir
}

fn megavisor(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_megavisor"))
        .args(args)
        .env_remove("MEGAVISOR_BUNDLE")
        .env_remove("MEGAVISOR_TRUSTED_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("megavisor starts");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn run_echo_on_the_default_bundle() {
    let out = megavisor(&["run", "echo", "hello"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello\n");
}

#[test]
fn stdin_and_exit_codes_pass_through() {
    let out = megavisor(&["run", "wc", "-l"], b"a\nb\nc\n");
    assert_eq!(text(&out.stdout).trim(), "3");
    let out = megavisor(&["run", "false"], b"");
    assert_eq!(out.status.code(), Some(1));
    let out = megavisor(&["run", "grep", "zzz"], b"abc\n");
    assert_eq!(
        out.status.code(),
        Some(1),
        "grep's no-match status passes through"
    );
}

#[test]
fn params_are_rendered_through_the_tool_schema_before_or_after_it() {
    let params = r#"{"lines": true, "stdin": "a\nb\n"}"#;
    for args in [
        ["run", "--params", params, "wc"],
        ["run", "wc", "--params", params],
    ] {
        let out = megavisor(&args, b"");
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), "2");
    }
    let out = megavisor(&["run", "wc", "--params", r#"{"shell": "rm"}"#], b"");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("unknown argument \"shell\""));
    let out = megavisor(&["run", "--params", "{}", "wc", "-l"], b"");
    assert!(text(&out.stderr).contains("either ARGS or --params"));
}

#[test]
fn json_prints_the_whole_result() {
    let out = megavisor(
        &["run", "--json", "--exec-id", "cli-json-1", "echo", "hi"],
        b"",
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stdout"], "hi\n");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["execution_id"], "cli-json-1");
    assert!(v["error"].is_null());
    assert!(v["timings"]["total_us"].as_u64().unwrap() > 0);
}

#[test]
fn errors_have_kinds_and_exit_codes() {
    let out = megavisor(&["run", "nosuch"], b"");
    assert_eq!(out.status.code(), Some(127));
    assert!(
        text(&out.stderr).contains("tool_not_found"),
        "{}",
        text(&out.stderr)
    );
    let out = megavisor(&["run", "--json", "--env", "X=1", "echo"], b"");
    assert_eq!(out.status.code(), Some(126));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "not_allowed");
    let out = megavisor(&["run", "--timeout", "5", "echo"], b"");
    assert_eq!(
        out.status.code(),
        Some(2),
        "a duration without unit is a usage error"
    );
}

#[test]
fn mounts_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.txt"), "one\ntwo\n").unwrap();
    let mount = format!("{}:/in", dir.path().display());
    let out = megavisor(&["run", "--mount", &mount, "cat", "/in/f.txt"], b"");
    assert_eq!(text(&out.stdout), "one\ntwo\n", "{}", text(&out.stderr));
}

#[test]
fn exec_runs_the_entry_standing_for_a_native_binary() {
    let out = megavisor(&["exec", "/usr/bin/wc", "-c"], b"twelve bytes");
    assert_eq!(text(&out.stdout).trim(), "12", "{}", text(&out.stderr));
    let out = megavisor(&["exec", "/bin/sh", "-c", "id"], b"");
    assert_eq!(out.status.code(), Some(126));
    let err = text(&out.stderr);
    assert!(
        err.contains("EACCES: /bin/sh (sha256 ") && err.contains("is not in the manifest"),
        "{err}"
    );
}

#[test]
fn tools_lists_every_entry() {
    let out = megavisor(&["tools"], b"");
    let listing = text(&out.stdout);
    for name in ["echo", "wc", "grep", "jsonfmt", "calc", "sha256sum"] {
        assert!(
            listing.lines().any(|l| l.starts_with(name)),
            "{name} missing from:\n{listing}"
        );
    }
    let out = megavisor(&["tools", "--json"], b"");
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        entries
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "wc" && e["arguments"]["type"] == "object")
    );
}

#[test]
fn keygen_pack_verify_and_tamper() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let out = megavisor(&["keygen", "--out", key.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bundle = dir.path().join("b");
    let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest");
    let wasm = build_dir().join("guest/testbin.wasm");
    let out = megavisor(
        &[
            "pack",
            "--wasm",
            wasm.to_str().unwrap(),
            "--entries",
            guest.join("testbin/entries.json").to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--out",
            bundle.to_str().unwrap(),
            "--name",
            "t",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("compiled in"),
        "pack shows compile progress"
    );
    let public = format!("{}.pub", key.display());
    let b = bundle.to_str().unwrap();
    let out = megavisor(&["verify", b, "--trusted-key", &public], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("signature: ok"));
    // The set-up's key did not sign this bundle; a key inside the bundle is never trusted.
    std::fs::copy(&public, bundle.join("trusted.pub")).unwrap();
    let out = megavisor(&["verify", b], b"");
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("bad_signature"),
        "{}",
        text(&out.stderr)
    );
    let out = megavisor(
        &["run", "--bundle", b, "--trusted-key", &public, "args", "x"],
        b"",
    );
    assert_eq!(text(&out.stdout), "args\nx\n");
    let cwasm = bundle.join("testbin.cwasm");
    let mut bytes = std::fs::read(&cwasm).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&cwasm, bytes).unwrap();
    let out = megavisor(&["verify", b, "--trusted-key", &public], b"");
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(
        err.contains("hash_mismatch") && err.contains("testbin.cwasm"),
        "{err}"
    );
}

#[test]
fn ad_hoc_module_needs_a_known_digest_or_allow_unsigned() {
    let wasm = build_dir().join("guest/testbin.wasm");
    let module = wasm.to_str().unwrap();
    let out = megavisor(&["run", "--module", module, "x"], b"");
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is not in the manifest"));
    // The default bundle's own megabinary is known by digest.
    let megabin = build_dir().join("guest/megabin.wasm");
    let out = megavisor(&["run", "--module", megabin.to_str().unwrap()], b"");
    assert_eq!(
        out.status.code(),
        Some(125),
        "megabin dispatches on argv[0]=megabin: unknown tool"
    );
    let out = megavisor(&["run", "--allow-unsigned", "--module", module, "x"], b"");
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    // `megavisor run ... | head`: the pipe closes before the output is all written.
    for json in [false, true] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_megavisor"));
        command.arg("run");
        if json {
            command.arg("--json");
        }
        let mut child = command
            .args(["seq", "1", "200000"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 1];
        std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            stderr.is_empty(),
            "a closed pipe is not worth a word: {stderr}"
        );
    }
}

#[test]
fn exit_status_255_passes_through() {
    let test_bundle = build_dir().join("test-bundle");
    let bundle = test_bundle.to_str().unwrap();
    let out = megavisor(&["run", "--bundle", bundle, "exit", "255"], b"");
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
}

#[test]
fn stdin_past_the_limit_is_refused_without_being_read_whole() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_megavisor"))
        .args(["run", "wc", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Fed until megavisor stops reading (it then closes stdin: the write fails).
    let feeder = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        let mut fed = 0u64;
        while stdin.write_all(&chunk).is_ok() && fed < 200 << 20 {
            fed += chunk.len() as u64;
        }
        fed
    });
    let out = child.wait_with_output().unwrap();
    let fed = feeder.join().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("stdin is larger than the limit"));
    assert!(fed < 100 << 20, "read {fed} bytes of stdin to refuse it");
}

#[test]
fn an_ad_hoc_module_is_held_to_the_memory_limit_given() {
    // The test megabinary, named for the tool its argv[0] picks.
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("alloc.wasm");
    std::fs::copy(build_dir().join("guest/testbin.wasm"), &module).unwrap();
    let out = megavisor(
        &[
            "run",
            "--module",
            module.to_str().unwrap(),
            "--allow-unsigned",
            "--memory",
            "16M",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("limit is 16777216 bytes"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_bundle_spec_packs_several_modules_and_verify_names_each() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    assert!(
        megavisor(&["keygen", "--out", key.to_str().unwrap()], b"")
            .status
            .success()
    );
    let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest");
    let spec = dir.path().join("bundle.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"pair\"\n\
             [[modules]]\nwasm = \"{testbin}\"\nentries = \"{guest}/testbin/entries.json\"\n\
             [[modules]]\nwasm = \"{reactor}\"\nentries = \"{guest}/reactor/preinit.json\"\n",
            testbin = build_dir().join("guest/testbin.wasm").display(),
            reactor = build_dir().join("guest/reactor.wasm").display(),
            guest = guest.display(),
        ),
    )
    .unwrap();
    let bundle = dir.path().join("b");
    let out = megavisor(
        &[
            "pack",
            "--spec",
            spec.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--out",
            bundle.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("pre-initializing module preinit"));
    assert!(text(&out.stdout).contains("\"pair\"") && text(&out.stdout).contains("2 modules"));
    let public = format!("{}.pub", key.display());
    let b = bundle.to_str().unwrap();
    let out = megavisor(&["verify", b, "--trusted-key", &public], b"");
    let report = text(&out.stdout);
    assert!(
        report.contains("module testbin:") && report.contains("module preinit:"),
        "{report}"
    );
    assert!(
        report.contains("pre-initialized by wizer.initialize"),
        "{report}"
    );
    let out = megavisor(
        &[
            "run",
            "--bundle",
            b,
            "--trusted-key",
            &public,
            "preinit-state",
        ],
        b"",
    );
    assert_eq!(text(&out.stdout), "initialized=1 square(9)=81\n");
    // A spec with no module, or a module and --spec at once, is refused.
    std::fs::write(&spec, "name = \"none\"\nmodules = []\n").unwrap();
    let out = megavisor(
        &[
            "pack",
            "--spec",
            spec.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--out",
            b,
        ],
        b"",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("at least one module"),
        "{}",
        text(&out.stderr)
    );
}
