//! What the supervisor's integration tests share: a real `megavisor serve` process on a
//! private socket, started on the bundles the set-up built.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::BufRead;
use std::io::BufReader;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use megavisor_client::Client;
use megavisor_wire::proto;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub fn build_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../build");
    assert!(
        dir.join("bundle/manifest.json").exists() && dir.join("test-bundle/manifest.json").exists(),
        "run `make setup` first"
    );
    dir
}

/// A `megavisor serve` process on a private socket; SIGKILLed if a test leaves it running.
pub struct Supervisor {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub ready_line: String,
}

impl Supervisor {
    pub fn start(bundle: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(bundle, extra, &[])
    }

    pub fn start_with_env(bundle: &Path, extra: &[&str], env: &[(&str, &Path)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("megavisor.sock");
        let log = dir.path().join("serve.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_megavisor"));
        command
            .args(["serve", "--log-level", "info", "--socket"])
            .arg(&socket)
            .arg("--bundle")
            .arg(bundle)
            .arg("--trusted-key")
            .arg(build_dir().join("keys/megavisor.pub"))
            .args(extra)
            .env_remove("MEGAVISOR_SOCKET")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("megavisor serve starts");
        let mut ready_line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready_line)
            .unwrap();
        assert!(
            ready_line.starts_with("megavisor ready"),
            "no readiness line: {ready_line:?}; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Supervisor {
            child,
            dir,
            socket,
            log,
            ready_line,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket).expect("client connects")
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "supervisor still running after {within:?}; log:\n{}",
            self.log()
        );
    }

    /// Names and seccomp modes of the process's threads.
    pub fn threads(&self) -> Vec<(String, String)> {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .unwrap()
            .filter_map(|task| {
                let task = task.ok()?.path();
                let status = std::fs::read_to_string(task.join("status")).ok()?;
                let seccomp = status
                    .lines()
                    .find_map(|l| l.strip_prefix("Seccomp:"))?
                    .trim()
                    .to_owned();
                let name = std::fs::read_to_string(task.join("comm"))
                    .ok()?
                    .trim()
                    .to_owned();
                Some((name, seccomp))
            })
            .collect()
    }

    /// How many client rings the process has mapped.
    pub fn rings_mapped(&self) -> usize {
        std::fs::read_to_string(format!("/proc/{}/maps", self.pid()))
            .unwrap()
            .lines()
            .filter(|l| l.contains("megavisor-ring"))
            .count()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn bundle() -> PathBuf {
    build_dir().join("bundle")
}

pub fn test_bundle() -> PathBuf {
    build_dir().join("test-bundle")
}

pub fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Connects without the client library and says hello for `transport`; returns the socket,
/// what the supervisor accepted, and the descriptors that came with it.
fn raw_handshake(
    socket: &Path,
    transport: proto::Transport,
) -> (UnixStream, proto::Accepted, Vec<OwnedFd>) {
    let stream = UnixStream::connect(socket).unwrap();
    let hello = proto::Hello {
        protocol_version: megavisor_wire::PROTOCOL_VERSION,
        transport: transport as i32,
        client: "raw".into(),
    };
    megavisor_wire::frame::write(&stream, &hello, &[]).unwrap();
    let (welcome, fds) =
        megavisor_wire::frame::read_with_fds::<proto::Welcome>(&stream, "welcome", 1 << 16)
            .unwrap();
    let Some(proto::welcome::Outcome::Accepted(accepted)) = welcome.outcome else {
        panic!("refused: {welcome:?}");
    };
    (stream, accepted, fds)
}

/// Connects without the client library and returns the socket, the ring's memfd and the
/// client's end of the doorbell.
pub fn raw_ring_connection(socket: &Path) -> (UnixStream, OwnedFd, OwnedFd, proto::RingGeometry) {
    let (stream, accepted, fds) = raw_handshake(socket, proto::Transport::Ring);
    let mut fds = fds.into_iter();
    let memfd = fds.next().unwrap();
    let doorbell = fds.next().unwrap();
    (stream, memfd, doorbell, accepted.ring.unwrap())
}

/// A socket-transport connection without the client library, after its handshake.
pub fn raw_socket_connection(socket: &Path) -> UnixStream {
    raw_handshake(socket, proto::Transport::Socket).0
}
