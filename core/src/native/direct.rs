//! Starting a native binary directly: a plain process of the supervisor's user, or of the
//! peer the call is for, in a process group of its own (which the time limit kills).

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use super::allowlist::AllowedBinary;
use super::process::{Prepared, close_all_on_exec};
use crate::caller::Credentials;

/// How a binary runs outside the sandbox.
pub(crate) struct Direct<'a> {
    /// The working directory.
    pub cwd: &'a Path,
    /// The user the process runs as, when not this process's own.
    pub run_as: Option<&'a Credentials>,
}

impl Direct<'_> {
    /// The command running `binary` with `argv0`, `args` and exactly `env`.
    pub(super) fn command(
        &self,
        binary: &AllowedBinary,
        argv0: String,
        args: &[String],
        env: &[(String, String)],
    ) -> Prepared {
        // Executed through the descriptor the allowlist checked, so a file swapped in at
        // the same path since then is not what runs.
        let mut command = Command::new(format!("/proc/self/fd/{}", binary.file.as_raw_fd()));
        command
            .arg0(argv0)
            .args(args)
            .current_dir(self.cwd)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)));
        match self.run_as {
            Some(user) => {
                // Another user's tool runs as that user, with its groups, and its own
                // process group; that takes code between fork and exec (so a fork, not
                // posix_spawn).
                let groups = user.groups.clone();
                let (uid, gid) = (user.uid, user.gid);
                // SAFETY: only async-signal-safe calls (setgroups, setresgid, setresuid,
                // setpgid, close_range) run between fork and exec, on memory allocated
                // before it.
                unsafe {
                    command.pre_exec(move || {
                        let set = [
                            libc::setgroups(groups.len(), groups.as_ptr()),
                            libc::setresgid(gid, gid, gid),
                            libc::setresuid(uid, uid, uid),
                            libc::setpgid(0, 0),
                        ];
                        if set.contains(&-1) {
                            return Err(std::io::Error::last_os_error());
                        }
                        close_all_on_exec()
                    });
                }
            }
            None => {
                // The supervisor's own user: its own process group is enough for the time
                // limit, and no code between fork and exec lets the standard library spawn
                // it with posix_spawn, without copying this process's page tables (a fork
                // of a process holding the engine's reservations measured twice as slow).
                command.process_group(0);
            }
        }
        Prepared {
            command,
            program: binary.resolved.clone(),
            setup_errors: None,
            handed_over: Vec::new(),
        }
    }
}
