//! What the jailer is told: the [`JailSpec`] a native tool runs under.
//!
//! megavisor-core writes it; the `megavisor-jail` program (a fresh, single-threaded process,
//! which can therefore do anything between `fork` and `exec` safely) reads it, builds the
//! sandbox and executes the tool. The program is small and separate on purpose, as
//! Firecracker's jailer is: the supervisor never calls `unshare`, `mount` or `setuid` itself.

pub mod filters;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The exit status of a jailer that could not build the sandbox; the reason is on its error
/// descriptor ([`JailSpec::error_fd`]).
pub const SETUP_FAILED: i32 = 120;

/// The sandbox of one native tool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailSpec {
    /// The binary to execute, an open descriptor inherited from the caller.
    pub binary_fd: i32,
    /// Where setup errors are written (closed on a successful exec).
    pub error_fd: i32,
    /// argv, argv\[0\] included.
    pub argv: Vec<String>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    /// Namespaces to create.
    pub namespaces: Namespaces,
    /// The root: an operator's root directory, or `None` for a fresh one built from the
    /// host's read-only [`JailSpec::read_only`] directories. Read-only either way.
    pub root: Option<PathBuf>,
    /// Host directories bound read-only into a fresh root (ignored with `root`).
    pub read_only: Vec<PathBuf>,
    /// A host directory bound read-write, `noexec,nosuid,nodev`, at [`WORKSPACE`], and the
    /// tool's working directory; `None` for a private tmpfs there.
    pub workspace: Option<PathBuf>,
    /// Size of the private `/tmp` (and of a tmpfs workspace), bytes.
    pub tmp_bytes: u64,
    /// The uid and gid the tool runs as.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// Resource limits (setrlimit), each `None` left as inherited.
    pub rlimits: Rlimits,
    /// Cgroup directories to join before anything else (one for v2, one per controller for
    /// v1), so that every process of the tool is counted.
    pub cgroups: Vec<PathBuf>,
    /// The call's output directory (`<out-dir>/<execution_id>/`), mounted read-write,
    /// `noexec,nosuid,nodev`, at [`OUT_DIR`].
    pub out_dir: Option<PathBuf>,
    /// The hostname inside a new UTS namespace.
    pub hostname: String,
    /// The seccomp filters (seccompiler's JSON) whose sandboxed tool set the tool runs
    /// under; `None` for the built-in ones.
    #[serde(default)]
    pub seccomp_filters: Option<String>,
    /// The exec gate: when set, only these files may be executed in the sandbox, which the
    /// kernel enforces (Landlock); `None` for no gate.
    #[serde(default)]
    pub exec_gate: Option<Vec<GrantedFile>>,
}

/// A file the exec gate lets the tool execute: its path inside the sandbox, and the
/// identity of the content that was hashed (a file changed since is refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantedFile {
    /// Where the tool sees it.
    pub path: PathBuf,
    /// `st_dev` when it was hashed.
    pub device: u64,
    /// `st_ino` when it was hashed.
    pub inode: u64,
    /// `st_size` when it was hashed.
    pub size: u64,
    /// `st_mtime` when it was hashed, in nanoseconds since the epoch.
    pub modified_ns: i128,
    /// `st_ctime` when it was hashed, in nanoseconds since the epoch.
    pub changed_ns: i128,
}

/// Where the call's output directory appears inside the sandbox.
pub const OUT_DIR: &str = "/out";

/// Where the workspace appears inside the sandbox.
pub const WORKSPACE: &str = "/workspace";

/// Which namespaces a tool gets in the native sandbox, each on unless turned off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespaces {
    /// A user namespace in which the unprivileged uid is mapped to itself.
    pub user: bool,
    /// A PID namespace: the tool is PID 1 and sees no host process.
    pub pid: bool,
    /// A mount namespace (needed for the private root, /proc and /tmp).
    pub mount: bool,
    /// A UTS namespace with its own hostname.
    pub uts: bool,
    /// An IPC namespace.
    pub ipc: bool,
    /// A network namespace with no interface up: no network.
    pub net: bool,
}

impl Default for Namespaces {
    fn default() -> Self {
        Namespaces {
            user: true,
            pid: true,
            mount: true,
            uts: true,
            ipc: true,
            net: true,
        }
    }
}

/// setrlimit values (soft = hard).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rlimits {
    /// RLIMIT_NOFILE: open files.
    pub open_files: Option<u64>,
    /// RLIMIT_FSIZE: largest file written, bytes.
    pub file_bytes: Option<u64>,
    /// RLIMIT_CPU: CPU seconds.
    pub cpu_seconds: Option<u64>,
    /// RLIMIT_CORE: core dump size (0 for none).
    pub core_bytes: Option<u64>,
    /// RLIMIT_NPROC: processes of the uid (a fallback where the pids controller is absent).
    pub processes: Option<u64>,
}
