//! `megavisor-jail --spec-fd FD`: builds the sandbox that the [`JailSpec`] read from FD
//! describes (JSON, kept off the command line, where every user could read the tool's
//! environment) and executes the tool in it. Run by megavisor-core for each sandboxed native tool; not meant for people.
//!
//! In order: join the cgroups; unshare the mount, UTS, IPC, network and PID namespaces;
//! fork, so the tool's side is PID 1 of its namespace (this side waits and passes its exit
//! status on); build a read-only root and `pivot_root` into it, with private `/proc`, `/dev`
//! and `/tmp` and the workspace `noexec,nosuid,nodev`; set the hostname and rlimits; become
//! the unprivileged uid, then enter a user namespace mapping only that uid; set
//! `no_new_privs`; install the seccomp filter; execute the binary through the descriptor
//! the caller checked. Any failure is written to the error descriptor and ends the jailer
//! with [`SETUP_FAILED`] before the tool ran.

mod gate;
mod root;

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::process::ExitCode;

use megavisor_jail::{JailSpec, Namespaces, Rlimits, SETUP_FAILED, filters};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sched::{CloneFlags, unshare};
use nix::sys::prctl;
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fexecve, fork, setgroups, setresgid, setresuid};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fd = match args.as_slice() {
        [flag, fd] if flag == "--spec-fd" => fd.parse::<i32>().ok(),
        _ => None,
    };
    let Some(fd) = fd else {
        return usage("usage: megavisor-jail --spec-fd FD");
    };
    // SAFETY: the caller passed this descriptor open on the spec, for this process to own.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let spec = match serde_json::from_reader::<_, JailSpec>(file) {
        Ok(spec) => spec,
        Err(e) => return usage(&format!("the spec is not valid: {e}")),
    };
    let error = jail(&spec).unwrap_err();
    // SAFETY: the caller passed this descriptor open for writing, and nothing else owns it.
    let mut report = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(spec.error_fd) });
    let _ = report.write_all(error.as_bytes());
    ExitCode::from(SETUP_FAILED as u8)
}

fn usage(message: &str) -> ExitCode {
    eprintln!("megavisor-jail: {message}");
    ExitCode::from(SETUP_FAILED as u8)
}

/// Builds the sandbox and executes the tool; returns only on failure.
fn jail(spec: &JailSpec) -> Result<std::convert::Infallible, String> {
    close_all_but(&[spec.binary_fd, spec.error_fd])?;
    // Inherited from the caller, but not to be inherited by the tool: the exec closes them.
    for fd in [spec.binary_fd, spec.error_fd] {
        // SAFETY: the caller passed these descriptors open.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| format!("fcntl: {e}"))?;
    }
    for cgroup in &spec.cgroups {
        let procs = cgroup.join("cgroup.procs");
        std::fs::write(&procs, format!("{}\n", std::process::id()))
            .map_err(|e| format!("join cgroup {}: {e}", procs.display()))?;
    }
    unshare(namespace_flags(spec.namespaces)).map_err(|e| format!("unshare: {e}"))?;
    if spec.namespaces.pid {
        // SAFETY: this process is single-threaded (a fresh exec of this program).
        match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
            ForkResult::Parent { child } => pass_on_exit(child),
            ForkResult::Child => {}
        }
    }
    // Should the jailer die, so does the tool (and with it, as PID 1, its namespace).
    prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
    if spec.namespaces.mount {
        root::enter(spec)?;
    }
    if spec.namespaces.uts {
        nix::unistd::sethostname(&spec.hostname).map_err(|e| format!("sethostname: {e}"))?;
    }
    apply_rlimits(&spec.rlimits)?;
    drop_privileges(spec)?;
    // Changing uid cleared the parent-death signal set above.
    prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
    prctl::set_no_new_privs().map_err(|e| format!("PR_SET_NO_NEW_PRIVS: {e}"))?;
    let set = match &spec.exec_gate {
        Some(granted) => {
            // SAFETY: the caller passed this descriptor open on the binary.
            let binary = unsafe { BorrowedFd::borrow_raw(spec.binary_fd) };
            gate::restrict(granted, binary)?;
            filters::GATED_TOOL
        }
        None => filters::SANDBOXED_TOOL,
    };
    let source = spec.seccomp_filters.as_deref();
    let filters = filters::compile(set, source).map_err(|e| e.to_string())?;
    filters::install(&filters).map_err(|e| e.to_string())?;
    let cwd = if spec.namespaces.mount {
        megavisor_jail::WORKSPACE
    } else {
        "/"
    };
    nix::unistd::chdir(cwd).map_err(|e| format!("chdir {cwd}: {e}"))?;
    let argv = c_strings(spec.argv.iter().map(String::as_str))?;
    let env = c_strings(
        spec.env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    )?;
    // SAFETY: the caller passed this descriptor open on the binary for the jailer's lifetime.
    let binary = unsafe { BorrowedFd::borrow_raw(spec.binary_fd) };
    let errno = fexecve(binary, &argv, &env).unwrap_err();
    Err(format!(
        "exec {}: {errno}",
        spec.argv.first().map_or("", String::as_str)
    ))
}

