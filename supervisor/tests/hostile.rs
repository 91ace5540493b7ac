//! A shared supervisor as hostile clients, other users and impatient callers meet it: no
//! client can wedge it or hold its threads, an admitted user reaches nothing it could not
//! reach itself, and callers that give up or run out of time get their slot back at once.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Supervisor, bundle, raw_ring_connection, raw_socket_connection, test_bundle, wait_until,
};
use megavisor_client::{Call, Client, ConnectOptions, ErrorKind, Transport};
use megavisor_wire::proto::{self, client_message, server_message};
use megavisor_wire::ring::{Consumer, Direction, Layout, Producer, Ring};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use prost::Message;

const NOBODY: u32 = 65534;

/// A ring client written against the wire crate alone, doing what a hostile one may.
struct RawRing {
    /// Held open: closing it is hanging up.
    _stream: UnixStream,
    ring: Ring,
    /// Its end of the doorbell.
    doorbell: OwnedFd,
    producer: Producer,
    consumer: Consumer,
    next_id: u64,
}

impl RawRing {
    fn connect(socket: &Path) -> Self {
        let (stream, memfd, doorbell, geometry) = raw_ring_connection(socket);
        let layout = Layout::new(&geometry).unwrap();
        RawRing {
            _stream: stream,
            ring: Ring::map(&memfd, layout).unwrap(),
            doorbell,
            producer: Producer::new(Direction::Request),
            consumer: Consumer::new(Direction::Reply),
            next_id: 1,
        }
    }

    /// Clears `O_NONBLOCK` on its end of the doorbell, as the supervisor's own eventfds
    /// once could be made blocking under it.
    fn make_blocking(&self) {
        fcntl(self.doorbell.as_fd(), FcntlArg::F_SETFL(OFlag::empty())).unwrap();
    }

    /// Sends a call and spins (never sleeping on its bell) until its reply is in the ring.
    fn call(&mut self, tool: &str) -> proto::ServerMessage {
        let message = proto::ClientMessage {
            id: self.next_id,
            body: Some(client_message::Body::Call(proto::Call {
                tool: Some(proto::call::Tool::Name(tool.into())),
                ..proto::Call::default()
            })),
        };
        self.next_id += 1;
        if self
            .producer
            .push(&self.ring, &message.encode_to_vec())
            .unwrap()
            .wake
        {
            nix::unistd::write(&self.doorbell, &[1]).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(bytes) = self.consumer.pop(&self.ring).unwrap() {
                return proto::ServerMessage::decode(bytes.as_slice()).unwrap();
            }
            assert!(Instant::now() < deadline, "no reply");
            std::thread::yield_now();
        }
    }
}

fn served_quickly(client: &Client, what: &str) {
    let started = Instant::now();
    assert_eq!(client.call(&Call::new("true")).unwrap().exit_code, 0);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{what}: a bystander waited {:?}",
        started.elapsed()
    );
}

#[test]
fn a_client_cannot_block_the_supervisor_through_its_doorbells() {
    let supervisor = Supervisor::start(&bundle(), &["--max-clients", "9"]);
    let bystander = supervisor.client();

    // It makes its doorbell blocking, never reads it, and says it is asleep forever: every
    // reply rings a doorbell that is full after a few hundred.
    let mut hostile = RawRing::connect(&supervisor.socket);
    hostile.make_blocking();
    hostile.ring.announce_sleep(Direction::Reply);
    for _ in 0..6000 {
        let reply = hostile.call("true");
        assert!(matches!(reply.body, Some(server_message::Body::Output(_))));
    }
    served_quickly(&bystander, "after 6000 rings of a full, blocking bell");

    // Eight more fill the supervisor's end of their doorbells, and hang up.
    for _ in 0..8 {
        let hostile = RawRing::connect(&supervisor.socket);
        hostile.make_blocking();
        let flood = [1u8; 4096];
        let dontwait = nix::sys::socket::MsgFlags::MSG_DONTWAIT;
        while nix::sys::socket::send(hostile.doorbell.as_raw_fd(), &flood, dontwait).is_ok() {}
        drop(hostile);
    }
    // Their slots come back: new clients connect and are served.
    wait_until(
        "the hostile clients' slots to free",
        Duration::from_secs(5),
        || Client::connect(&supervisor.socket).is_ok_and(|c| c.call(&Call::new("true")).is_ok()),
    );
    served_quickly(&bystander, "after eight bells filled and dropped");
}

