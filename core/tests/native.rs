//! Native tools: allowlisted host binaries behind the same API as the megabinary's entries
//! (the allowlist by path and by digest, process handling).

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use megavisor_core::native::{AllowlistConfig, NativeOptions};
use megavisor_core::{ErrorKind, Request, Runtime, RuntimeOptions, ToolRef};

/// A runtime on the test bundle with native tools allowed by `allowlist`.
fn runtime(allowlist: AllowlistConfig) -> Runtime {
    runtime_with(NativeOptions {
        allowlist,
        ..NativeOptions::default()
    })
}

fn runtime_with(native: NativeOptions) -> Runtime {
    common::test_runtime_with(RuntimeOptions {
        native: Some(native),
        ..common::options()
    })
}

fn paths(paths: &[&str]) -> AllowlistConfig {
    AllowlistConfig {
        paths: paths.iter().map(PathBuf::from).collect(),
        ..AllowlistConfig::default()
    }
}

fn native(path: impl AsRef<Path>) -> Request {
    let mut request = Request::new("unused");
    request.tool = ToolRef::Native(path.as_ref().to_owned());
    request
}

fn kind(runtime: &Runtime, request: &Request) -> ErrorKind {
    runtime.run(request).expect_err("refused").kind()
}

fn sha256(path: &str) -> String {
    megavisor_core::Digests::of_file(Path::new(path))
        .unwrap()
        .0
        .sha256
}

#[test]
fn a_listed_binary_runs_with_stdin_args_and_exit_code() {
    let rt = runtime(paths(&["/usr/bin/wc", "/bin/false"]));
    let out = rt
        .run(&native("/usr/bin/wc").args(["-l"]).stdin("a\nb\nc\n"))
        .unwrap();
    assert_eq!((out.exit_code, common::stdout(&out).trim()), (0, "3"));
    assert_eq!(out.tool, "/usr/bin/wc");
    assert_eq!(rt.run(&native("/bin/false")).unwrap().exit_code, 1);
}

