//! The language entries: code a model wrote, run in a fresh pre-initialized instance per
//! call, embedded and through the supervisor's ring, against the same code run by a new
//! process of the language's own runtime, measured in the same run.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use megavisor_client::{Call, Client};
use megavisor_core::{Caller, Request, Runtime};
use serde_json::{Value, json};

use crate::Sizes;
use crate::samples::{Samples, report};

/// One code case: the tool's params, and the peer process, whose stdout the tool must print
/// too.
struct CodeCase {
    case: &'static str,
    tool: &'static str,
    params: Value,
    /// The peer: a program and its arguments, given `stdin`.
    peer: (&'static str, Vec<String>),
    stdin: Vec<u8>,
}

/// A JSON document of about 10 KB: 100 records, for the `*/code/json` cases.
fn records() -> Value {
    let records: Vec<Value> = (0..100)
        .map(|i| {
            let tags = &["alpha", "beta", "gamma"][..(i % 3 + 1)];
            json!({
                "id": i,
                "name": format!("item-{i:03}"),
                "score": (i * 37) % 101,
                "tags": tags,
                "active": i % 2 == 0,
            })
        })
        .collect();
    Value::Array(records)
}

/// Summarizes `input` (the records): count, mean score, best name, active count.
const JS_SUMMARY: &str = "({n: input.length, mean: input.reduce((a, r) => a + r.score, 0) / input.length, \
    best: input.reduce((a, r) => r.score > a.score ? r : a).name, active: input.filter(r => r.active).length})";

/// The same summary in Python.
const PYTHON_SUMMARY: &str = "print(json.dumps({'n': len(input), 'mean': statistics.mean(r['score'] for r in input), \
    'best': max(input, key=lambda r: r['score'])['name'], 'active': sum(r['active'] for r in input)}))";

/// The filter of `jq/4k`.
const JQ_FILTER: &str =
    "map(select(.active)) | {n: length, total: (map(.score) | add), names: map(.name)[:3]}";

fn cases() -> Vec<CodeCase> {
    let records = records();
    // About 4 KB of the records, for jq.
    let four_k = Value::Array(records.as_array().expect("an array")[..40].to_vec()).to_string();
    vec![
        CodeCase {
            case: "js/code/expr",
            tool: "js",
            params: json!({"code": "[1,2,3].map(x=>x*2)"}),
            peer: (
                "node",
                vec![
                    "-e".into(),
                    "console.log(JSON.stringify([1,2,3].map(x=>x*2)))".into(),
                ],
            ),
            stdin: Vec::new(),
        },
        CodeCase {
            case: "js/code/json",
            tool: "js",
            params: json!({"code": JS_SUMMARY, "input": records}),
            peer: (
                "node",
                vec![
                    "-e".into(),
                    format!(
                        "const input = JSON.parse(require('fs').readFileSync(0, 'utf8')); console.log(JSON.stringify({JS_SUMMARY}))"
                    ),
                ],
            ),
            stdin: records.to_string().into_bytes(),
        },
        CodeCase {
            case: "jq/4k",
            tool: "jq",
            params: json!({"filter": JQ_FILTER, "compact": true, "input": four_k}),
            peer: ("jq", vec!["-S".into(), "-c".into(), JQ_FILTER.into()]),
            stdin: four_k.clone().into_bytes(),
        },
        CodeCase {
            case: "python/code/print",
            tool: "python",
            params: json!({"code": "print(1+1)"}),
            peer: ("python3", vec!["-c".into(), "print(1+1)".into()]),
            stdin: Vec::new(),
        },
        CodeCase {
            case: "python/code/json",
            tool: "python",
            params: json!({"code": PYTHON_SUMMARY, "input": records}),
            peer: (
                "python3",
                vec![
                    "-c".into(),
                    format!(
                        "import json, statistics, sys; input = json.load(sys.stdin)\n{PYTHON_SUMMARY}"
                    ),
                ],
            ),
            stdin: records.to_string().into_bytes(),
        },
    ]
}

/// The program a peer names, resolved once: `python3` on PATH may be a version manager's
/// shim script, which would add its own start-up to every run of the peer.
fn resolve(program: &str) -> String {
    if program != "python3" {
        return program.to_owned();
    }
    Command::new(program)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|path| path.trim().to_owned())
        .filter(|path| !path.is_empty())
        .unwrap_or_else(|| program.to_owned())
}

