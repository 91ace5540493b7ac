//! Sessions: one instance kept alive across calls, so what a call defines is there in the
//! next; bounded in number and idle time, counted against the pool, ended by a failed call,
//! and invisible to other principals.

mod common;

use std::sync::Arc;
use std::time::Duration;

use megavisor_core::{
    Caller, Credentials, ErrorKind, Identity, Request, Runtime, RuntimeOptions, SessionOptions,
};
use serde_json::{Value, json};

fn code(runtime: &Runtime, tool: &str, session: Option<u64>, params: Value) -> Request {
    let entry = runtime
        .manifest()
        .entry(tool)
        .expect("the default bundle has it");
    let mut request = Request::new(tool).args(entry.render_arguments(&params).unwrap().args);
    request.session = session;
    request
}

fn stdout(runtime: &Runtime, request: &Request) -> String {
    let out = runtime.run(request).expect("the call runs");
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    common::stdout(&out)
}

fn runtime_with(sessions: SessionOptions, max_concurrency: u32) -> Runtime {
    let mut options: RuntimeOptions = common::options();
    options.sessions = sessions;
    options.engine.max_concurrency = max_concurrency;
    Runtime::open(
        &common::build_dir().join("bundle"),
        &common::policy(),
        options,
    )
    .unwrap()
}

#[test]
fn state_defined_in_one_call_is_there_in_the_next() {
    let runtime = common::default_runtime();
    let me = Caller::process();
    let python = runtime.open_session("python", &me).unwrap();
    let step1 = "def double(x):\n    return 2 * x\nseen = ['step 1']";
    assert_eq!(
        stdout(
            &runtime,
            &code(&runtime, "python", Some(python), json!({"code": step1}))
        ),
        ""
    );
    let step2 = "seen.append('step 2'); print(double(21), seen)";
    assert_eq!(
        stdout(
            &runtime,
            &code(&runtime, "python", Some(python), json!({"code": step2}))
        ),
        "42 ['step 1', 'step 2']\n"
    );
    // A call outside the session starts fresh.
    let fresh = code(
        &runtime,
        "python",
        None,
        json!({"code": "print('double' in globals())"}),
    );
    assert_eq!(stdout(&runtime, &fresh), "False\n");

    let js = runtime.open_session("js", &me).unwrap();
    stdout(
        &runtime,
        &code(
            &runtime,
            "js",
            Some(js),
            json!({"code": "globalThis.n = 20; function inc(x) { return x + 1 }"}),
        ),
    );
    assert_eq!(
        stdout(
            &runtime,
            &code(&runtime, "js", Some(js), json!({"code": "inc(n) * 2"}))
        ),
        "42\n"
    );

    runtime.close_session(python, &me).unwrap();
    let err = runtime
        .run(&code(
            &runtime,
            "python",
            Some(python),
            json!({"code": "print(1)"}),
        ))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionGone, "{err}");
    assert_eq!(
        runtime.close_session(python, &me).unwrap_err().kind(),
        ErrorKind::SessionGone
    );
    // The session is the tool's: another tool's call cannot name it.
    let err = runtime
        .run(&code(&runtime, "python", Some(js), json!({"code": "1"})))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest, "{err}");
}

#[test]
fn only_reactor_entries_have_sessions_and_only_their_owner_sees_them() {
    let runtime = common::default_runtime();
    for tool in ["jq", "wc"] {
        let err = runtime.open_session(tool, &Caller::process()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest, "{tool}: {err}");
    }
    let session = runtime.open_session("js", &Caller::process()).unwrap();
    let stranger = Caller::new(Identity::Peer(Credentials {
        uid: 65534,
        gid: 65534,
        groups: Arc::from([]),
    }));
    let request = code(&runtime, "js", Some(session), json!({"code": "1"}));
    assert_eq!(
        runtime.run_for(&request, &stranger).unwrap_err().kind(),
        ErrorKind::SessionGone
    );
    assert_eq!(
        runtime
            .close_session(session, &stranger)
            .unwrap_err()
            .kind(),
        ErrorKind::SessionGone
    );
    assert_eq!(stdout(&runtime, &request), "1\n", "still the owner's");
}

