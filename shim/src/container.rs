//! One container of the shim: created from its bundle, started as one call (or, for a
//! binary its image's map runs natively, one `megavisor run-image` process), ended by its
//! exit, a refusal or a kill, and waited for; a waiter returns once the exit was published.
//!
//! ```text
//!   create ──> Created ── start ──> Running ── exit / refused / kill ──> Stopped ── published
//!                 └────────────── kill ─────────────────────────────────────┘
//! ```
//!
//! A pod's sandbox container (the CRI's pause container) runs nothing: it is Running from
//! start until it is killed.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};

use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use megavisor_driver::{Cancel, Output};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use oci_spec::runtime::Spec;

use crate::runner::{Process, Refusal, Runner, Work};

/// The annotation the CRI sets on a pod's containers, naming their kind.
pub const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Status {
    /// Created, not started.
    #[default]
    Created,
    /// Started and not ended.
    Running,
    /// Ended, with an exit status.
    Stopped,
}

/// What can change while a container lives.
#[derive(Default)]
struct Life {
    status: Status,
    exit_status: u32,
    exited_at: Option<Timestamp>,
    /// Gives up on the running call.
    cancel: Option<Cancel>,
    /// The process running a native binary.
    child: Option<nix::unistd::Pid>,
    /// The signal a kill sent, for the exit status of the call it stopped.
    killed_by: Option<u32>,
    /// Whether the exit was published: what `wait` waits for, so that containerd hears of
    /// the exit (the CRI from its event) before a waiter can delete the container.
    reported: bool,
}

/// One container.
pub struct Container {
    /// containerd's id of it.
    pub id: String,
    /// Its bundle directory.
    pub bundle: PathBuf,
    /// The image's root.
    pub rootfs: PathBuf,
    /// Whether the shim mounted `rootfs` (and unmounts it on delete).
    pub mounted_rootfs: bool,
    /// containerd's FIFOs (empty when not asked for).
    pub stdin: String,
    /// See `stdin`.
    pub stdout: String,
    /// See `stdin`.
    pub stderr: String,
    /// The process to run; `None` for a pod's sandbox.
    pub process: Option<Process>,
    /// The writing ends of stdout and stderr, open from create to exit.
    streams: Mutex<[Option<File>; 2]>,
    life: Mutex<Life>,
    changed: Condvar,
}

