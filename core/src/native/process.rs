//! Running one native binary: no shell, only the environment given, stdin fed from memory,
//! stdout and stderr captured (head up to the limit, 8 KiB tails, totals), the whole process
//! group killed at the time limit; directly, or through the jailer into its sandbox.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::allowlist::AllowedBinary;
use super::sandbox::SandboxOptions;
use crate::capture::{CaptureStream, Captured};
use crate::error::{Error, Result};

/// What to run and how.
pub(crate) struct Invocation<'a> {
    pub binary: &'a AllowedBinary,
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub stdin: &'a [u8],
    pub timeout: Duration,
    /// Bytes of stdout and of stderr kept in full.
    pub output_bytes: usize,
    /// The working directory (outside a sandbox; inside, it is the workspace).
    pub cwd: &'a Path,
    /// The sandbox and the cgroup directories its jailer joins; `None` runs directly.
    pub jail: Option<(&'a SandboxOptions, Vec<std::path::PathBuf>)>,
}

/// How a process ended.
pub(crate) struct Finished {
    /// The exit code; a process killed by signal N reports 128 + N, as shells do.
    pub exit_code: i32,
    pub stdout: Captured,
    pub stderr: Captured,
    /// True when the time limit ended it.
    pub timed_out: bool,
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
    requests: Mutex<mpsc::Sender<(Command, mpsc::SyncSender<std::io::Result<Child>>)>>,
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
        Ok(Spawner {
            requests: Mutex::new(requests),
        })
    }

    fn spawn(&self, command: Command) -> std::io::Result<Child> {
        let (reply, answer) = mpsc::sync_channel(1);
        let sent = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send((command, reply));
        let gone = || std::io::Error::other("the spawning thread is gone");
        sent.map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

/// Runs the invocation to its end or its time limit.
pub(crate) fn run(spawner: &Spawner, invocation: &Invocation<'_>) -> Result<Finished> {
    let binary = invocation.binary;
    let binary_fd = binary.file.as_raw_fd();
    let argv0 = binary.requested.display().to_string();
    let (mut command, error_pipe, program) = match &invocation.jail {
        None => {
            // Executed through the descriptor the allowlist checked, so a file swapped in at
            // the same path since then is not what runs.
            let program = format!("/proc/self/fd/{binary_fd}");
            let mut command = Command::new(&program);
            command
                .arg0(&argv0)
                .args(invocation.args)
                .current_dir(invocation.cwd);
            (command, None, binary.resolved.clone())
        }
        Some((sandbox, cgroups)) => {
            let (error_read, error_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
                .map_err(|e| Error::io(&sandbox.jailer, "create the error pipe of", e.into()))?;
            let argv = std::iter::once(argv0)
                .chain(invocation.args.iter().cloned())
                .collect();
            let spec = sandbox.spec(
                binary_fd,
                error_write.as_raw_fd(),
                argv,
                invocation.env.to_vec(),
                cgroups.clone(),
            );
            let mut command = Command::new(&sandbox.jailer);
            command
                .arg(serde_json::to_string(&spec).expect("specs serialize"))
                .current_dir("/");
            let inherited = [binary_fd, error_write.as_raw_fd()];
            // SAFETY: only fcntl, which is async-signal-safe, runs between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    for fd in inherited {
                        inherit(fd)?;
                    }
                    Ok(())
                });
            }
            (
                command,
                Some((error_read, error_write)),
                sandbox.jailer.clone(),
            )
        }
    };
    command
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so the time limit reaches every descendant.
        .process_group(0);
    if invocation.jail.is_none() {
        // The jailer gets the tool's environment in its spec, and none itself.
        command.envs(invocation.env.iter().map(|(k, v)| (k, v)));
    }
    let mut child = spawner
        .spawn(command)
        .map_err(|e| Error::io(&program, "spawn", e))?;
    let error_read = error_pipe.map(|(read, write)| {
        drop(write);
        read
    });
    let stdout = capture(child.stdout.take(), invocation.output_bytes);
    let stderr = capture(child.stderr.take(), invocation.output_bytes);
    let feeder = feed(child.stdin.take(), invocation.stdin.to_vec());
    let ended = wait(child.id(), invocation.timeout, &program)?;
    // The group outlives its leader when a descendant kept running (or kept the pipes
    // open); nothing of a finished call may linger.
    let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let _ = feeder.join();
    let finished = Finished {
        exit_code: ended.exit_code,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        timed_out: ended.timed_out,
        user_us: ended.user_us,
        system_us: ended.system_us,
        max_rss_bytes: ended.max_rss_bytes,
    };
    if let Some(read) = error_read {
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
    Ok(finished)
}

/// Clears close-on-exec on `fd`, so the jailer inherits it.
fn inherit(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: the descriptor is open for the whole spawn (the caller holds it).
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))
        .map(drop)
        .map_err(std::io::Error::from)
}

/// How the process ended, from `wait4`.
struct Ended {
    exit_code: i32,
    timed_out: bool,
    user_us: u64,
    system_us: u64,
    max_rss_bytes: u64,
}

/// Waits for the process up to `timeout`; past it, kills its process group.
fn wait(pid: u32, timeout: Duration, program: &Path) -> Result<Ended> {
    let group = Pid::from_raw(pid as i32);
    let (exited, exit_seen) = mpsc::channel::<()>();
    // A watchdog rather than polling: this thread sleeps in wait4.
    let watchdog = thread::Builder::new()
        .name("mv-native-watch".into())
        .spawn(move || {
            let expired = exit_seen.recv_timeout(timeout) == Err(RecvTimeoutError::Timeout);
            if expired {
                let _ = killpg(group, Signal::SIGKILL);
            }
            expired
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
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to a status and a rusage; `pid` is our unreaped child.
        let rc = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
        if rc == pid as i32 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::io(program, "wait for", err));
        }
    }
    drop(exited);
    let timed_out = watchdog.is_none_or(|w| w.join().unwrap_or(false));
    let exit_code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Ok(Ended {
        exit_code,
        timed_out,
        user_us: micros(usage.ru_utime),
        system_us: micros(usage.ru_stime),
        max_rss_bytes: usage.ru_maxrss as u64 * 1024,
    })
}

/// Reads a pipe to its end on a thread of its own.
fn capture(pipe: Option<impl Read + Send + 'static>, cap: usize) -> thread::JoinHandle<Captured> {
    thread::spawn(move || {
        let stream = CaptureStream::new(cap);
        if let Some(mut pipe) = pipe {
            let mut buf = [0u8; 16 << 10];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                stream.push(&buf[..n]);
            }
        }
        stream.take()
    })
}

/// Writes stdin on a thread of its own; a tool that does not read it is not an error.
fn feed(pipe: Option<impl Write + Send + 'static>, bytes: Vec<u8>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        if let Some(mut pipe) = pipe {
            let _ = pipe.write_all(&bytes);
        }
    })
}