#[test]
fn a_failed_call_ends_its_session() {
    let runtime = common::default_runtime();
    let session = runtime.open_session("python", &Caller::process()).unwrap();
    // An exception is an exit: the session lives on.
    let raised = runtime
        .run(&code(
            &runtime,
            "python",
            Some(session),
            json!({"code": "x = 1\n1/0"}),
        ))
        .unwrap();
    assert_eq!(raised.exit_code, 1);
    assert_eq!(
        stdout(
            &runtime,
            &code(
                &runtime,
                "python",
                Some(session),
                json!({"code": "print(x)"})
            )
        ),
        "1\n"
    );
    let mut spin = code(
        &runtime,
        "python",
        Some(session),
        json!({"code": "while True: pass"}),
    );
    spin.limits.timeout = Some(Duration::from_millis(200));
    assert_eq!(runtime.run(&spin).unwrap_err().kind(), ErrorKind::Timeout);
    let after = runtime.run(&code(
        &runtime,
        "python",
        Some(session),
        json!({"code": "print(x)"}),
    ));
    assert_eq!(after.unwrap_err().kind(), ErrorKind::SessionGone);
}

#[test]
fn sessions_are_bounded_in_number_and_idle_time_and_count_against_the_pool() {
    let options = SessionOptions {
        max: 4,
        idle_ttl: Duration::from_millis(200),
    };
    let me = Caller::process();
    // With one permit, none is spare: a session would leave no room for other calls.
    let single = runtime_with(options, 1);
    let err = single.open_session("js", &me).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionGone, "{err}");
    assert!(err.to_string().contains("no permit to spare"), "{err}");
    // With three, two sessions may hold one each, and calls outside them still run.
    let runtime = runtime_with(options, 3);
    let first = runtime.open_session("js", &me).unwrap();
    runtime.open_session("python", &me).unwrap();
    assert_eq!(
        runtime.open_session("js", &me).unwrap_err().kind(),
        ErrorKind::SessionGone
    );
    let fresh = code(&runtime, "js", None, json!({"code": "1"}));
    assert_eq!(stdout(&runtime, &fresh), "1\n");
    // Idle past their time, they are gone and their permits back.
    std::thread::sleep(Duration::from_millis(600));
    let request = code(&runtime, "js", Some(first), json!({"code": "1"}));
    assert_eq!(
        runtime.run(&request).unwrap_err().kind(),
        ErrorKind::SessionGone
    );
    runtime
        .open_session("js", &me)
        .expect("room for a session again");
    runtime.open_session("js", &me).expect("and another");

    let capped = runtime_with(SessionOptions { max: 1, ..options }, 3);
    capped.open_session("js", &me).unwrap();
    let err = capped.open_session("js", &me).unwrap_err();
    assert!(err.to_string().contains("1 sessions are open"), "{err}");
}

#[test]
fn a_caller_that_gives_up_ends_the_session_and_a_stranger_never_waits_for_it() {
    let runtime = Arc::new(common::default_runtime());
    let owner = Caller::process();
    let session = runtime.open_session("python", &owner).unwrap();
    let spin = code(
        &runtime,
        "python",
        Some(session),
        json!({"code": "while True: pass"}),
    );
    let running = {
        let runtime = runtime.clone();
        let owner = owner.clone();
        std::thread::spawn(move || runtime.run_for(&spin, &owner))
    };
    std::thread::sleep(Duration::from_millis(200));
    // Another uid naming the busy session is told at once that there is none.
    let stranger = Caller::new(Identity::Peer(Credentials {
        uid: 65534,
        gid: 65534,
        groups: Arc::from([]),
    }));
    let probe = code(
        &runtime,
        "python",
        Some(session),
        json!({"code": "print(1)"}),
    );
    let asked = std::time::Instant::now();
    let err = runtime.run_for(&probe, &stranger).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionGone);
    assert!(
        asked.elapsed() < Duration::from_millis(100),
        "{:?}",
        asked.elapsed()
    );
    // The owner's second call is refused at once: waiting, it would hold a thread.
    let asked = std::time::Instant::now();
    let err = runtime.run_for(&probe, &Caller::process()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest, "{err}");
    assert!(err.to_string().contains("one at a time"), "{err}");
    assert!(
        asked.elapsed() < Duration::from_millis(100),
        "{:?}",
        asked.elapsed()
    );
    owner.cancel.cancel();
    let err = running.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    let after = runtime.run(&code(
        &runtime,
        "python",
        Some(session),
        json!({"code": "print(1)"}),
    ));
    assert_eq!(after.unwrap_err().kind(), ErrorKind::SessionGone);
}