/// Closes every descriptor above stderr but `keep`, so that nothing the supervisor (or
/// whatever started it) left open reaches the tool: not a file it inherited, not one a fork
/// handler reopened without close-on-exec.
fn close_all_but(keep: &[i32]) -> Result<(), String> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .collect();
    keep.sort_unstable();
    let mut from = 3;
    let close = |first: u32, last: u32| {
        // SAFETY: closing descriptors this process owns; none is in use by Rust objects
        // (the spec file was read and dropped; stdio is below 3).
        if unsafe { libc::close_range(first, last, 0) } < 0 {
            return Err(format!("close_range: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    };
    for fd in keep {
        if fd > from {
            close(from, fd - 1)?;
        }
        from = from.max(fd + 1);
    }
    close(from, u32::MAX)
}

fn namespace_flags(ns: Namespaces) -> CloneFlags {
    let mut flags = CloneFlags::empty();
    for (on, flag) in [
        (ns.mount, CloneFlags::CLONE_NEWNS),
        (ns.uts, CloneFlags::CLONE_NEWUTS),
        (ns.ipc, CloneFlags::CLONE_NEWIPC),
        (ns.net, CloneFlags::CLONE_NEWNET),
        (ns.pid, CloneFlags::CLONE_NEWPID),
    ] {
        if on {
            flags |= flag;
        }
    }
    flags
}

/// Waits for the tool (PID 1 of its namespace) and exits as it did: its code, or 128 + the
/// signal that killed it.
fn pass_on_exit(child: Pid) -> ! {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => std::process::exit(128 + signal as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("megavisor-jail: waitpid: {e}");
                std::process::exit(SETUP_FAILED);
            }
        }
    }
}

fn apply_rlimits(limits: &Rlimits) -> Result<(), String> {
    for (value, resource, name) in [
        (limits.open_files, Resource::RLIMIT_NOFILE, "RLIMIT_NOFILE"),
        (limits.file_bytes, Resource::RLIMIT_FSIZE, "RLIMIT_FSIZE"),
        (limits.cpu_seconds, Resource::RLIMIT_CPU, "RLIMIT_CPU"),
        (limits.core_bytes, Resource::RLIMIT_CORE, "RLIMIT_CORE"),
        (limits.processes, Resource::RLIMIT_NPROC, "RLIMIT_NPROC"),
    ] {
        if let Some(value) = value {
            setrlimit(resource, value, value).map_err(|e| format!("setrlimit {name}: {e}"))?;
        }
    }
    Ok(())
}

/// Becomes the unprivileged uid and gid, with no supplementary groups; then, if asked,
/// enters a user namespace in which only that uid and gid exist.
fn drop_privileges(spec: &JailSpec) -> Result<(), String> {
    let (uid, gid) = (Uid::from_raw(spec.uid), Gid::from_raw(spec.gid));
    setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    setresgid(gid, gid, gid).map_err(|e| format!("setresgid {gid}: {e}"))?;
    setresuid(uid, uid, uid).map_err(|e| format!("setresuid {uid}: {e}"))?;
    if spec.namespaces.user {
        unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| format!("unshare user namespace: {e}"))?;
        // Changing uid made this process undumpable, which gives its /proc/self files to
        // root: it could not write its own maps. Dumpable again until the exec resets it.
        prctl::set_dumpable(true).map_err(|e| format!("PR_SET_DUMPABLE: {e}"))?;
        for (file, content) in [
            ("/proc/self/setgroups", "deny".to_owned()),
            ("/proc/self/uid_map", format!("{uid} {uid} 1")),
            ("/proc/self/gid_map", format!("{gid} {gid} 1")),
        ] {
            std::fs::write(file, content).map_err(|e| format!("write {file}: {e}"))?;
        }
    }
    Ok(())
}

fn c_strings<'a>(strings: impl Iterator<Item = &'a str>) -> Result<Vec<CString>, String> {
    strings
        .map(|s| CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte")))
        .collect()
}
