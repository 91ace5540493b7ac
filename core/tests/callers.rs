//! What a caller can count on: time limits held to the clock and covering time queued, its
//! own deadline and cancellation stopping the call within milliseconds, its execution ids
//! its own, and (for a peer) mounts confined to the mount roots and opened as itself.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use megavisor_core::{
    Access, Caller, Credentials, EngineOptions, Error, ErrorKind, Identity, Limits, Mount,
    MountRoot, Request, Runtime, RuntimeOptions,
};

use common::stdout;

fn limited(tool: &str, args: &[&str], ms: u64) -> Request {
    Request::new(tool)
        .args(args.iter().copied())
        .limits(Limits {
            timeout: Some(Duration::from_millis(ms)),
            ..Limits::default()
        })
}

fn peer(uid: u32) -> Caller {
    Caller::new(Identity::Peer(Credentials {
        uid,
        gid: uid,
        groups: Vec::new().into(),
    }))
}

fn one_slot() -> Runtime {
    common::test_runtime_with(RuntimeOptions {
        engine: EngineOptions {
            max_concurrency: 1,
            max_memory_bytes: 256 << 20,
            ..EngineOptions::default()
        },
        ..RuntimeOptions::default()
    })
}

#[test]
fn time_limits_hold_to_the_clock_even_on_an_oversubscribed_machine() {
    // Twice as many spinning guests as cores, each with its own limit: every one must stop
    // at its limit, give or take a few milliseconds, not at a sum of late ticks.
    let rt = Arc::new(common::test_runtime());
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let rt = rt.clone();
            std::thread::spawn(move || {
                let limit = 150 + 50 * i;
                let started = Instant::now();
                let err = rt.run(&limited("spin", &[], limit)).unwrap_err();
                (limit, started.elapsed(), err)
            })
        })
        .collect();
    for call in calls {
        let (limit, took, err) = call.join().unwrap();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        let limit = Duration::from_millis(limit);
        assert!(
            took >= limit && took < limit + Duration::from_millis(30),
            "a {limit:?} limit took {took:?}"
        );
    }
}

#[test]
fn a_guest_asleep_in_the_host_is_stopped_at_its_limit() {
    let rt = common::test_runtime();
    let started = Instant::now();
    let err = rt.run(&limited("sleep", &["60000"], 200)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(260),
        "{:?}",
        started.elapsed()
    );
    // A short sleep still sleeps as long as it asked, and ends normally.
    let started = Instant::now();
    let out = rt.run(&Request::new("sleep").args(["50"])).unwrap();
    assert_eq!(stdout(&out), "slept\n");
    assert!(started.elapsed() >= Duration::from_millis(50));
}

#[test]
fn the_time_limit_covers_time_queued_and_queue_time_is_reported() {
    let rt = Arc::new(one_slot());
    let busy = {
        let rt = rt.clone();
        std::thread::spawn(move || rt.run(&Request::new("spin").args(["300"])).unwrap())
    };
    std::thread::sleep(Duration::from_millis(30));
    // Waits behind the busy call past its own limit: it never starts, and is not run later.
    let started = Instant::now();
    let err = rt.run(&limited("true", &[], 100)).unwrap_err();
    assert!(
        matches!(&err, Error::DeadlineExceeded { reason, .. } if reason.contains("to start")),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Timeout);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_millis(150),
        "{took:?}"
    );
    // One that can wait reports how long it did.
    let out = rt.run(&Request::new("true")).unwrap();
    assert!(
        out.timings.queue_us > 100_000,
        "queued behind a 300 ms call, reported {} µs",
        out.timings.queue_us
    );
    busy.join().unwrap();
}

