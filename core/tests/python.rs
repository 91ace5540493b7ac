//! The `python` entry of the default bundle: CPython 3.11, pre-initialized at pack time
//! with its standard library mounted read-only from the bundle, run in a fresh instance per
//! call, held to the same limits as every tool.

mod common;

use std::time::Duration;

use megavisor_core::{Access, ErrorKind, Mount, Output, Request, Runtime};
use serde_json::{Value, json};

fn request(runtime: &Runtime, params: Value) -> Request {
    let entry = runtime
        .manifest()
        .entry("python")
        .expect("the default bundle has python");
    Request::new("python").args(entry.render_arguments(&params).expect("params fit").args)
}

fn python(runtime: &Runtime, params: Value) -> megavisor_core::Result<Output> {
    runtime.run(&request(runtime, params))
}

fn read_only(host: &std::path::Path, guest: &str) -> Mount {
    Mount {
        host: host.into(),
        guest: guest.into(),
        access: Access::ReadOnly,
    }
}

fn ok(runtime: &Runtime, params: Value) -> String {
    let out = python(runtime, params).expect("the call runs");
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    common::stdout(&out)
}

#[test]
fn code_prints_and_input_is_bound() {
    let runtime = common::default_runtime();
    let code = "import statistics; print(statistics.mean([1,2,3]))";
    assert_eq!(ok(&runtime, json!({"code": code})), "2\n");
    assert_eq!(
        ok(
            &runtime,
            json!({"code": "print(input['a'] + 1, input['b'])", "input": {"a": 41, "b": [1, "x"]}})
        ),
        "42 [1, 'x']\n"
    );
    assert_eq!(ok(&runtime, json!({"code": "print(input)"})), "None\n");
    // Modules outside the preloaded set come from the mounted standard library.
    assert_eq!(
        ok(
            &runtime,
            json!({"code": "import fractions, heapq; print(fractions.Fraction(1, 3) * 3)"})
        ),
        "1\n"
    );
}

#[test]
fn an_exception_prints_its_traceback_and_exits_1() {
    let runtime = common::default_runtime();
    let out = python(
        &runtime,
        json!({"code": "def f():\n    raise ValueError('boom')\nf()"}),
    )
    .unwrap();
    assert_eq!(out.exit_code, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("Traceback (most recent call last):\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 2, in f") && stderr.ends_with("ValueError: boom\n"),
        "{stderr}"
    );
    let out = python(&runtime, json!({"code": "raise SystemExit(7)"})).unwrap();
    assert_eq!(out.exit_code, 7);
}

#[test]
fn every_call_starts_from_the_snapshot_with_its_own_randomness() {
    let runtime = common::default_runtime();
    let code =
        "print('leftover' in globals()); leftover = 1; import random; print(random.random())";
    let first = ok(&runtime, json!({"code": code}));
    let second = ok(&runtime, json!({"code": code}));
    assert!(
        first.starts_with("False\n") && second.starts_with("False\n"),
        "{first}{second}"
    );
    assert_ne!(first, second, "each call reseeds random");
}

#[test]
fn only_mounts_are_reachable_and_limits_hold() {
    let runtime = common::default_runtime();
    let out = python(&runtime, json!({"code": "open('/etc/passwd').read()"})).unwrap();
    assert_eq!(out.exit_code, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("FileNotFoundError"));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("scores.csv"), "name,score\nann,3\nbob,5\n").unwrap();
    let code = "import csv\nrows = list(csv.DictReader(open('/data/scores.csv')))\nprint(sum(int(r['score']) for r in rows))";
    let read = request(&runtime, json!({"code": code})).mount(read_only(dir.path(), "/data"));
    let out = runtime.run(&read).unwrap();
    assert_eq!(
        common::stdout(&out),
        "8\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The standard library's directory is the runtime's own.
    let shadow =
        request(&runtime, json!({"code": "pass"})).mount(read_only(dir.path(), "/usr/local/lib"));
    assert_eq!(
        runtime.run(&shadow).unwrap_err().kind(),
        ErrorKind::BadRequest
    );

    let mut spin = request(&runtime, json!({"code": "while True: pass"}));
    spin.limits.timeout = Some(Duration::from_millis(300));
    assert_eq!(runtime.run(&spin).unwrap_err().kind(), ErrorKind::Timeout);

    let bomb = python(
        &runtime,
        json!({"code": "x = []\nwhile True: x.append(' ' * 10**6)"}),
    );
    assert_eq!(bomb.unwrap_err().kind(), ErrorKind::MemoryLimit);
}

#[test]
fn a_tampered_standard_library_refuses_the_bundle_naming_it() {
    let dir = common::copy_bundle("bundle");
    let path = dir.path().join("python311.zip");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    let err = match Runtime::open(dir.path(), &common::policy(), common::options()) {
        Ok(_) => panic!("a bundle with a tampered python311.zip opened"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::HashMismatch);
    assert!(err.to_string().contains("python311.zip"), "{err}");
}

#[test]
fn time_sleep_sleeps_and_the_time_limit_still_stops_it() {
    // CPython sleeps with clock_nanosleep(TIMER_ABSTIME): an absolute monotonic deadline.
    let runtime = common::default_runtime();
    let code =
        "import time\nt = time.monotonic()\ntime.sleep(0.2)\nprint(time.monotonic() - t >= 0.2)";
    let started = std::time::Instant::now();
    assert_eq!(ok(&runtime, json!({"code": code})), "True\n");
    assert!(started.elapsed() >= Duration::from_millis(200));
    let mut long = request(&runtime, json!({"code": "import time\ntime.sleep(30)"}));
    long.limits.timeout = Some(Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert_eq!(runtime.run(&long).unwrap_err().kind(), ErrorKind::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the sleep ended at the time limit"
    );
    // select() on stdin, a descriptor subscription, answers at once.
    let select =
        "import select, sys\nr, _, _ = select.select([sys.stdin], [], [], 5)\nprint(len(r))";
    assert_eq!(ok(&runtime, json!({"code": select})), "1\n");
}
