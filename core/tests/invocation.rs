//! One invocation through the public API: every error kind, the sandbox, limits, output,
//! artifacts and idempotency, against the real test megabinary built from `guest/testbin`.

mod common;

use std::time::{Duration, Instant};

use megavisor_core::{Access, Capability, ErrorKind, Limits, Mount, Request, ToolRef};

use common::stdout;

fn run_err(request: &Request) -> megavisor_core::Error {
    match common::test_runtime().run(request) {
        Ok(out) => panic!(
            "expected an error, got exit {} stdout {:?}",
            out.exit_code,
            stdout(&out)
        ),
        Err(e) => e,
    }
}

#[test]
fn runtime_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<megavisor_core::Runtime>();
}

#[test]
fn args_exit_code_and_stdin_pass_through() {
    let rt = common::test_runtime();
    let out = rt.run(&Request::new("args").args(["a b", "--c"])).unwrap();
    assert_eq!(stdout(&out), "args\na b\n--c\n");
    assert_eq!(
        rt.run(&Request::new("exit").args(["42"]))
            .unwrap()
            .exit_code,
        42
    );
    let out = rt
        .run(&Request::new("cat").stdin(b"piped \x00 bytes".to_vec()))
        .unwrap();
    assert_eq!(out.stdout, b"piped \x00 bytes");
    let t = out.timings;
    assert!(t.total_us >= t.instantiate_us + t.run_us, "{t:?}");
}

#[test]
fn every_invocation_gets_a_fresh_instance() {
    let rt = common::test_runtime();
    for _ in 0..20 {
        let out = rt.run(&Request::new("counter")).unwrap();
        assert_eq!(stdout(&out), "counter=1 dirty=0\n");
    }
}

#[test]
fn tool_not_found_lists_what_exists() {
    let err = run_err(&Request::new("nosuchtool"));
    assert_eq!(err.kind(), ErrorKind::ToolNotFound);
    assert!(
        err.to_string().contains("nosuchtool") && err.to_string().contains("counter"),
        "{err}"
    );
    let mut by_digest = Request::new("x");
    by_digest.tool = ToolRef::Digest("ab".repeat(32));
    assert_eq!(run_err(&by_digest).kind(), ErrorKind::ToolNotFound);
}

#[test]
fn tool_by_digest_of_its_native_original() {
    let Ok((digests, _)) = megavisor_core::Digests::of_file("/bin/true".as_ref()) else {
        panic!("/bin/true must exist on this machine");
    };
    let mut request = Request::new("unused");
    request.tool = ToolRef::Digest(digests.blake3);
    let out = common::test_runtime().run(&request).unwrap();
    assert_eq!(out.tool, "true");
}

#[test]
fn timeout_stops_a_spinning_guest() {
    let rt = common::test_runtime();
    // Let the epoch ticker go idle and park, so this also proves the first call after an
    // idle spell wakes it.
    std::thread::sleep(Duration::from_millis(400));
    let started = Instant::now();
    let err = rt
        .run(&Request::new("spin").limits(Limits {
            timeout: Some(Duration::from_millis(200)),
            ..Limits::default()
        }))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.to_string().contains("200 ms"), "{err}");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[test]
fn memory_limit_stops_an_unbounded_allocation() {
    let err = run_err(&Request::new("alloc").limits(Limits {
        memory_bytes: Some(32 << 20),
        ..Limits::default()
    }));
    assert_eq!(err.kind(), ErrorKind::MemoryLimit);
    assert!(err.to_string().contains("limit is 33554432 bytes"), "{err}");
}

#[test]
fn trap_is_reported_with_partial_output() {
    let err = run_err(&Request::new("trap"));
    assert_eq!(err.kind(), ErrorKind::Trap);
    assert!(err.to_string().contains("unreachable"), "{err}");
    assert!(err.partial_output().is_some());
}

