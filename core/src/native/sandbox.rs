//! The native sandbox: what the operator configures, and the jailer's spec for one call.

use std::path::PathBuf;

use megavisor_jail::{GrantedFile, JailSpec};
pub use megavisor_jail::{Namespaces, Rlimits};

use super::cgroup::{CgroupVersion, ResourceLimits};

/// How sandboxed native tools run (each call in its own namespaces, root and cgroup).
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// The `megavisor-jail` program. Default: beside the current executable.
    pub jailer: PathBuf,
    /// Namespaces each call gets (all by default; the network one leaves no network).
    pub namespaces: Namespaces,
    /// An operator's root directory; `None` builds a fresh one from `read_only`.
    pub root: Option<PathBuf>,
    /// Host directories a fresh root shows, read-only.
    pub read_only: Vec<PathBuf>,
    /// A host directory mounted read-write, `noexec,nosuid,nodev`, at `/workspace` (the
    /// tools' working directory); `None` for a private tmpfs.
    pub workspace: Option<PathBuf>,
    /// Size of the private `/tmp` (and of a tmpfs workspace), bytes.
    pub tmp_bytes: u64,
    /// The unprivileged uid and gid tools run as.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// setrlimit values.
    pub rlimits: Rlimits,
    /// Cgroup limits of every call (a request's memory limit replaces `memory_bytes`).
    pub resources: ResourceLimits,
    /// Which cgroup hierarchy; `None` for no cgroup (no limits, usage from the process only).
    pub cgroups: Option<CgroupVersion>,
    /// The hostname inside.
    pub hostname: String,
    /// The seccomp filters (seccompiler's JSON) of sandboxed tools; `None` for the built-in
    /// ones.
    pub seccomp_filters: Option<String>,
    /// The exec gate: a tool may execute only files whose content is allowed (the
    /// allowlist's digests, the manifest's originals), enforced by the kernel (Landlock);
    /// a host without Landlock refuses to start gated tools.
    pub exec_gate: bool,
    /// The directories (as the sandbox shows them) whose files the gate may grant.
    pub gate_dirs: Vec<PathBuf>,
    /// Whether the gate also allows the manifest's originals (by default it does; a root
    /// with a policy of its own, an image's map, turns it off).
    pub gate_originals: bool,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        let jailer = std::env::current_exe()
            .map(|exe| exe.with_file_name("megavisor-jail"))
            .unwrap_or_else(|_| PathBuf::from("megavisor-jail"));
        SandboxOptions {
            jailer,
            namespaces: Namespaces::default(),
            root: None,
            read_only: ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc"]
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            workspace: None,
            tmp_bytes: 64 << 20,
            uid: 65534,
            gid: 65534,
            rlimits: Rlimits {
                open_files: Some(1024),
                core_bytes: Some(0),
                ..Rlimits::default()
            },
            resources: ResourceLimits {
                pids: Some(256),
                ..ResourceLimits::default()
            },
            cgroups: Some(CgroupVersion::Auto),
            hostname: "megavisor".to_owned(),
            seccomp_filters: None,
            exec_gate: false,
            gate_originals: true,
            gate_dirs: [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        }
    }
}

impl SandboxOptions {
    /// The jailer's spec for one call; `workspace` is the call's (see `workspace_of`).
    #[allow(clippy::too_many_arguments)] // one per field of the call's part of the spec
    pub(crate) fn spec(
        &self,
        binary_fd: i32,
        error_fd: i32,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cgroups: Vec<PathBuf>,
        workspace: Option<PathBuf>,
        out_dir: Option<PathBuf>,
        exec_gate: Option<Vec<GrantedFile>>,
    ) -> JailSpec {
        JailSpec {
            binary_fd,
            error_fd,
            argv,
            env,
            namespaces: self.namespaces,
            root: self.root.clone(),
            read_only: self.read_only.clone(),
            workspace,
            tmp_bytes: self.tmp_bytes,
            uid: self.uid,
            gid: self.gid,
            rlimits: self.rlimits,
            cgroups,
            out_dir,
            hostname: self.hostname.clone(),
            seccomp_filters: self.seccomp_filters.clone(),
            exec_gate,
        }
    }
}