#[test]
fn a_socket_client_that_stops_reading_holds_no_guest_thread_and_is_dropped() {
    let supervisor = Supervisor::start(
        &bundle(),
        &["--max-concurrency", "1", "--reply-timeout", "500ms"],
    );
    // Asks for 5 MB of output, and never reads a byte of it.
    let slow = raw_socket_connection(&supervisor.socket);
    let call = proto::ClientMessage {
        id: 1,
        body: Some(client_message::Body::Call(proto::Call {
            tool: Some(proto::call::Tool::Name("seq".into())),
            args: vec!["1".into(), "700000".into()],
            ..proto::Call::default()
        })),
    };
    megavisor_wire::frame::write(&slow, &call, &[]).unwrap();
    // Its reply begins to arrive once the call is done (however long the machine takes).
    let mut arriving = [PollFd::new(slow.as_fd(), PollFlags::POLLIN)];
    assert_eq!(poll(&mut arriving, PollTimeout::from(30_000u16)), Ok(1));
    // The one guest thread is free: the rest of the reply waits with the connection's writer.
    let bystander = supervisor.client();
    for _ in 0..20 {
        served_quickly(&bystander, "while a reader does not read");
    }
    wait_until(
        "the slow reader to be dropped",
        Duration::from_secs(5),
        || supervisor.log().contains("could not be delivered"),
    );
}

#[test]
fn a_hello_dripped_byte_by_byte_is_cut_off_at_its_deadline() {
    let supervisor = Supervisor::start(&bundle(), &["--hello-timeout", "300ms"]);
    let mut drip = UnixStream::connect(&supervisor.socket).unwrap();
    let started = Instant::now();
    drip.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let hello = proto::Hello {
        protocol_version: megavisor_wire::PROTOCOL_VERSION,
        transport: proto::Transport::Ring as i32,
        client: "drip".repeat(100),
    }
    .encode_to_vec();
    let mut framed = (hello.len() as u32).to_le_bytes().to_vec();
    framed.extend(hello);
    let mut closed = false;
    for byte in framed {
        if drip.write_all(&[byte]).is_err() {
            closed = true;
            break;
        }
        let mut answer = [0u8; 1];
        if matches!(drip.read(&mut answer), Ok(0)) {
            closed = true;
            break;
        }
    }
    assert!(closed, "the supervisor waited for a whole dripped hello");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    served_quickly(&supervisor.client(), "after a dripped hello");
}

#[test]
fn bytes_held_for_clients_are_bounded_and_calls_beyond_are_busy() {
    let supervisor = Supervisor::start(
        &test_bundle(),
        &["--max-held-bytes", "2M", "--max-concurrency", "4"],
    );
    let options = ConnectOptions {
        transport: Transport::Socket,
        ..ConnectOptions::default()
    };
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let client = Client::connect_with(&supervisor.socket, &options).unwrap();
            std::thread::spawn(move || {
                client.call(
                    &Call::new("sleep")
                        .args(["300"])
                        .stdin(vec![b'x'; 900 << 10]),
                )
            })
        })
        .collect();
    let outcomes: Vec<_> = calls.into_iter().map(|c| c.join().unwrap()).collect();
    let busy: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(!busy.is_empty(), "6 x 900 KiB held under a 2 MiB budget");
    for err in &busy {
        assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
        assert!(err.to_string().contains("--max-held-bytes"), "{err}");
    }
    assert!(outcomes.iter().any(Result::is_ok), "some fit");
    // And the budget is whole again once they are answered.
    let client = Client::connect_with(&supervisor.socket, &options).unwrap();
    assert!(
        client
            .call(&Call::new("cat").stdin(vec![b'y'; 900 << 10]))
            .is_ok()
    );
}

/// Runs `megavisor run --socket` as uid `uid` (a different user than the supervisor's).
fn megavisor_as(uid: u32, socket: &Path, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_megavisor"))
        .args(["run", "--socket"])
        .arg(socket)
        .args(args)
        .uid(uid)
        .gid(uid)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIPPED {test}: another user's calls need a root supervisor");
    false
}

