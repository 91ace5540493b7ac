//! The `js` entry of the default bundle: QuickJS-ng, pre-initialized at pack time, run in a
//! fresh instance per call, held to the same limits as every tool.

mod common;

use std::time::Duration;

use megavisor_core::{ErrorKind, Output, Request, Runtime};
use serde_json::{Value, json};

fn js(runtime: &Runtime, params: Value) -> megavisor_core::Result<Output> {
    let entry = runtime
        .manifest()
        .entry("js")
        .expect("the default bundle has js");
    let rendered = entry.render_arguments(&params)?;
    runtime.run(&Request::new("js").args(rendered.args))
}

fn ok(runtime: &Runtime, params: Value) -> (String, String) {
    let out = js(runtime, params).expect("the call runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.exit_code, 0, "{stderr}");
    (common::stdout(&out), stderr)
}

#[test]
fn the_last_value_is_printed_as_json_and_console_log_goes_to_stdout() {
    let runtime = common::default_runtime();
    assert_eq!(
        ok(&runtime, json!({"code": "[1,2,3].map(x=>x*2)"})).0,
        "[2,4,6]\n"
    );
    let (stdout, _) = ok(
        &runtime,
        json!({"code": "console.log('sum', input.a + input.b); ({ok: true, n: input.a})", "input": {"a": 40, "b": 2}}),
    );
    assert_eq!(stdout, "sum 42\n{\"ok\":true,\"n\":40}\n");
    let (stdout, stderr) = ok(
        &runtime,
        json!({"code": "console.error('careful'); undefined"}),
    );
    assert_eq!((stdout.as_str(), stderr.as_str()), ("", "careful\n"));
    let (stdout, _) = ok(
        &runtime,
        json!({"code": "Promise.resolve(5).then(v => console.log('then', v)); 'sync'"}),
    );
    // Queued jobs run before the value is printed.
    assert_eq!(stdout, "then 5\n\"sync\"\n");
}

#[test]
fn an_uncaught_exception_exits_1_with_message_and_stack() {
    let runtime = common::default_runtime();
    let out = js(
        &runtime,
        json!({"code": "function f() { throw new TypeError('boom') }\nf()"}),
    )
    .unwrap();
    assert_eq!(out.exit_code, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("Uncaught TypeError: boom\n"), "{stderr}");
    assert!(stderr.contains("at f (<code>:1"), "{stderr}");
    let out = js(&runtime, json!({"code": "1 +"})).unwrap();
    assert_eq!(out.exit_code, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("SyntaxError"));
}

#[test]
fn every_call_starts_from_the_snapshot() {
    let runtime = common::default_runtime();
    for _ in 0..3 {
        let (stdout, _) = ok(
            &runtime,
            json!({"code": "const seen = typeof globalThis.leftover; globalThis.leftover = 1; seen"}),
        );
        assert_eq!(stdout, "\"undefined\"\n");
    }
}

#[test]
fn there_is_no_way_out_and_limits_hold() {
    let runtime = common::default_runtime();
    let (stdout, _) = ok(
        &runtime,
        json!({"code": "[typeof require, typeof std, typeof os, typeof fetch, typeof process]"}),
    );
    assert_eq!(
        stdout,
        "[\"undefined\",\"undefined\",\"undefined\",\"undefined\",\"undefined\"]\n"
    );

    let entry = runtime.manifest().entry("js").unwrap();
    let mut request = Request::new("js").args(
        entry
            .render_arguments(&json!({"code": "while (true) {}"}))
            .unwrap()
            .args,
    );
    request.limits.timeout = Some(Duration::from_millis(200));
    let err = runtime
        .run(&request)
        .expect_err("an endless loop is stopped");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");

    let err = js(
        &runtime,
        json!({"code": "const a = []; while (true) a.push(new Array(1e5).fill(1))"}),
    )
    .expect_err("a memory bomb is stopped");
    assert_eq!(err.kind(), ErrorKind::MemoryLimit, "{err}");
}