#[test]
fn an_unlisted_binary_is_not_allowed() {
    let rt = runtime(paths(&["/usr/bin/wc"]));
    let err = rt.run(&native("/bin/ls")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert!(err.to_string().contains("/bin/ls"), "{err}");
    assert_eq!(
        kind(&rt, &native("wc")),
        ErrorKind::NotAllowed,
        "relative paths"
    );
    let without = common::test_runtime();
    assert_eq!(
        kind(&without, &native("/usr/bin/wc")),
        ErrorKind::NotAllowed
    );
}

#[test]
fn a_listed_path_whose_content_changed_is_refused_when_digests_are_set() {
    let dir = tempfile::tempdir().unwrap();
    let tool = dir.path().join("tool");
    std::fs::copy("/bin/true", &tool).unwrap();
    let rt = runtime(AllowlistConfig {
        paths: vec![tool.clone()],
        digests: vec![sha256("/bin/true")],
        ..AllowlistConfig::default()
    });
    assert_eq!(rt.run(&native(&tool)).unwrap().exit_code, 0);
    std::fs::remove_file(&tool).unwrap();
    std::fs::copy("/bin/false", &tool).unwrap();
    let err = rt.run(&native(&tool)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert!(
        err.to_string()
            .contains("matches none of the allowed digests"),
        "{err}"
    );
}

#[test]
fn a_digest_allows_a_binary_wherever_it_lies() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("anywhere");
    std::fs::copy("/bin/true", &copy).unwrap();
    let rt = runtime(AllowlistConfig {
        digests: vec![sha256("/bin/true")],
        ..AllowlistConfig::default()
    });
    assert_eq!(rt.run(&native(&copy)).unwrap().exit_code, 0);
    let err = rt.run(&native("/bin/false")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    // No digest of an unlisted file: refusals must not tell the hash of any readable file.
    assert!(!err.to_string().contains("sha256"), "{err}");
    assert_eq!(
        kind(&rt, &native("/dev/zero")),
        ErrorKind::NotAllowed,
        "not a regular file"
    );
}

#[test]
fn a_call_returns_when_its_leader_ends_even_if_an_escapee_holds_its_output() {
    let rt = runtime(paths(&["/bin/sh"]));
    let marker = format!("megavisor-holder-{}", std::process::id());
    let started = std::time::Instant::now();
    let out = rt
        .run(&native("/bin/sh").args([
            "-c",
            &format!("setsid sh -c 'exec -a {marker} sleep 30' & echo left"),
        ]))
        .unwrap();
    assert_eq!(common::stdout(&out).trim(), "left");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Without a sandbox nothing contains it: the test cleans up after itself.
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&marker)
            && let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The allowlist file's rules, one by one, with a fast reload for the test.
#[test]
fn the_allowlist_file_comments_symlinks_and_hot_reload() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("driver.allow");
    let link = dir.path().join("link-to-true");
    symlink("/bin/true", &link).unwrap();
    let reload = Duration::from_millis(50);
    let write = |text: &str| {
        std::fs::write(&list, text).unwrap();
        std::thread::sleep(reload * 3); // past the check interval, and a new mtime
    };
    write(&format!(
        "# tools\n\n/usr/bin/wc   # counts\n#/bin/false\n{}\n",
        link.display()
    ));
    let rt = runtime(AllowlistConfig {
        file: Some(list.clone()),
        reload_every: reload,
        ..AllowlistConfig::default()
    });
    // A trailing ` #` comment does not hide the path before it.
    assert!(rt.run(&native("/usr/bin/wc").stdin("x\n")).is_ok());
    // A commented line allows nothing.
    assert_eq!(kind(&rt, &native("/bin/false")), ErrorKind::NotAllowed);
    // The listed symlink allows its target, by any path that resolves to it.
    assert_eq!(rt.run(&native("/bin/true")).unwrap().exit_code, 0);
    assert_eq!(rt.run(&native(&link)).unwrap().exit_code, 0);

    // Re-read when it changes.
    write("/bin/false\n");
    assert_eq!(rt.run(&native("/bin/false")).unwrap().exit_code, 1);
    assert_eq!(kind(&rt, &native("/usr/bin/wc")), ErrorKind::NotAllowed);

    // Missing, then unreadable (a directory in its place): the last set stays.
    std::fs::remove_file(&list).unwrap();
    std::thread::sleep(reload * 3);
    assert_eq!(rt.run(&native("/bin/false")).unwrap().exit_code, 1);
    std::fs::create_dir(&list).unwrap();
    std::thread::sleep(reload * 3);
    assert_eq!(rt.run(&native("/bin/false")).unwrap().exit_code, 1);
}

#[test]
fn only_the_runtime_variables_and_allowed_ones_reach_the_process() {
    let rt = runtime_with(NativeOptions {
        allowlist: paths(&["/usr/bin/env"]),
        env: vec!["TOOL_*".to_owned(), "LANG".to_owned()],
        ..NativeOptions::default()
    });
    let mut request = native("/usr/bin/env")
        .env("TOOL_MODE", "fast")
        .env("LANG", "C");
    request.execution_id = Some(format!("env-{}", std::process::id()));
    let out = rt.run(&request).unwrap();
    let mut lines: Vec<_> = common::stdout(&out).lines().map(str::to_owned).collect();
    lines.sort();
    let id = request.execution_id.clone().unwrap();
    assert_eq!(
        lines,
        [
            "LANG=C".to_owned(),
            format!("MEGAVISOR_EXECUTION_ID={id}"),
            "TOOL_MODE=fast".to_owned()
        ]
    );
    let refused = native("/usr/bin/env").env("SECRET", "x");
    let err = rt.run(&refused).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert!(err.to_string().contains("SECRET"), "{err}");
}

#[test]
fn a_timeout_kills_the_whole_process_tree() {
    let rt = runtime(paths(&["/bin/sh"]));
    // The shell is only the test's way to make a tree: it starts a grandchild, prints its
    // pid and waits.
    let mut request = native("/bin/sh").args(["-c", "sleep 60 & echo $!; wait"]);
    request.limits.timeout = Some(Duration::from_millis(300));
    let err = rt.run(&request).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    let partial = err.partial_output().expect("partial output");
    let grandchild: u32 = common::stdout(partial).trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let state = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains(") Z "),
        "the grandchild {grandchild} survived: {state}"
    );
}

