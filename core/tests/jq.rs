//! The `jq` entry of the default bundle (gojq, built for wasip1) replays
//! `guest/jq/cases.json` against Debian's jq, run as a process with the same flags (and
//! --sort-keys: gojq prints object keys sorted).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use megavisor_core::{Request, Runtime};
use serde_json::{Value, json};

/// The native jq the cases are checked against (the set-up installs Debian's).
const NATIVE_JQ: &str = "/usr/bin/jq";

fn native(case: &Value) -> (String, bool) {
    let mut command = Command::new(NATIVE_JQ);
    command.arg("--sort-keys");
    for (flag, option) in [
        ("raw_output", "-r"),
        ("compact", "-c"),
        ("null_input", "-n"),
    ] {
        if case[flag] == json!(true) {
            command.arg(option);
        }
    }
    let mut child = command
        .arg(case["filter"].as_str().unwrap())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the native jq runs");
    let input = case["input"].as_str().unwrap_or("");
    // jq may exit without reading its input (with -n, or when the filter does not compile):
    // a broken pipe here is its answer, not a failure.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    let out = child.wait_with_output().unwrap();
    (String::from_utf8(out.stdout).unwrap(), out.status.success())
}

fn wasm(runtime: &Runtime, case: &Value) -> (String, bool) {
    let mut params = case.clone();
    let params = params.as_object_mut().unwrap();
    params.remove("fails");
    let entry = runtime
        .manifest()
        .entry("jq")
        .expect("the default bundle has jq");
    let rendered = entry
        .render_arguments(&Value::Object(params.clone()))
        .unwrap();
    let mut request = Request::new("jq").args(rendered.args);
    request.stdin = rendered.stdin.unwrap_or_default();
    let out = runtime.run(&request).expect("jq runs to an exit");
    (common::stdout(&out), out.exit_code == 0)
}

#[test]
fn golden_cases_match_debian_jq() {
    assert!(
        Path::new(NATIVE_JQ).exists(),
        "{NATIVE_JQ} is missing: `make setup` installs Debian's jq"
    );
    let cases: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/jq/cases.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let runtime = common::default_runtime();
    for case in cases["cases"].as_array().unwrap() {
        let (expected, native_ok) = native(case);
        let (actual, wasm_ok) = wasm(&runtime, case);
        let fails = case["fails"] == json!(true);
        assert_eq!(native_ok, !fails, "Debian's jq on {case}");
        assert_eq!(wasm_ok, !fails, "jq on {case}: {actual}");
        if !fails {
            assert_eq!(actual, expected, "jq on {case}");
        }
    }
}