#[test]
fn bad_requests_are_refused_before_running() {
    let cases = [
        Request::new("true").execution_id("../escape"),
        Request::new("true").limits(Limits {
            memory_bytes: Some(1 << 40),
            ..Limits::default()
        }),
        Request::new("true").limits(Limits {
            timeout: Some(Duration::ZERO),
            ..Limits::default()
        }),
        Request::new("read").mount(Mount {
            host: "/tmp".into(),
            guest: "relative".into(),
            access: Access::ReadOnly,
        }),
        Request::new("env").env("MEGAVISOR_EXECUTION_ID", "spoof"),
        Request::new("args").args(["nul\0byte"]),
    ];
    for request in cases {
        let err = run_err(&request);
        assert_eq!(err.kind(), ErrorKind::BadRequest, "{request:?}: {err}");
    }
}

#[test]
fn capabilities_are_enforced_and_only_narrowed() {
    // `true` declares no capabilities: no mounts, no environment.
    let dir = tempfile::tempdir().unwrap();
    let err = run_err(&Request::new("true").mount(Mount {
        host: dir.path().into(),
        guest: "/data".into(),
        access: Access::ReadOnly,
    }));
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert!(err.to_string().starts_with("EACCES"), "{err}");
    assert_eq!(
        run_err(&Request::new("true").env("HOME", "/")).kind(),
        ErrorKind::NotAllowed
    );
    // A request may narrow `read` to reading /data only, and then cannot mount it writable.
    let mut narrowed = Request::new("read").mount(Mount {
        host: dir.path().into(),
        guest: "/data".into(),
        access: Access::ReadWrite,
    });
    narrowed.capabilities = Some(vec![Capability::FsRead("/data".into())]);
    assert_eq!(run_err(&narrowed).kind(), ErrorKind::NotAllowed);
    let mut widened = Request::new("true");
    widened.capabilities = Some(vec![Capability::Env("*".into())]);
    assert_eq!(run_err(&widened).kind(), ErrorKind::NotAllowed);
}

#[test]
fn environment_holds_only_what_was_passed() {
    let out = common::test_runtime()
        .run(
            &Request::new("env")
                .env("GREETING", "hi")
                .execution_id("env-check-1"),
        )
        .unwrap();
    assert_eq!(
        stdout(&out),
        "GREETING=hi\nMEGAVISOR_EXECUTION_ID=env-check-1\n"
    );
}

#[test]
fn mounts_are_read_only_or_read_write_as_asked() {
    let rt = common::test_runtime();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "from host").unwrap();
    let ro = Mount {
        host: dir.path().into(),
        guest: "/data".into(),
        access: Access::ReadOnly,
    };
    let out = rt
        .run(
            &Request::new("read")
                .args(["/data/in.txt"])
                .mount(ro.clone()),
        )
        .unwrap();
    assert_eq!(stdout(&out), "from host");
    let out = rt
        .run(&Request::new("write").args(["/data/new.txt", "x"]).mount(ro))
        .unwrap();
    assert_eq!(out.exit_code, 1, "write to a read-only mount must fail");
    assert!(!dir.path().join("new.txt").exists());
    let rw = Mount {
        access: Access::ReadWrite,
        ..Mount::parse(&format!("{}:/data", dir.path().display())).unwrap()
    };
    let out = rt
        .run(
            &Request::new("write")
                .args(["/data/new.txt", "written"])
                .mount(rw),
        )
        .unwrap();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("new.txt")).unwrap(),
        "written"
    );
}

#[test]
fn nothing_outside_the_mount_is_reachable() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "s").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("inside"), "i").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link-out")).unwrap();
    std::os::unix::fs::symlink("../", dir.path().join("up")).unwrap();
    let out = common::test_runtime()
        .run(
            &Request::new("probe")
                .args([
                    "/data/inside",
                    "/data/sub/../inside",
                    "/data/..",
                    "/data/../etc/passwd",
                    "/etc/passwd",
                    "/data/link-out",
                    "/data/up/etc/passwd",
                    &format!("{}/secret", outside.path().display()),
                ])
                .mount(Mount {
                    host: dir.path().into(),
                    guest: "/data".into(),
                    access: Access::ReadWrite,
                }),
        )
        .unwrap();
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines[0], "OK /data/inside");
    assert_eq!(
        lines[1], "OK /data/sub/../inside",
        "`..` that stays inside is fine"
    );
    for line in &lines[2..] {
        assert!(line.starts_with("DENIED "), "escaped the mount: {line}");
    }
    assert_eq!(out.exit_code, 2, "exactly two opens succeed");
}

