//! `megavisor serve` as clients meet it: a real supervisor process, real client processes,
//! real bundles from the set-up.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Supervisor, bundle, raw_ring_connection, test_bundle, wait_until};
use megavisor_client::{Call, Client, ConnectOptions, ErrorKind, Transport};
use megavisor_wire::proto;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

#[test]
fn readiness_line_reports_startup_timings_and_socket_is_private() {
    let supervisor = Supervisor::start(&bundle(), &[]);
    for field in [
        "verify_ms=",
        "load_ms=",
        "warm_ms=",
        "modules=5",
        "tools=21",
        "socket=",
    ] {
        assert!(
            supervisor.ready_line.contains(field),
            "{}",
            supervisor.ready_line
        );
    }
    let mode = std::fs::metadata(&supervisor.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let client = supervisor.client();
    assert!(client.server().starts_with("megavisor/"));
    let out = client
        .call(&Call::new("echo").args(["over", "the", "ring"]))
        .unwrap();
    assert_eq!(out.stdout, b"over the ring\n");
    let tools = client.tools().unwrap();
    assert_eq!(tools.bundle, "default");
    assert!(
        tools
            .tools
            .iter()
            .any(|t| t.name == "wc" && !t.arguments_schema_json.is_empty())
    );
}

#[test]
fn systemd_is_told_when_the_supervisor_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _supervisor =
        Supervisor::start_with_env(&bundle(), &[], &[("NOTIFY_SOCKET", &notify_path)]);
    let mut message = [0u8; 256];
    let n = notify.recv(&mut message).unwrap();
    let message = String::from_utf8_lossy(&message[..n]);
    assert!(message.contains("READY=1"), "{message}");
}

