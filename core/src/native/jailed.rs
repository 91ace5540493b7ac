//! Starting a native binary through the jailer, into its sandbox: a session of its own, a
//! spec passed in an anonymous file, and nothing else of this process's descriptors.

use std::io::Seek;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};

use super::allowlist::AllowedBinary;
use super::process::{Prepared, close_all_on_exec};
use super::sandbox::SandboxOptions;
use crate::error::{Error, Result};

/// How a sandboxed call is jailed.
pub(crate) struct Jail<'a> {
    pub sandbox: &'a SandboxOptions,
    /// The cgroup directories the jailer joins.
    pub cgroups: Vec<PathBuf>,
    /// The host directory shown at `/workspace` (the principal's own), if any.
    pub workspace: Option<PathBuf>,
    /// The call's output directory, shown inside the sandbox at `/out`.
    pub out_dir: Option<&'a Path>,
    /// The files the exec gate grants, when the sandbox has the gate.
    pub exec_gate: Option<Vec<megavisor_jail::GrantedFile>>,
}

impl Jail<'_> {
    /// The command starting the jailer, which runs `binary` with `argv0`, `args` and
    /// exactly `env` in the sandbox.
    pub(super) fn command(
        &self,
        binary: &AllowedBinary,
        argv0: String,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<Prepared> {
        let jailer = &self.sandbox.jailer;
        let (error_read, error_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| Error::io(jailer, "create the error pipe of", e.into()))?;
        let binary_fd = binary.file.as_raw_fd();
        let argv = std::iter::once(argv0).chain(args.iter().cloned()).collect();
        let spec = self.sandbox.spec(
            binary_fd,
            error_write.as_raw_fd(),
            argv,
            env.to_vec(),
            self.cgroups.clone(),
            self.workspace.clone(),
            self.out_dir.map(Path::to_owned),
            self.exec_gate.clone(),
        );
        // The spec (with the tool's environment) travels in a descriptor, not on the
        // command line where every user could read it.
        let spec = spec_file(&spec).map_err(|e| Error::io(jailer, "write the spec of", e))?;
        let mut command = Command::new(jailer);
        command
            .arg("--spec-fd")
            .arg(spec.as_raw_fd().to_string())
            .current_dir("/")
            .env_clear();
        let inherited = [binary_fd, error_write.as_raw_fd(), spec.as_raw_fd()];
        // SAFETY: only async-signal-safe calls (setsid, prctl, close_range, fcntl) run
        // between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // A session of its own: its own process group, which the time limit kills,
                // and no controlling terminal to type into.
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Should the supervisor die, so does the tool.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Nothing but what the jailer needs crosses the exec: not even what a fork
                // handler reopened in this child without close-on-exec (Wasmtime's
                // pagemap descriptor).
                close_all_on_exec()?;
                for &fd in &inherited {
                    inherit(fd)?;
                }
                Ok(())
            });
        }
        Ok(Prepared {
            command,
            program: jailer.clone(),
            setup_errors: Some(error_read),
            handed_over: vec![error_write, OwnedFd::from(spec)],
        })
    }
}

/// The jailer's spec in an anonymous file, rewound, for it to read.
fn spec_file(spec: &megavisor_jail::JailSpec) -> std::io::Result<std::fs::File> {
    let mut file = tempfile::tempfile()?;
    serde_json::to_writer(&mut file, spec)?;
    file.seek(std::io::SeekFrom::Start(0))?;
    Ok(file)
}

/// Clears close-on-exec on `fd`, so the jailer inherits it.
fn inherit(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: the descriptor is open for the whole spawn (the caller holds it).
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))
        .map(drop)
        .map_err(std::io::Error::from)
}