#[test]
fn tails_totals_artifacts_and_idempotency_as_for_wasm_tools() {
    let out_dir = tempfile::tempdir().unwrap();
    let rt = common::test_runtime_with(RuntimeOptions {
        native: Some(NativeOptions {
            allowlist: paths(&["/bin/sh", "/usr/bin/head"]),
            ..NativeOptions::default()
        }),
        out_dir: Some(out_dir.path().to_owned()),
        max_output_bytes: 1000,
        ..common::options()
    });
    // 20,000 bytes of output: the first 1000 kept, the last 8 KiB as the tail.
    let mut big = native("/usr/bin/head").args(["-c", "20000", "/dev/zero"]);
    big.limits.output_bytes = Some(1000);
    let out = rt.run(&big).unwrap();
    assert_eq!((out.stdout.len(), out.stdout_total), (1000, 20_000));
    assert_eq!(out.stdout_tail.len(), megavisor_core::TAIL_BYTES);

    let script = "echo working; \
        printf '{\"artifacts\":{\"file\":\"from-out-dir\"}}' > \"$MEGAVISOR_OUT_DIR/$MEGAVISOR_EXECUTION_ID.json\"; \
        echo '{\"artifacts\":{\"report\":\"/out/r.txt\"}}'";
    let mut request = native("/bin/sh").args(["-c", script]);
    request.execution_id = Some(format!("art-{}", std::process::id()));
    let first = rt.run(&request).unwrap();
    assert_eq!(
        first.artifacts.get("report").map(String::as_str),
        Some("/out/r.txt")
    );
    assert_eq!(
        first.artifacts.get("file").map(String::as_str),
        Some("from-out-dir")
    );
    let again = rt.run(&request).unwrap();
    assert!(again.cached && !first.cached);
    assert_eq!(again.stdout, first.stdout);
}

#[test]
fn wasm_only_options_are_bad_requests_for_native_tools() {
    let rt = runtime(paths(&["/bin/true"]));
    let mut request = native("/bin/true");
    request.limits.memory_bytes = Some(1 << 20);
    assert_eq!(kind(&rt, &request), ErrorKind::BadRequest);
}

/// A manifest entry served by its native fallback (the test bundle's `native-wc`, whose
/// fallback is /usr/bin/wc): named, described and rendered like any entry, run natively
/// when the allowlist allows it.
#[test]
fn a_manifest_entry_can_be_served_by_its_native_fallback() {
    let rt = runtime(paths(&["/usr/bin/wc"]));
    let entry = rt
        .manifest()
        .entry("native-wc")
        .expect("the test bundle declares it");
    assert_eq!(entry.served_natively(), Some(Path::new("/usr/bin/wc")));
    let params = serde_json::json!({"lines": true, "stdin": "a\nb\nc\n"});
    let rendered = entry.render_arguments(&params).unwrap();
    let out = rt
        .run(
            &Request::new("native-wc")
                .args(rendered.args)
                .stdin(rendered.stdin.unwrap()),
        )
        .unwrap();
    assert_eq!(
        (common::stdout(&out).trim(), out.tool.as_str()),
        ("3", "native-wc")
    );
    assert!(out.usage.is_some());
    let without = common::test_runtime();
    let err = without.run(&Request::new("native-wc")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed, "{err}");
}

fn peer(uid: u32) -> megavisor_core::Caller {
    megavisor_core::Caller::new(megavisor_core::Identity::Peer(
        megavisor_core::Credentials {
            uid,
            gid: uid,
            groups: Vec::new().into(),
        },
    ))
}

#[test]
fn a_peers_native_tool_runs_as_the_peer_and_names_only_what_it_can_read() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: acting as another user needs a root test process");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A copy of `id` in a directory only root may enter: listed, but not the peer's to run.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let hidden = dir.path().join("id");
    std::fs::copy("/usr/bin/id", &hidden).unwrap();
    let rt = runtime(AllowlistConfig {
        paths: vec!["/usr/bin/id".into(), hidden.clone()],
        ..AllowlistConfig::default()
    });
    let out = rt
        .run_for(&native("/usr/bin/id").args(["-u"]), &peer(65534))
        .unwrap();
    assert_eq!(
        common::stdout(&out).trim(),
        "65534",
        "not the supervisor's uid"
    );
    let out = rt.run(&native("/usr/bin/id").args(["-u"])).unwrap();
    assert_eq!(
        common::stdout(&out).trim(),
        "0",
        "this process's own calls are its own"
    );
    let err = rt.run_for(&native(&hidden), &peer(65534)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed, "{err}");
}

#[test]
fn a_native_tool_stops_when_its_caller_gives_up_or_its_deadline_passes() {
    let rt = runtime(paths(&["/bin/sleep"]));
    let caller = megavisor_core::Caller::process();
    let cancel = caller.cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        cancel.cancel();
    });
    let started = std::time::Instant::now();
    let err = rt
        .run_for(&native("/bin/sleep").args(["30"]), &caller)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );

    let mut hurried = megavisor_core::Caller::process();
    hurried.deadline = Some(std::time::Instant::now() + Duration::from_millis(80));
    let started = std::time::Instant::now();
    let err = rt
        .run_for(&native("/bin/sleep").args(["30"]), &hurried)
        .unwrap_err();
    assert!(
        matches!(err, megavisor_core::Error::DeadlineExceeded { .. }),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}