#[test]
fn thousands_of_calls_from_several_processes_each_get_exactly_their_own_reply() {
    let supervisor = Supervisor::start(&bundle(), &[]);
    let load = Path::new(env!("CARGO_BIN_EXE_megavisor")).with_file_name("megavisor-bench");
    assert!(
        load.exists(),
        "{} missing: run `make setup` first",
        load.display()
    );
    let (processes, threads, calls) = (4, 4, 250);
    let children: Vec<Child> = (0..processes)
        .map(|_| {
            Command::new(&load)
                .args(["client", "--check", "--socket"])
                .arg(&supervisor.socket)
                .args([
                    "--threads",
                    &threads.to_string(),
                    "--iterations",
                    &calls.to_string(),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut checked = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        checked += report["checked"].as_u64().unwrap();
    }
    assert_eq!(checked, (processes * threads * calls) as u64);
}

#[test]
fn the_socket_transport_carries_the_same_calls() {
    let supervisor = Supervisor::start(&bundle(), &["--ring-request-spill", "4M"]);
    let options = ConnectOptions {
        transport: Transport::Socket,
        ..ConnectOptions::default()
    };
    let client = Client::connect_with(&supervisor.socket, &options).unwrap();
    let out = client
        .call(&Call::new("wc").args(["-l"]).stdin(b"a\nb\n".as_slice()))
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    let big = vec![b'z'; 3 << 20];
    let out = client
        .call(&Call::new("wc").args(["-c"]).stdin(big))
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        (3 << 20).to_string()
    );
}

#[test]
fn error_kinds_and_partial_output_cross_the_ring() {
    let supervisor = Supervisor::start(&test_bundle(), &[]);
    let client = supervisor.client();
    let err = client.call(&Call::new("nope")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ToolNotFound);
    assert!(err.to_string().contains("available:"), "{err}");
    let err = client
        .call(&Call::new("spin").timeout(Duration::from_millis(50)))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    let err = client.call(&Call::new("trap")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Trap, "{err}");
    let err = client
        .call(&Call::new("alloc").memory_bytes(4 << 20))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MemoryLimit, "{err}");
    let err = client
        .call(&Call::new("true").env("SECRET", "x"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed, "{err}");
    let err = client
        .call(&Call::new("echo").args(["a"]).params_json("{}"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest, "{err}");
    // A failed call leaves the connection usable.
    assert_eq!(client.call(&Call::new("true")).unwrap().exit_code, 0);
}

#[test]
fn native_tools_run_through_the_ring_under_the_allowlist_and_the_sandbox() {
    let plain = Supervisor::start(&bundle(), &[]);
    let err = plain
        .client()
        .call(&Call::native("/usr/bin/wc"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed, "{err}");

    let mut flags = vec![
        "--allow-binary",
        "/usr/bin/wc",
        "--allow-binary",
        "/usr/bin/id",
    ];
    let root = nix::unistd::geteuid().is_root();
    if root {
        flags.push("--sandbox");
    } else {
        eprintln!("NOTE: not root: the sandboxed half of this test is skipped");
    }
    let supervisor = Supervisor::start(&bundle(), &flags);
    let client = supervisor.client();
    let out = client
        .call(
            &Call::native("/usr/bin/wc")
                .args(["-l"])
                .stdin(b"a\nb\n".as_slice()),
        )
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    let usage = out.usage.expect("native calls report their usage");
    assert!(usage.user_us + usage.system_us > 0 || usage.peak_memory_bytes > 0);
    let err = client.call(&Call::native("/bin/ls")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed, "{err}");
    if root {
        let out = client
            .call(&Call::native("/usr/bin/id").args(["-u"]))
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "65534");
        assert_eq!(out.usage.unwrap().cgroup, "v1");
    }
}

#[test]
fn json_params_are_rendered_through_the_entry_schema() {
    let supervisor = Supervisor::start(&bundle(), &[]);
    let client = supervisor.client();
    let out = client
        .call(&Call::new("wc").params_json(r#"{"lines": true, "stdin": "a\nb\nc\n"}"#))
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    let err = client
        .call(&Call::new("wc").params_json(r#"{"shell": "rm -rf /"}"#))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest, "{err}");
}

#[test]
fn oversized_messages_get_clear_errors_or_arrive_cut_and_the_connection_survives() {
    let supervisor = Supervisor::start(&bundle(), &["--ring-reply-spill", "64K"]);
    let client = supervisor.client();
    let err = client
        .call(&Call::new("cat").stdin(vec![b'x'; 2 << 20]))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert!(err.to_string().contains("exceeds"), "{err}");
    // A reply over the connection's limit arrives cut to fit, with its totals and tail.
    let out = client
        .call(&Call::new("cat").stdin(vec![b'y'; 200 << 10]))
        .unwrap();
    assert!(out.stdout.len() < 64 << 10 && out.stdout.len() > 40 << 10);
    assert_eq!(out.stdout_total, 200 << 10);
    assert_eq!(out.stdout_tail, vec![b'y'; 8 << 10]);
    let out = client
        .call(
            &Call::new("cat")
                .stdin(vec![b'y'; 200 << 10])
                .output_bytes(1000),
        )
        .unwrap();
    assert_eq!(out.stdout.len(), 1000);
    assert_eq!(out.stdout_total, 200 << 10);
}

#[test]
fn a_long_call_does_not_hold_up_the_next_call_on_the_same_connection() {
    let supervisor = Supervisor::start(&test_bundle(), &[]);
    let client = supervisor.client();
    let long = client.call_async(&Call::new("spin").args(["1500"]));
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let out = client.call(&Call::new("true")).unwrap();
    let quick = started.elapsed();
    assert_eq!(out.exit_code, 0);
    assert!(
        quick < Duration::from_millis(700),
        "the short call waited {quick:?}"
    );
    let long = pollster::block_on(long).unwrap();
    assert_eq!(long.stdout, b"spun\n");
}

#[test]
fn a_busy_supervisor_refuses_instead_of_queueing_without_bound() {
    let supervisor = Supervisor::start(
        &test_bundle(),
        &["--max-concurrency", "1", "--queue-depth", "0"],
    );
    let holder = supervisor.client();
    let long = holder.call_async(&Call::new("spin").args(["800"]));
    std::thread::sleep(Duration::from_millis(100));
    let err = supervisor.client().call(&Call::new("true")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    assert!(err.to_string().contains("--max-concurrency 1"), "{err}");
    pollster::block_on(long).unwrap();
    assert_eq!(
        supervisor
            .client()
            .call(&Call::new("true"))
            .unwrap()
            .exit_code,
        0
    );
}

#[test]
fn a_client_killed_mid_call_leaves_the_others_served_and_its_slot_and_ring_reclaimed() {
    let supervisor = Supervisor::start(&test_bundle(), &["--max-concurrency", "1"]);
    let survivor = supervisor.client();
    assert_eq!(supervisor.rings_mapped(), 1);
    let mut victim = Command::new(env!("CARGO_BIN_EXE_megavisor"))
        .args(["run", "--socket"])
        .arg(&supervisor.socket)
        .args(["--timeout", "1s", "spin"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the victim's ring", Duration::from_secs(10), || {
        supervisor.rings_mapped() == 2
    });
    std::thread::sleep(Duration::from_millis(100));
    victim.kill().unwrap();
    victim.wait().unwrap();
    // The only guest slot is still busy with the dead client's call until its time limit;
    // then it is reused for the survivor.
    let out = survivor
        .call(&Call::new("cat").stdin(b"still here".as_slice()))
        .unwrap();
    assert_eq!(out.stdout, b"still here");
    wait_until(
        "the dead client's ring to be unmapped",
        Duration::from_secs(10),
        || supervisor.rings_mapped() == 1,
    );
    assert_eq!(survivor.call(&Call::new("true")).unwrap().exit_code, 0);
}

/// Writes `bytes` at `offset` of the ring, as a hostile client could.
fn scribble(memfd: &OwnedFd, offset: u64, bytes: &[u8]) {
    nix::sys::uio::pwrite(memfd.as_fd(), bytes, offset as i64).unwrap();
}

fn ring_doorbell(wake_server: &OwnedFd) {
    nix::unistd::write(wake_server, &1u64.to_ne_bytes()).unwrap();
}

fn assert_disconnected(mut stream: UnixStream) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut byte = [0u8; 1];
    let n = stream
        .read(&mut byte)
        .expect("the supervisor closes, not times out");
    assert_eq!(n, 0, "connection closed by the supervisor");
}

#[test]
fn a_client_that_corrupts_its_ring_is_disconnected_and_nobody_else_notices() {
    let supervisor = Supervisor::start(&bundle(), &[]);
    let bystander = supervisor.client();
    assert_eq!(bystander.call(&Call::new("true")).unwrap().exit_code, 0);

    // An index far ahead of the ring.
    let (stream, memfd, wake, _) = raw_ring_connection(&supervisor.socket);
    scribble(&memfd, 64, &1000u32.to_le_bytes());
    ring_doorbell(&wake);
    assert_disconnected(stream);

    // A slot that claims more bytes than it holds.
    let (stream, memfd, wake, geometry) = raw_ring_connection(&supervisor.socket);
    let mut header = Vec::new();
    header.extend_from_slice(&(geometry.slot_bytes * 2).to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    scribble(&memfd, 4096, &header);
    scribble(&memfd, 64, &1u32.to_le_bytes());
    ring_doorbell(&wake);
    assert_disconnected(stream);

    // A well-formed slot holding bytes that are not a message.
    let (stream, memfd, wake, _) = raw_ring_connection(&supervisor.socket);
    scribble(&memfd, 4096, &[8, 0, 0, 0, 0, 0, 0, 0]);
    scribble(&memfd, 4096 + 16, &[0xff; 8]);
    scribble(&memfd, 64, &1u32.to_le_bytes());
    ring_doorbell(&wake);
    assert_disconnected(stream);

    for _ in 0..100 {
        assert_eq!(bystander.call(&Call::new("true")).unwrap().exit_code, 0);
    }
    assert!(
        supervisor.log().contains("protocol violation"),
        "{}",
        supervisor.log()
    );
    assert!(nix::sys::signal::kill(Pid::from_raw(supervisor.pid()), None).is_ok());
}

#[test]
fn sigterm_drains_calls_in_flight_refuses_new_ones_and_exits_zero() {
    let mut supervisor = Supervisor::start(&test_bundle(), &[]);
    let client = supervisor.client();
    let in_flight = client.call_async(&Call::new("spin").args(["600"]));
    std::thread::sleep(Duration::from_millis(100));
    supervisor.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(100));
    let refused = client.call(&Call::new("true")).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ShuttingDown, "{refused}");
    assert!(
        !supervisor.socket.exists(),
        "the socket is removed while draining"
    );
    let finished = pollster::block_on(in_flight).expect("the call in flight completes");
    assert_eq!(finished.stdout, b"spun\n");
    assert_eq!(supervisor.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(supervisor.log().contains("drained"), "{}", supervisor.log());
}

#[test]
fn sighup_reloads_a_good_bundle_and_keeps_serving_the_old_one_when_tampered() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("bundle");
    copy_dir(&bundle(), &live);
    let supervisor = Supervisor::start(&live, &[]);
    let client = supervisor.client();
    assert_eq!(client.tools().unwrap().bundle, "default");

    // Tamper with the megabinary: the reload must fail and the old bundle keep serving.
    let cwasm = std::fs::read_dir(&live)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .unwrap();
    let mut bytes = std::fs::read(&cwasm).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&cwasm, &bytes).unwrap();
    supervisor.signal(Signal::SIGHUP);
    wait_until(
        "the failed reload in the log",
        Duration::from_secs(20),
        || supervisor.log().contains("reload failed"),
    );
    assert!(
        supervisor.log().contains("hash mismatch"),
        "{}",
        supervisor.log()
    );
    let out = client
        .call(&Call::new("echo").args(["old", "bundle"]))
        .unwrap();
    assert_eq!(out.stdout, b"old bundle\n");

    // A good bundle in its place (the test bundle) replaces it once verified and warm.
    std::fs::remove_dir_all(&live).unwrap();
    copy_dir(&test_bundle(), &live);
    supervisor.signal(Signal::SIGHUP);
    wait_until("the reload", Duration::from_secs(20), || {
        client.tools().unwrap().bundle == "test"
    });
    assert_eq!(
        client.call(&Call::new("spin").args(["1"])).unwrap().stdout,
        b"spun\n"
    );
}

#[test]
fn a_peer_uid_that_is_not_allowed_is_refused() {
    let supervisor = Supervisor::start(&bundle(), &["--allow-uid", "4242"]);
    let err = Client::connect(&supervisor.socket).err().expect("refused");
    assert_eq!(err.kind(), ErrorKind::NotAllowed, "{err}");
    let own = nix::unistd::geteuid().as_raw();
    assert!(err.to_string().contains(&format!("uid {own}")), "{err}");
}

#[test]
fn another_user_cannot_reach_a_private_socket_and_can_an_allowed_shared_one() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: switching to another uid needs root");
        return;
    }
    let nobody = 65534;
    let run_as_nobody = |socket: &Path| {
        use std::os::unix::process::CommandExt;
        Command::new(env!("CARGO_BIN_EXE_megavisor"))
            .args(["run", "--socket"])
            .arg(socket)
            .args(["echo", "hi"])
            .uid(nobody)
            .gid(nobody)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let private = Supervisor::start(&bundle(), &[]);
    std::fs::set_permissions(private.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run_as_nobody(&private.socket);
    assert_eq!(
        out.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("ermission denied"));

    let shared = Supervisor::start(
        &bundle(),
        &["--socket-group", "65534", "--allow-uid", "65534"],
    );
    std::fs::set_permissions(shared.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mode = std::fs::metadata(&shared.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    let out = run_as_nobody(&shared.socket);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hi\n");
    // The supervisor's own uid is no longer on the list.
    assert_eq!(
        Client::connect(&shared.socket).err().unwrap().kind(),
        ErrorKind::NotAllowed
    );
}

#[test]
fn threads_that_run_guest_code_are_under_seccomp() {
    let supervisor = Supervisor::start(&bundle(), &[]);
    let client = supervisor.client();
    client.call(&Call::new("true")).unwrap();
    let threads = supervisor.threads();
    let guest: Vec<_> = threads
        .iter()
        .filter(|(name, _)| name.starts_with("mv-guest") || name.starts_with("mv-conn"))
        .collect();
    assert!(guest.len() >= 3, "{threads:?}");
    for (name, mode) in &guest {
        assert_eq!(mode, "2", "{name} is not filtered: {threads:?}");
    }
    let (_, main_mode) = threads
        .iter()
        .find(|(name, _)| name == "megavisor")
        .unwrap();
    assert_eq!(
        main_mode, "0",
        "the main thread (which reloads bundles) is not filtered"
    );
}

#[test]
fn an_idle_connected_client_costs_the_supervisor_no_cpu() {
    let supervisor = Supervisor::start(&bundle(), &[]);
    let client = supervisor.client();
    client.call(&Call::new("true")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let cpu_ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", supervisor.pid())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks() - before;
    assert!(
        used <= 1,
        "an idle supervisor used {used} clock ticks in a second"
    );
    drop(client);
}

#[test]
fn megavisor_run_uses_a_running_supervisor() {
    let supervisor = Supervisor::start(&bundle(), &[]);
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_megavisor"))
            .args(["run", "--socket"])
            .arg(&supervisor.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&["calc", "6*7"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"42\n");
    let out = run(&["nope"]);
    assert_eq!(out.status.code(), Some(127));
    let out = run(&["--json", "echo", "hi"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["stdout"], "hi\n");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn file_descriptors_a_client_passes_are_not_kept() {
    let supervisor = Supervisor::start(&bundle(), &[]);
    let open_fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", supervisor.pid()))
            .unwrap()
            .count()
    };
    let devnull = std::fs::File::open("/dev/null").unwrap();
    let passed = [devnull.as_fd().as_raw_fd(); 6];
    let before = open_fds();
    for _ in 0..20 {
        let stream = UnixStream::connect(&supervisor.socket).unwrap();
        let hello = proto::Hello {
            protocol_version: megavisor_wire::PROTOCOL_VERSION,
            transport: proto::Transport::Socket as i32,
            client: "fd flooder".into(),
        };
        megavisor_wire::frame::write(&stream, &hello, &passed).unwrap();
        let welcome: proto::Welcome =
            megavisor_wire::frame::read(&stream, "welcome", 1 << 16).unwrap();
        assert!(matches!(
            welcome.outcome,
            Some(proto::welcome::Outcome::Accepted(_))
        ));
        let list = proto::ClientMessage {
            id: 1,
            body: Some(proto::client_message::Body::ListTools(proto::ListTools {})),
        };
        megavisor_wire::frame::write(&stream, &list, &passed).unwrap();
        let reply: proto::ServerMessage =
            megavisor_wire::frame::read(&stream, "reply", 1 << 20).unwrap();
        assert!(matches!(
            reply.body,
            Some(proto::server_message::Body::Tools(_))
        ));
    }
    wait_until("the connections to close", Duration::from_secs(10), || {
        open_fds() <= before + 2
    });
}

#[test]
fn a_refused_client_always_learns_why() {
    // Refused before its hello is read: the answer must not be lost to a reset connection.
    let refusing = Supervisor::start(&test_bundle(), &["--allow-uid", "4242"]);
    for _ in 0..300 {
        let err = Client::connect(&refusing.socket).err().expect("refused");
        assert_eq!(err.kind(), ErrorKind::NotAllowed, "{err}");
    }
}

#[test]
fn sessions_over_the_ring_keep_state_and_end_with_their_connection() {
    let supervisor = Supervisor::start(&bundle(), &["--max-concurrency", "3"]);
    let client = Client::connect(&supervisor.socket).unwrap();
    let session = client.open_session("python").unwrap();
    let step = |code: &str| {
        Call::new("python")
            .params_json(serde_json::json!({"code": code}).to_string())
            .session(session)
    };
    client
        .call(&step("def twice(x):\n    return 2 * x"))
        .unwrap();
    let out = client.call(&step("print(twice(21))")).unwrap();
    assert_eq!(out.stdout, b"42\n");
    client.close_session(session).unwrap();
    let err = client.call(&step("print(1)")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionGone, "{err}");

    // A client that goes away takes its sessions with it: their permits come back.
    for _ in 0..3 {
        let leaving = Client::connect(&supervisor.socket).unwrap();
        leaving.open_session("js").unwrap();
        leaving.open_session("js").unwrap();
        assert_eq!(
            leaving.open_session("js").unwrap_err().kind(),
            ErrorKind::SessionGone,
            "the last permit is never a session's"
        );
        drop(leaving);
        wait_until(
            "the sessions of a gone client to end",
            Duration::from_secs(5),
            || {
                Client::connect(&supervisor.socket)
                    .and_then(|c| c.open_session("js"))
                    .is_ok()
            },
        );
    }
}