/// Runs `peer` once with `stdin` and returns its stdout.
fn run_peer((program, args): &(String, Vec<String>), stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    // A peer that exits without reading all of its stdin is still measured.
    let _ = child.stdin.take().expect("piped").write_all(stdin);
    let out = child.wait_with_output().expect("peer runs");
    assert!(out.status.success(), "{program} failed");
    out.stdout
}

/// Every code case whose tool the bundle has, embedded and on the ring of the supervisor
/// at `socket`, each beside its peer process.
pub fn run(
    runtime: &Runtime,
    socket: &Path,
    sizes: &Sizes,
) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::connect(socket)?;
    for case in cases() {
        let Some(entry) = runtime.manifest().entry(case.tool) else {
            println!(
                "{}",
                json!({"case": case.case, "skipped": format!("the bundle has no {} tool", case.tool)})
            );
            continue;
        };
        let peer_command = (resolve(case.peer.0), case.peer.1.clone());
        let expected = String::from_utf8(run_peer(&peer_command, &case.stdin))?;
        let spawns = (sizes.spawns / 10).max(10);
        let (samples, wall) = Samples::collect(spawns, || {
            run_peer(&peer_command, &case.stdin);
        });
        let peer_case = format!("{}/{}-process", case.case, case.peer.0);
        let peer_line = report(&peer_case, &samples, wall, None);
        println!("{peer_line}");
        let peer = (
            peer_case.as_str(),
            peer_line["p50_us"].as_f64().expect("a number"),
        );

        let embedded = || {
            let rendered = entry
                .render_arguments(&case.params)
                .expect("params fit the schema");
            let mut request = Request::new(case.tool).args(rendered.args);
            request.stdin = rendered.stdin.unwrap_or_default();
            let out = runtime.run(&request).expect("the call succeeds");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                expected,
                "{}",
                case.case
            );
        };
        let iterations = sizes.iterations / 10;
        Samples::collect(sizes.warmup / 10, embedded);
        let (samples, wall) = Samples::collect(iterations, embedded);
        println!(
            "{}",
            report(
                &format!("{}/embedded", case.case),
                &samples,
                wall,
                Some(peer)
            )
        );

        let call = Call::new(case.tool).params_json(case.params.to_string());
        let connected = || {
            let out = client.call(&call).expect("the call succeeds");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                expected,
                "{}",
                case.case
            );
        };
        Samples::collect(sizes.warmup / 10, connected);
        let (samples, wall) = Samples::collect(iterations, connected);
        println!(
            "{}",
            report(&format!("{}/ring", case.case), &samples, wall, Some(peer))
        );
        if case.case == "python/code/print" {
            session_cases(runtime, &client, &case, &expected, peer, sizes)?;
        }
    }
    Ok(())
}

/// `session/python/call`: the same code in one session's instance, call after call,
/// embedded and on the ring, beside the same peer.
fn session_cases(
    runtime: &Runtime,
    client: &Client,
    case: &CodeCase,
    expected: &str,
    peer: (&str, f64),
    sizes: &Sizes,
) -> Result<(), Box<dyn std::error::Error>> {
    let iterations = sizes.iterations / 10;
    let entry = runtime
        .manifest()
        .entry(case.tool)
        .expect("checked by the caller");
    let args = entry.render_arguments(&case.params)?.args;
    let session = runtime.open_session(case.tool, &Caller::process())?;
    let embedded = || {
        let mut request = Request::new(case.tool).args(args.clone());
        request.session = Some(session);
        let out = runtime.run(&request).expect("the call succeeds");
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    };
    Samples::collect(sizes.warmup / 10, embedded);
    let (samples, wall) = Samples::collect(iterations, embedded);
    println!(
        "{}",
        report("session/python/call/embedded", &samples, wall, Some(peer))
    );
    runtime.close_session(session, &Caller::process())?;

    let session = client.open_session(case.tool)?;
    let call = Call::new(case.tool)
        .params_json(case.params.to_string())
        .session(session);
    let connected = || {
        let out = client.call(&call).expect("the call succeeds");
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    };
    Samples::collect(sizes.warmup / 10, connected);
    let (samples, wall) = Samples::collect(iterations, connected);
    println!(
        "{}",
        report("session/python/call/ring", &samples, wall, Some(peer))
    );
    client.close_session(session)?;
    Ok(())
}