impl Container {
    /// A created container.
    pub fn new(
        id: String,
        bundle: PathBuf,
        (rootfs, mounted_rootfs): (PathBuf, bool),
        stdio: [String; 3],
        spec: &Spec,
    ) -> Result<Self, String> {
        let sandbox = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(CONTAINER_TYPE_ANNOTATION))
            .is_some_and(|kind| kind == "sandbox");
        let process = if sandbox {
            None
        } else {
            let process = spec
                .process()
                .as_ref()
                .ok_or("the container's spec has no process")?;
            Some(Process {
                args: process.args().clone().unwrap_or_default(),
                env: process.env().clone().unwrap_or_default(),
                cwd: process.cwd().to_string_lossy().into_owned(),
            })
        };
        let [stdin, stdout, stderr] = stdio;
        let streams = Mutex::new([open_fifo(&stdout)?, open_fifo(&stderr)?]);
        Ok(Container {
            id,
            bundle,
            rootfs,
            mounted_rootfs,
            stdin,
            stdout,
            stderr,
            process,
            streams,
            life: Mutex::new(Life::default()),
            changed: Condvar::new(),
        })
    }

    /// Its status, exit status and exit time.
    pub fn status(&self) -> (Status, u32, Option<Timestamp>) {
        let life = self.life.lock().expect("container lock");
        (life.status, life.exit_status, life.exited_at.clone())
    }

    /// Starts it: the call runs on a thread of its own, which writes the output to the
    /// FIFOs and then calls `exited`. Starting twice is refused.
    pub fn start(
        self: &Arc<Self>,
        runner: Arc<Runner>,
        exited: impl FnOnce(&Container) + Send + 'static,
    ) -> Result<(), String> {
        {
            let mut life = self.life.lock().expect("container lock");
            if life.status != Status::Created {
                return Err(format!("container {} was started already", self.id));
            }
            life.status = Status::Running;
        }
        let Some(process) = self.process.clone() else {
            return Ok(()); // a sandbox runs nothing until it is killed
        };
        let container = Arc::clone(self);
        std::thread::Builder::new()
            .name(format!("container-{}", self.id))
            .spawn(move || {
                let exit_status = container.run(&runner, &process);
                container.finish(exit_status);
                exited(&container);
                container.reported();
            })
            .map_err(|e| format!("cannot start a thread for container {}: {e}", self.id))?;
        Ok(())
    }

    /// Runs the process's call and writes what it printed; returns its exit status.
    fn run(&self, runner: &Runner, process: &Process) -> u32 {
        let call = match runner.prepare(&self.rootfs, process) {
            Ok(Work::Call(call)) => call,
            Ok(Work::Native(command)) => return self.run_native(command),
            Err(Refusal {
                exit_status,
                message,
            }) => {
                self.write_stream(STDERR, format!("{message}\n").as_bytes());
                return exit_status;
            }
        };
        let (sender, receiver) = std::sync::mpsc::channel();
        let cancel = runner.driver().run_async(call, move |result| {
            // The receiver lives until this callback has run.
            let _ = sender.send(result);
        });
        let killed = {
            let mut life = self.life.lock().expect("container lock");
            life.cancel = Some(cancel.clone());
            life.killed_by
        };
        if killed.is_some() {
            cancel.cancel(); // killed before the call was under way
        }
        let result = receiver.recv();
        let killed_by = self.life.lock().expect("container lock").killed_by;
        match result {
            Ok(Ok(output)) => {
                self.write_output(&output);
                u32::try_from(output.exit_code).unwrap_or(1)
            }
            Ok(Err(err)) => {
                if let Some(partial) = err.partial_output() {
                    self.write_output(partial);
                }
                match killed_by {
                    Some(signal) => 128 + signal,
                    None => {
                        self.write_stream(STDERR, format!("megavisor: {err}\n").as_bytes());
                        err.kind().info().exit_code.into()
                    }
                }
            }
            Err(_) => 1, // the driver dropped the call without an answer
        }
    }

    /// Runs a native binary's command with stdout and stderr on containerd's FIFOs;
    /// returns its exit status (128 + a signal that ended it).
    fn run_native(&self, mut command: Command) -> u32 {
        let stdio = |fifo: &str| -> std::io::Result<Stdio> {
            if fifo.is_empty() {
                return Ok(Stdio::null());
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(fifo)?;
            Ok(Stdio::from(file))
        };
        let spawned = stdio(&self.stdout).and_then(|stdout| {
            let stderr = stdio(&self.stderr)?;
            command
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
        });
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                self.write_stream(STDERR, format!("megavisor: cannot start: {e}\n").as_bytes());
                return 126;
            }
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let killed = {
            let mut life = self.life.lock().expect("container lock");
            life.child = Some(pid);
            life.killed_by
        };
        if let Some(signal) = killed {
            signal_child(pid, signal);
        }
        // Waited for without reaping it, and forgotten before it is reaped: a kill never
        // signals a pid the kernel may have given to another process since.
        while let Err(nix::errno::Errno::EINTR) =
            waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
        {}
        self.life.lock().expect("container lock").child = None;
        let status = child.wait();
        match status {
            Ok(status) => status
                .code()
                .map(|code| code as u32)
                .or_else(|| status.signal().map(|signal| 128 + signal as u32))
                .unwrap_or(1),
            Err(_) => 1,
        }
    }

    fn write_output(&self, output: &Output) {
        self.write_stream(STDOUT, &output.stdout);
        self.write_stream(STDERR, &output.stderr);
        // Past the output limit only the head was kept: the container's log says so.
        for (name, kept, total) in [
            ("stdout", output.stdout.len() as u64, output.stdout_total),
            ("stderr", output.stderr.len() as u64, output.stderr_total),
        ] {
            if total > kept {
                let note = format!(
                    "megavisor: {name} truncated: kept {kept} of {total} bytes (the output limit)\n"
                );
                self.write_stream(STDERR, note.as_bytes());
            }
        }
    }

    /// Writes to stdout or stderr. A reader that stops reading for [`WRITE_PATIENCE`]
    /// loses the rest, rather than holding the container's thread for ever.
    fn write_stream(&self, stream: usize, mut bytes: &[u8]) {
        let mut streams = self.streams.lock().expect("streams lock");
        let Some(file) = &mut streams[stream] else {
            return;
        };
        while !bytes.is_empty() {
            match file.write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let mut poll = [PollFd::new(file.as_fd(), PollFlags::POLLOUT)];
                    let patience =
                        PollTimeout::try_from(WRITE_PATIENCE).unwrap_or(PollTimeout::MAX);
                    if !matches!(nix::poll::poll(&mut poll, patience), Ok(n) if n > 0) {
                        log::warn!(
                            "container {}: its reader stopped reading; output dropped",
                            self.id
                        );
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("container {}: cannot write its output: {e}", self.id);
                    return;
                }
            }
        }
    }

    /// Records the exit and wakes whoever waits for it.
    fn finish(&self, exit_status: u32) {
        let mut life = self.life.lock().expect("container lock");
        if life.status == Status::Stopped {
            return;
        }
        life.status = Status::Stopped;
        life.exit_status = exit_status;
        life.exited_at = Some(now());
        life.cancel = None;
        // Closing the writing ends is the readers' end of file.
        *self.streams.lock().expect("streams lock") = [None, None];
    }

    /// Records that the exit was published, and wakes whoever waits for it.
    pub fn reported(&self) {
        self.life.lock().expect("container lock").reported = true;
        self.changed.notify_all();
    }

    /// Sends `signal`: a running call is given up on and ends with 128 + `signal`; a
    /// sandbox, or a container not started, stops at once. Returns whether it stopped here
    /// (the caller then publishes the exit and calls [`Container::reported`]).
    pub fn kill(&self, signal: u32) -> bool {
        let mut life = self.life.lock().expect("container lock");
        match life.status {
            Status::Stopped => false,
            Status::Running if self.process.is_some() => {
                life.killed_by = Some(signal);
                if let Some(cancel) = &life.cancel {
                    cancel.cancel();
                }
                if let Some(child) = life.child {
                    signal_child(child, signal);
                }
                false
            }
            _ => {
                drop(life);
                self.finish(128 + signal);
                true
            }
        }
    }

    /// Blocks until it has stopped and its exit was published; its exit status and time.
    pub fn wait(&self) -> (u32, Option<Timestamp>) {
        let mut life = self.life.lock().expect("container lock");
        while !life.reported {
            life = self.changed.wait(life).expect("container lock");
        }
        (life.exit_status, life.exited_at.clone())
    }
}