#[test]
fn a_caller_that_gives_up_stops_its_call_within_milliseconds() {
    let rt = Arc::new(common::test_runtime());
    for tool in [["spin"].as_slice(), &["sleep", "60000"]] {
        let caller = Caller::process();
        let cancel = caller.cancel.clone();
        let giving_up = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            cancel.cancel();
            Instant::now()
        });
        let request = Request::new(tool[0]).args(tool[1..].iter().copied());
        let err = rt.run_for(&request, &caller).unwrap_err();
        let gave_up = giving_up.join().unwrap();
        assert!(matches!(err, Error::Cancelled { .. }), "{err}");
        assert_eq!(err.kind(), ErrorKind::Cancelled);
        assert!(
            gave_up.elapsed() < Duration::from_millis(20),
            "{:?}",
            gave_up.elapsed()
        );
    }
    // A call given up before it starts never runs.
    let caller = Caller::process();
    caller.cancel.cancel();
    let err = rt.run_for(&Request::new("true"), &caller).unwrap_err();
    assert!(matches!(err, Error::Cancelled { .. }), "{err}");
}

#[test]
fn a_retry_with_less_time_left_is_the_same_request_and_replays() {
    let rt = common::test_runtime();
    let request = Request::new("spin").args(["300"]).execution_id("retry-1");
    // The first attempt's caller stops waiting at 100 ms: stopped, and not remembered.
    let mut impatient = Caller::process();
    impatient.deadline = Some(Instant::now() + Duration::from_millis(100));
    let started = Instant::now();
    let err = rt.run_for(&request, &impatient).unwrap_err();
    assert!(matches!(err, Error::DeadlineExceeded { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_millis(150));
    // The retry (with another time limit, even) runs it to its end.
    let mut retry = request.clone();
    retry.limits.timeout = Some(Duration::from_secs(5));
    let out = rt.run(&retry).unwrap();
    assert_eq!((stdout(&out).as_str(), out.cached), ("spun\n", false));
    // Another, with almost no time left, gets that answer at once.
    let mut hurried = Caller::process();
    hurried.deadline = Some(Instant::now() + Duration::from_millis(20));
    let out = rt.run_for(&request, &hurried).unwrap();
    assert!(out.cached);
}

#[test]
fn a_principals_execution_ids_are_invisible_to_another() {
    let rt = common::test_runtime();
    let pin = |caller: &Caller, pin: &str| {
        let request = Request::new("cat").stdin(pin).execution_id("pin");
        rt.run_for(&request, caller)
    };
    let alice = peer(1000);
    assert_eq!(stdout(&pin(&alice, "4711").unwrap()), "4711");
    // Guessing alice's stdin through her id gives neither "different request" for a wrong
    // guess (an oracle) nor her answer for the right one: to anyone else it is a new id.
    for (uid, guess) in [(1001, "0000"), (1002, "4711")] {
        let out = pin(&peer(uid), guess).unwrap();
        assert!(!out.cached, "{guess} replayed from someone else's id");
        assert_eq!(stdout(&out), guess);
    }
    // And mallory's use of the id took nothing from alice.
    let replayed = pin(&alice, "4711").unwrap();
    assert!(replayed.cached && stdout(&replayed) == "4711");
}

#[test]
fn exit_statuses_up_to_255_pass_through() {
    let rt = common::test_runtime();
    for status in ["125", "126", "200", "255"] {
        let out = rt.run(&Request::new("exit").args([status])).unwrap();
        assert_eq!(out.exit_code.to_string(), status);
    }
}

#[test]
fn stdin_past_the_limit_is_refused_naming_it() {
    let rt = common::test_runtime_with(RuntimeOptions {
        max_stdin_bytes: 1000,
        ..common::options()
    });
    let err = rt
        .run(&Request::new("cat").stdin(vec![b'x'; 1001]))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert!(err.to_string().contains("limit of 1000 bytes"), "{err}");
    assert!(rt.run(&Request::new("cat").stdin(vec![b'x'; 1000])).is_ok());
}

#[test]
fn an_ad_hoc_module_is_held_to_its_memory_limit() {
    let wasm = std::fs::read(common::build_dir().join("guest/testbin.wasm")).unwrap();
    let rt = Runtime::adhoc(&wasm, "alloc", vec![], common::options()).unwrap();
    let err = rt
        .run(&Request::new("alloc").limits(Limits {
            memory_bytes: Some(16 << 20),
            ..Limits::default()
        }))
        .unwrap_err();
    assert!(
        matches!(err, Error::MemoryLimit { limit, .. } if limit == 16 << 20),
        "{err}"
    );
}

/// A mount root with, inside it, a directory of the peer's, a root-only directory and a
/// root-only file, and a symlink out of it.
struct Tree {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
}

fn tree(nobody: u32) -> Tree {
    let dir = tempfile::tempdir().unwrap();
    // The temporary directory is root's and 0700: let the peer reach the root itself.
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let root = dir.path().join("root");
    let mine = root.join("mine");
    let roots = root.join("roots");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::create_dir(&roots).unwrap();
    std::fs::set_permissions(&root, PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&mine, Some(nobody), Some(nobody)).unwrap();
    std::fs::set_permissions(&roots, PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::write(root.join("secret"), "root only").unwrap();
    std::fs::set_permissions(root.join("secret"), PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(root.join("public"), "anyone").unwrap();
    std::fs::set_permissions(root.join("public"), PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::create_dir(dir.path().join("outside")).unwrap();
    std::fs::set_permissions(dir.path().join("outside"), PermissionsExt::from_mode(0o777)).unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside"), root.join("escape")).unwrap();
    Tree { _dir: dir, root }
}

fn mount(host: &Path, access: Access) -> Mount {
    Mount {
        host: host.into(),
        guest: "/data".into(),
        access,
    }
}

#[test]
fn a_peer_mounts_only_under_the_roots_and_reaches_only_what_it_could_itself() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: acting as another user needs a root test process");
        return;
    }
    let nobody = 65534;
    let tree = tree(nobody);
    let rt = common::test_runtime_with(RuntimeOptions {
        mount_roots: vec![MountRoot {
            path: tree.root.clone(),
            access: Access::ReadWrite,
        }],
        ..common::options()
    });
    let run = |request: Request| rt.run_for(&request, &peer(nobody));
    let read = |file: &str, access| {
        run(Request::new("read")
            .args([format!("/data/{file}")])
            .mount(mount(&tree.root, access)))
        .unwrap()
    };

    // Files are opened as the peer: what root alone may read stays closed.
    assert_eq!(stdout(&read("public", Access::ReadOnly)), "anyone");
    let refused = read("secret", Access::ReadOnly);
    assert_eq!(refused.exit_code, 1);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("ermission denied"));

    // Writes land only where the peer may write, and are the peer's.
    let write = |dir: &str| {
        run(Request::new("write")
            .args([format!("/data/{dir}/note"), "hi".to_owned()])
            .mount(mount(&tree.root, Access::ReadWrite)))
        .unwrap()
    };
    assert_eq!(write("roots").exit_code, 1, "a root-only directory");
    assert!(!tree.root.join("roots/note").exists());
    assert_eq!(write("mine").exit_code, 0);
    assert_eq!(
        std::fs::metadata(tree.root.join("mine/note"))
            .unwrap()
            .uid(),
        nobody
    );

    // Sources outside every root, or leading out of one, are refused before anything runs.
    let refused = |host: &Path| {
        run(Request::new("env").mount(mount(host, Access::ReadOnly)))
            .unwrap_err()
            .to_string()
    };
    assert!(refused(Path::new("/etc")).contains("under no mount root"));
    assert!(refused(&tree.root.join("escape")).contains("leads out of its mount root"));
    assert!(refused(&tree.root.join("mine/../../outside")).contains("leads out"));
    let not_theirs = refused(&tree.root.join("roots"));
    assert!(
        not_theirs.contains("uid 65534 may not open"),
        "{not_theirs}"
    );

    // And this process's own calls are not confined: it is the caller.
    assert!(
        rt.run(&Request::new("env").mount(mount(Path::new("/etc"), Access::ReadOnly)))
            .is_ok()
    );
}

#[test]
fn a_peer_without_mount_roots_mounts_nothing() {
    let rt = common::test_runtime();
    let dir = tempfile::tempdir().unwrap();
    let err = rt
        .run_for(
            &Request::new("env").mount(mount(dir.path(), Access::ReadOnly)),
            &peer(nix::unistd::geteuid().as_raw()),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert!(err.to_string().contains("--mount-root"), "{err}");
}
