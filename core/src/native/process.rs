//! Running one native binary: no shell, only the environment given, stdin fed from memory,
//! stdout and stderr captured (head up to the limit, 8 KiB tails, totals), the whole process
//! group killed at the time limit; directly ([`Direct`]), or through the jailer into its
//! sandbox ([`Jail`]).

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::allowlist::AllowedBinary;
pub(crate) use super::direct::Direct;
pub(crate) use super::jailed::Jail;
use crate::capture::{CaptureStream, Captured};
use crate::epoch::{Stop, Stopped};
use crate::error::{Error, Result};

/// What to run and how.
pub(crate) struct Launch<'a> {
    pub binary: &'a AllowedBinary,
    /// argv\[0\], when not the path requested.
    pub argv0: Option<&'a str>,
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub stdin: &'a [u8],
    /// When the process must end.
    pub stop: &'a Stop,
    /// Bytes of stdout and of stderr kept in full.
    pub output_bytes: usize,
    pub how: How<'a>,
}

/// Whether the binary runs as a plain process or through the jailer in the sandbox.
pub(crate) enum How<'a> {
    Direct(Direct<'a>),
    Jailed(Jail<'a>),
}

/// A command ready to spawn, and what this process keeps of it until it has run.
pub(super) struct Prepared {
    pub command: Command,
    /// The program that starts (the binary, or the jailer), for errors.
    pub program: PathBuf,
    /// The read end of the pipe on which the jailer reports why it could not set up the
    /// sandbox.
    pub setup_errors: Option<OwnedFd>,
    /// Descriptors the child inherits, closed here once it is spawned (our copy of the
    /// error pipe's write end would hold it open).
    pub handed_over: Vec<OwnedFd>,
}

/// How a process ended.
pub(crate) struct Finished {
    /// The exit code; a process killed by signal N reports 128 + N, as shells do.
    pub exit_code: i32,
    pub stdout: Captured,
    pub stderr: Captured,
    /// Why it was stopped before it ended by itself, if it was.
    pub stopped: Option<Stopped>,
    /// CPU time of the process and the descendants it waited for, and the largest
    /// resident set of any of them (getrusage's view, for when no cgroup counts).
    pub user_us: u64,
    pub system_us: u64,
    pub max_rss_bytes: u64,
}

/// The thread that starts native processes.
///
/// It is made with the runtime, on the thread that opens it. Threads that run guest code in
/// the supervisor are under a seccomp filter refusing fork and exec (an escaped guest must
/// not start programs), and threads they create inherit it; native tools, which are
/// allowed to start programs, are started by this one instead, which is not filtered.
#[derive(Debug)]
pub(crate) struct Spawner {
    requests: mpsc::Sender<(Command, mpsc::SyncSender<std::io::Result<Child>>)>,
}

impl Spawner {
    pub(crate) fn start() -> Result<Self> {
        let (requests, incoming) =
            mpsc::channel::<(Command, mpsc::SyncSender<std::io::Result<Child>>)>();
        thread::Builder::new()
            .name("mv-native-spawn".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .map_err(|e| Error::io("native tools", "start the spawning thread of", e))?;
        Ok(Spawner { requests })
    }

    fn spawn(&self, command: Command) -> std::io::Result<Child> {
        let (reply, answer) = mpsc::sync_channel(1);
        let sent = self.requests.send((command, reply));
        let gone = || std::io::Error::other("the spawning thread is gone");
        sent.map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

/// How long output is still read once the tool's leader has ended and its process group
/// (and cgroup) have been killed; whatever still holds the pipes open after that is ignored.
const OUTPUT_GRACE: Duration = Duration::from_millis(100);

/// Runs `launch` to its end or its time limit. `kill_rest` runs once the leader has ended,
/// to kill whatever of the call survived its process group (the sandbox's cgroup).
pub(crate) fn run(
    spawner: &Spawner,
    launch: &Launch<'_>,
    kill_rest: &dyn Fn(),
) -> Result<Finished> {
    let argv0 = launch.argv0.map_or_else(
        || launch.binary.requested.display().to_string(),
        str::to_owned,
    );
    let Prepared {
        mut command,
        program,
        setup_errors,
        handed_over,
    } = match &launch.how {
        How::Direct(direct) => direct.command(launch.binary, argv0, launch.args, launch.env),
        How::Jailed(jail) => jail.command(launch.binary, argv0, launch.args, launch.env)?,
    };
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawner
        .spawn(command)
        .map_err(|e| Error::io(&program, "spawn", e))?;
    drop(handed_over);
    let output = match capture(
        child.stdout.take(),
        child.stderr.take(),
        launch.output_bytes,
    ) {
        Ok(output) => output,
        Err(e) => {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            return Err(Error::io(&program, "read the output of", e));
        }
    };
    // Not joined: a descendant that keeps stdin open without reading would hold it; it
    // ends once the call's processes are killed.
    feed(child.stdin.take(), launch.stdin.to_vec());
    let ended = wait(child.id(), launch.stop, &program, kill_rest);
    let (stdout, stderr) = output.finish();
    let ended = ended?;
    if let Some(read) = setup_errors {
        let mut reason = String::new();
        let _ = std::fs::File::from(read).read_to_string(&mut reason);
        if !reason.is_empty() {
            return Err(Error::Io {
                path: program,
                action: "set up the sandbox with",
                message: reason,
            });
        }
    }
    Ok(Finished {
        exit_code: ended.exit_code,
        stdout,
        stderr,
        stopped: ended.stopped,
        user_us: ended.user_us,
        system_us: ended.system_us,
        max_rss_bytes: ended.max_rss_bytes,
    })
}

/// Marks every descriptor above stderr close-on-exec (in a child between fork and exec).
pub(super) fn close_all_on_exec() -> std::io::Result<()> {
    // SAFETY: close_range only changes descriptor flags.
    if unsafe { libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// How the process ended, from `wait4`.
struct Ended {
    exit_code: i32,
    stopped: Option<Stopped>,
    user_us: u64,
    system_us: u64,
    max_rss_bytes: u64,
}

/// Waits for the leader until `stop` says it must end (then kills its process group);
/// then, while the ended leader still holds its process group id (so it cannot name anyone
/// else's), kills the group and runs `kill_rest`; then reaps it.
fn wait(pid: u32, stop: &Stop, program: &Path, kill_rest: &dyn Fn()) -> Result<Ended> {
    let group = Pid::from_raw(pid as i32);
    let (exited, exit_seen) = mpsc::channel::<()>();
    let stop = stop.clone();
    // A watchdog rather than polling: this thread sleeps in waitid.
    let watchdog = thread::Builder::new()
        .name("mv-native-watch".into())
        .spawn(move || {
            loop {
                if let Some(reason) = stop.check() {
                    let _ = killpg(group, Signal::SIGKILL);
                    return Some(reason);
                }
                if exit_seen.recv_timeout(stop.next_look()) != Err(RecvTimeoutError::Timeout) {
                    return None;
                }
            }
        });
    let watchdog = match watchdog {
        Ok(watchdog) => Some(watchdog),
        Err(e) => {
            let _ = killpg(group, Signal::SIGKILL);
            tracing::error!(
                "cannot start the watchdog of {}: {e}; killed it",
                program.display()
            );
            None
        }
    };
    let waited = loop {
        // SAFETY: an all-zero siginfo is a valid value for waitid to overwrite.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer; `pid` is our child. WNOWAIT leaves it unreaped.
        let rc =
            unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 {
            break Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            break Err(err);
        }
    };
    drop(exited);
    // Whatever outlived the leader in its group, and beyond it (the sandbox's cgroup).
    let _ = killpg(group, Signal::SIGKILL);
    kill_rest();
    let stopped = match watchdog {
        Some(watchdog) => watchdog.join().unwrap_or(None),
        None => Some(Stopped::Limit),
    };
    if let Err(err) = waited {
        return Err(Error::io(program, "wait for", err));
    }
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers; the leader has ended, so this returns at once.
        let rc = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
        if rc == pid as i32 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::io(program, "reap", err));
        }
    }
    let exit_code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Ok(Ended {
        exit_code,
        stopped,
        user_us: micros(usage.ru_utime),
        system_us: micros(usage.ru_stime),
        max_rss_bytes: usage.ru_maxrss as u64 * 1024,
    })
}

/// stdout and stderr, read on a thread of their own.
struct Capture {
    done: mpsc::Receiver<(Captured, Captured)>,
    stop: OwnedFd,
}

impl Capture {
    /// What was read: all of it, or what came within [`OUTPUT_GRACE`] of the leader's end
    /// if something still holds the pipes open.
    fn finish(self) -> (Captured, Captured) {
        if let Ok(output) = self.done.recv_timeout(OUTPUT_GRACE) {
            return output;
        }
        let _ = nix::unistd::write(&self.stop, &[1]);
        self.done.recv().unwrap_or_default()
    }
}

/// Reads both pipes to their ends, or until told to stop.
fn capture(
    stdout: Option<impl Into<OwnedFd>>,
    stderr: Option<impl Into<OwnedFd>>,
    cap: usize,
) -> std::io::Result<Capture> {
    let (done, finished) = mpsc::sync_channel(1);
    let (stop_read, stop) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let mut pipes = [stdout.map(nonblocking), stderr.map(nonblocking)];
    thread::spawn(move || {
        let streams = [CaptureStream::new(cap), CaptureStream::new(cap)];
        let mut buf = [0u8; 16 << 10];
        while pipes.iter().any(Option::is_some) {
            let mut fds: Vec<PollFd<'_>> = pipes
                .iter()
                .flatten()
                .map(|pipe| PollFd::new(pipe.as_fd(), PollFlags::POLLIN))
                .collect();
            fds.push(PollFd::new(stop_read.as_fd(), PollFlags::POLLIN));
            if poll(&mut fds, PollTimeout::NONE).is_err() {
                continue;
            }
            if fds
                .last()
                .and_then(PollFd::revents)
                .is_some_and(|r| !r.is_empty())
            {
                break;
            }
            for (index, pipe) in pipes.iter_mut().enumerate() {
                if let Some(reader) = pipe {
                    match reader.read(&mut buf) {
                        Ok(0) => *pipe = None,
                        Ok(n) => streams[index].push(&buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => *pipe = None,
                    }
                }
            }
        }
        let [out, err] = streams;
        let _ = done.send((out.take(), err.take()));
    });
    Ok(Capture {
        done: finished,
        stop,
    })
}

/// A pipe read without blocking, so one quiet stream never holds up the other.
fn nonblocking(pipe: impl Into<OwnedFd>) -> std::fs::File {
    let pipe = std::fs::File::from(pipe.into());
    let _ = fcntl(pipe.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    pipe
}

/// Writes stdin on a thread of its own; a tool that does not read it is not an error.
fn feed(pipe: Option<impl Write + Send + 'static>, bytes: Vec<u8>) {
    thread::spawn(move || {
        if let Some(mut pipe) = pipe {
            let _ = pipe.write_all(&bytes);
        }
    });
}