/// Sends `signal` (a number from containerd) to a native binary's process.
fn signal_child(pid: nix::unistd::Pid, signal: u32) {
    let signal = i32::try_from(signal)
        .ok()
        .and_then(|s| nix::sys::signal::Signal::try_from(s).ok())
        .unwrap_or(nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::signal::kill(pid, signal);
}

/// Index of stdout in `Container::streams`.
const STDOUT: usize = 0;
/// Index of stderr in `Container::streams`.
const STDERR: usize = 1;
/// How long a write waits for a reader that does not read.
const WRITE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Opens containerd's FIFO at `path` (none when the path is empty) for the container's
/// life. Read and write, so it neither waits for a reader nor ends the reader's stream
/// before the container does; non-blocking, so a full FIFO never holds the shim.
fn open_fifo(path: &str) -> Result<Option<File>, String> {
    if path.is_empty() {
        return Ok(None);
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(Path::new(path))
        .map(Some)
        .map_err(|e| format!("cannot open {path}: {e}"))
}

/// The time now, as containerd's messages carry it.
pub fn now() -> Timestamp {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut timestamp = Timestamp::new();
    timestamp.seconds = i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX);
    timestamp.nanos = i32::try_from(elapsed.subsec_nanos()).unwrap_or(0);
    timestamp
}