#[test]
fn an_admitted_user_reaches_through_the_supervisor_only_what_it_could_itself() {
    if !root_or_skip("an_admitted_user_reaches_through_the_supervisor_only_what_it_could_itself") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let root = dir.path().join("share");
    for sub in ["mine", "roots"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::os::unix::fs::chown(root.join("mine"), Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(root.join("roots"), PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::write(root.join("secret"), "root only").unwrap();
    std::fs::set_permissions(root.join("secret"), PermissionsExt::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
    let mount_root = format!("{}:rw", root.display());
    let supervisor = Supervisor::start(
        &test_bundle(),
        &[
            "--socket-group",
            "65534",
            "--allow-uid",
            "65534",
            "--allow-uid",
            "0",
            "--mount-root",
            &mount_root,
        ],
    );
    std::fs::set_permissions(supervisor.dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let data = |host: &Path| format!("{}:/data:rw", host.display());
    let as_nobody = |args: &[&str]| megavisor_as(NOBODY, &supervisor.socket, args, b"");
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();

    // Host paths outside the mount roots, or leading out of one, are refused.
    for host in [Path::new("/etc"), &root.join("etc")] {
        let out = as_nobody(&["--mount", &data(host), "read", "/data/shadow"]);
        assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    }
    // Under the root, files are opened as the user: root's secret stays root's.
    let out = as_nobody(&["--mount", &data(&root), "read", "/data/secret"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ermission denied"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
    // Writes go only where the user may write, and the files are the user's.
    let out = as_nobody(&["--mount", &data(&root), "write", "/data/roots/x", "hi"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!root.join("roots/x").exists());
    let out = as_nobody(&["--mount", &data(&root), "write", "/data/mine/x", "hi"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::metadata(root.join("mine/x")).unwrap().uid(),
        NOBODY
    );
}

#[test]
fn a_supervisor_without_mount_roots_lets_no_client_mount_anything() {
    let supervisor = Supervisor::start(&test_bundle(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let err = supervisor
        .client()
        .call(&Call::new("env").mount(dir.path().to_str().unwrap(), "/data", false))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert!(err.to_string().contains("--mount-root"), "{err}");
}

#[test]
fn another_users_execution_ids_are_invisible() {
    if !root_or_skip("another_users_execution_ids_are_invisible") {
        return;
    }
    let supervisor = Supervisor::start(
        &test_bundle(),
        &[
            "--allow-uid",
            "65533",
            "--allow-uid",
            "65534",
            "--allow-uid",
            "0",
        ],
    );
    std::fs::set_permissions(supervisor.dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&supervisor.socket, PermissionsExt::from_mode(0o666)).unwrap();
    let root = supervisor.client();
    let pin = Call::new("cat")
        .stdin(b"4711".as_slice())
        .execution_id("pin");
    assert_eq!(root.call(&pin).unwrap().stdout, b"4711");
    let guess = |uid, stdin: &[u8]| {
        let out = megavisor_as(
            uid,
            &supervisor.socket,
            &["--json", "--exec-id", "pin", "cat"],
            stdin,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // The right PIN under root's id is no replay of root's answer for anyone else...
    let json = guess(NOBODY, b"4711");
    assert_eq!(json["cached"], false, "{json}");
    // ...and a wrong one is no "already used for a different request": no oracle.
    let json = guess(65533, b"0000");
    assert_eq!(
        (&json["cached"], json["stdout"].as_str()),
        (&false.into(), Some("0000"))
    );
    // Root's record is intact: not squatted.
    assert!(root.call(&pin).unwrap().cached);
}

fn one_guest_thread(extra: &[&str]) -> Supervisor {
    let mut args = vec!["--max-concurrency", "1"];
    args.extend_from_slice(extra);
    Supervisor::start(&test_bundle(), &args)
}

#[test]
fn a_client_that_goes_away_mid_call_frees_its_guest_thread_at_once() {
    let supervisor = one_guest_thread(&[]);
    let mut gone = Command::new(env!("CARGO_BIN_EXE_megavisor"))
        .args(["run", "--socket"])
        .arg(&supervisor.socket)
        .args(["spin"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    gone.kill().unwrap();
    gone.wait().unwrap();
    let killed = Instant::now();
    let client = supervisor.client();
    assert_eq!(client.call(&Call::new("true")).unwrap().exit_code, 0);
    assert!(
        killed.elapsed() < Duration::from_millis(300),
        "the spin of a killed client held the guest thread for {:?}",
        killed.elapsed()
    );
}

#[test]
fn a_dropped_call_is_stopped_and_frees_its_guest_thread() {
    let supervisor = one_guest_thread(&[]);
    let client = supervisor.client();
    for tool in [&["spin"][..], &["sleep", "60000"]] {
        let future = client.call_async(&Call::new(tool[0]).args(tool[1..].iter().copied()));
        std::thread::sleep(Duration::from_millis(200));
        drop(future);
        let dropped = Instant::now();
        assert_eq!(client.call(&Call::new("true")).unwrap().exit_code, 0);
        assert!(
            dropped.elapsed() < Duration::from_millis(200),
            "{tool:?}: a dropped call held the guest thread for {:?}",
            dropped.elapsed()
        );
    }
}

#[test]
fn a_queued_calls_time_limit_covers_its_wait_and_its_queue_time_is_reported() {
    let supervisor = one_guest_thread(&[]);
    let client = supervisor.client();
    let busy = client.call_async(&Call::new("spin").args(["400"]));
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let err = client
        .call(&Call::new("true").timeout(Duration::from_millis(100)))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    let out = client.call(&Call::new("true")).unwrap();
    assert!(
        out.timings.as_ref().unwrap().queue_us > 100_000,
        "waited behind a 400 ms call: {:?}",
        out.timings
    );
    pollster::block_on(busy).unwrap();
}

#[test]
fn a_reply_over_the_connection_limit_arrives_cut_to_fit_even_from_a_timeout() {
    let supervisor = Supervisor::start(&test_bundle(), &["--ring-reply-spill", "64K"]);
    let client = supervisor.client();
    let err = client
        .call(
            &Call::new("flood")
                .args(["100000000"])
                .timeout(Duration::from_millis(200)),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    let partial = err.partial_output().expect("what it wrote");
    assert!(partial.stdout.len() < 64 << 10 && !partial.stdout.is_empty());
    assert!(partial.stdout_total > 64 << 10);
    assert_eq!(partial.stdout_tail.len(), 8 << 10);
}