#[test]
fn output_is_capped_but_the_tail_is_exact() {
    let rt = common::test_runtime();
    let full = rt.run(&Request::new("flood").args(["100000"])).unwrap();
    assert_eq!(full.stdout.len(), 100_000);
    let capped = rt
        .run(&Request::new("flood").args(["100000"]).limits(Limits {
            output_bytes: Some(1000),
            ..Limits::default()
        }))
        .unwrap();
    assert_eq!(capped.exit_code, 0, "the guest never sees the cap");
    assert_eq!(capped.stdout, &full.stdout[..1000]);
    assert!(capped.stdout_truncated());
    assert_eq!(capped.stdout_total, 100_000);
    assert_eq!(
        capped.stdout_tail,
        &full.stdout[100_000 - megavisor_core::TAIL_BYTES..]
    );
    let err = rt.run(&Request::new("stderr").args(["oops"])).unwrap();
    assert_eq!(err.stderr, b"oops\n");
}

#[test]
fn artifacts_from_last_line_and_out_dir() {
    let out_root = tempfile::tempdir().unwrap();
    let mut options = common::options();
    options.out_dir = Some(out_root.path().to_owned());
    let rt = common::test_runtime_with(options);
    let out = rt.run(&Request::new("artifacts")).unwrap();
    assert_eq!(
        out.artifacts.get("report").map(String::as_str),
        Some("/out/report.txt")
    );
    assert_eq!(out.artifacts.get("count").map(String::as_str), Some("2"));
    assert!(
        !out.artifacts.contains_key("file"),
        "no out dir without an execution id"
    );
    let out = rt
        .run(&Request::new("artifacts").execution_id("art-1"))
        .unwrap();
    assert_eq!(
        out.artifacts.get("file").map(String::as_str),
        Some("from-out-dir")
    );
    assert_eq!(
        out.artifacts.get("report").map(String::as_str),
        Some("/out/report.txt")
    );
    assert!(out_root.path().join("art-1/art-1.json").exists());
}

#[test]
fn repeated_execution_id_replays_without_running() {
    let rt = common::test_runtime();
    let dir = tempfile::tempdir().unwrap();
    let append = |id: &str| {
        Request::new("write")
            .args(["/data/marker", id])
            .mount(Mount {
                host: dir.path().into(),
                guest: "/data".into(),
                access: Access::ReadWrite,
            })
            .execution_id(id)
    };
    let first = rt.run(&append("idem-1")).unwrap();
    assert!(!first.cached);
    std::fs::remove_file(dir.path().join("marker")).unwrap();
    let replay = rt.run(&append("idem-1")).unwrap();
    assert!(replay.cached);
    assert!(
        !dir.path().join("marker").exists(),
        "a replay must not run the tool again"
    );
    let err = rt.run(&append("idem-1").env("X", "y")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert!(err.to_string().contains("different request"), "{err}");
    // Failures replay too, with the same kind.
    let trap = Request::new("trap").execution_id("idem-trap");
    assert_eq!(rt.run(&trap).unwrap_err().kind(), ErrorKind::Trap);
    assert_eq!(rt.run(&trap).unwrap_err().kind(), ErrorKind::Trap);
}

#[test]
fn concurrent_callers_each_get_their_own_result() {
    let rt = std::sync::Arc::new(common::test_runtime());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let rt = rt.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let payload = format!("thread {t} call {i}");
                    let out = rt
                        .run(&Request::new("cat").stdin(payload.clone().into_bytes()))
                        .unwrap();
                    assert_eq!(stdout(&out), payload);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn native_binary_lookup_by_content_hash() {
    let rt = common::test_runtime();
    assert_eq!(
        rt.entry_for_native("/bin/true".as_ref()).unwrap().name,
        "true"
    );
    let err = rt.entry_for_native("/bin/sh".as_ref()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    let msg = err.to_string();
    assert!(
        msg.starts_with("EACCES: /bin/sh (sha256 ") && msg.ends_with("is not in the manifest"),
        "{msg}"
    );
}
