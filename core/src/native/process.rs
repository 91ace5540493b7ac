//! Running one native binary: no shell, only the environment given, stdin fed from memory,
//! stdout and stderr captured (head up to the limit, 8 KiB tails, totals), and the whole
//! process group killed at the time limit.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::allowlist::AllowedBinary;
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
    /// The working directory.
    pub cwd: &'a Path,
}

/// How a process ended.
pub(crate) struct Finished {
    /// The exit code; a process killed by signal N reports 128 + N, as shells do.
    pub exit_code: i32,
    pub stdout: Captured,
    pub stderr: Captured,
    /// True when the time limit ended it.
    pub timed_out: bool,
}

/// Runs the invocation to its end or its time limit.
pub(crate) fn run(invocation: &Invocation<'_>) -> Result<Finished> {
    let binary = invocation.binary;
    // Executed through the descriptor the allowlist checked, so a file swapped in at the
    // same path since then is not what runs.
    let program = format!("/proc/self/fd/{}", binary.file.as_raw_fd());
    let mut command = Command::new(&program);
    command
        .arg0(&binary.requested)
        .args(invocation.args)
        .env_clear()
        .envs(invocation.env.iter().map(|(k, v)| (k, v)))
        .current_dir(invocation.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so the time limit reaches every descendant.
        .process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| Error::io(&binary.resolved, "spawn", e))?;
    let stdout = capture(child.stdout.take(), invocation.output_bytes);
    let stderr = capture(child.stderr.take(), invocation.output_bytes);
    let feeder = feed(child.stdin.take(), invocation.stdin.to_vec());
    let (status, timed_out) = wait(&mut child, invocation.timeout, &binary.resolved)?;
    // The group outlives its leader when a descendant kept running (or kept the pipes
    // open); nothing of a finished call may linger.
    let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let _ = feeder.join();
    Ok(Finished {
        exit_code: exit_code(status),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        timed_out,
    })
}

/// Waits for the child up to `timeout`; past it, kills its process group. Returns the exit
/// status and whether the time limit ended it.
fn wait(child: &mut Child, timeout: Duration, binary: &Path) -> Result<(ExitStatus, bool)> {
    let group = Pid::from_raw(child.id() as i32);
    let (exited, exit_seen) = mpsc::channel::<()>();
    // A watchdog rather than polling: this thread sleeps in waitpid.
    let watchdog = thread::Builder::new()
        .name("mv-native-watch".into())
        .spawn(move || {
            let expired = exit_seen.recv_timeout(timeout) == Err(RecvTimeoutError::Timeout);
            if expired {
                let _ = killpg(group, Signal::SIGKILL);
            }
            expired
        })
        .map_err(|e| Error::io(binary, "start the watchdog of", e));
    let watchdog = match watchdog {
        Ok(watchdog) => watchdog,
        Err(err) => {
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.wait();
            return Err(err);
        }
    };
    let status = child.wait();
    drop(exited);
    let timed_out = watchdog.join().unwrap_or(false);
    Ok((
        status.map_err(|e| Error::io(binary, "wait for", e))?,
        timed_out,
    ))
}

fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(-1)
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
