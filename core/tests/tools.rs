//! The default megabinary's tools, replayed from the golden cases in `guest/cases.json`
//! (expected outputs checked against GNU coreutils where it has the tool).

mod common;

use std::path::Path;

use megavisor_core::{Access, Mount, Request};
use serde_json::Value;

#[test]
fn golden_cases_match() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/cases.json");
    let cases: Vec<Value> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(
        cases.len() >= 36,
        "expected at least 3 cases for each of 12 tools"
    );
    let rt = common::default_runtime();
    let mut failures = Vec::new();
    for case in &cases {
        let tool = case["tool"].as_str().unwrap();
        let args: Vec<String> = case["args"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        let stdin = case["stdin"].as_str().unwrap_or("");
        let out = match rt.run(&Request::new(tool).args(args.clone()).stdin(stdin)) {
            Ok(out) => out,
            Err(e) => {
                failures.push(format!("{tool} {args:?}: {e}"));
                continue;
            }
        };
        let got = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(expected) = case["stdout"].as_str()
            && got != expected
        {
            failures.push(format!(
                "{tool} {args:?}: stdout {got:?}, expected {expected:?}"
            ));
        }
        let code = case["exit_code"].as_i64().unwrap_or(0) as i32;
        if out.exit_code != code {
            failures.push(format!(
                "{tool} {args:?}: exit {}, expected {code} (stderr {stderr:?})",
                out.exit_code
            ));
        }
        if let Some(needle) = case["stderr_contains"].as_str()
            && !stderr.contains(needle)
        {
            failures.push(format!(
                "{tool} {args:?}: stderr {stderr:?} lacks {needle:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_entry_has_a_usable_description_and_schema() {
    let rt = common::default_runtime();
    let required = [
        "echo",
        "cat",
        "wc",
        "head",
        "tail",
        "grep",
        "sort",
        "uniq",
        "base64",
        "sha256sum",
        "jsonfmt",
        "calc",
    ];
    for name in required {
        let entry = rt
            .manifest()
            .entry(name)
            .unwrap_or_else(|| panic!("default bundle lacks {name}"));
        assert!(entry.description.len() > 20, "{name}: description too thin");
        let props = entry.arguments["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}: no properties"));
        for (prop, schema) in props {
            assert!(
                schema.get("description").is_some(),
                "{name}.{prop}: no description"
            );
            assert!(
                schema.get("x-argv").is_some(),
                "{name}.{prop}: no x-argv hint"
            );
        }
    }
}

#[test]
fn file_tools_read_from_a_mount() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "alpha\nbeta\ngamma\n").unwrap();
    let mount = Mount {
        host: dir.path().into(),
        guest: "/work".into(),
        access: Access::ReadOnly,
    };
    let rt = common::default_runtime();
    let out = rt
        .run(
            &Request::new("wc")
                .args(["-l", "/work/notes.txt"])
                .mount(mount.clone()),
        )
        .unwrap();
    assert_eq!(common::stdout(&out), "3 /work/notes.txt\n");
    let out = rt
        .run(
            &Request::new("grep")
                .args(["-n", "^b", "/work/notes.txt"])
                .mount(mount),
        )
        .unwrap();
    assert_eq!(common::stdout(&out), "2:beta\n");
}

#[test]
fn native_wc_maps_to_the_wasm_wc() {
    let rt = common::default_runtime();
    let wc = ["/usr/bin/wc", "/bin/wc"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("coreutils wc on this machine");
    assert_eq!(rt.entry_for_native(wc.as_ref()).unwrap().name, "wc");
}
