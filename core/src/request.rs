//! What a caller asks for: one tool invocation.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::capability::{Access, Capability};

/// How a request names its tool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolRef {
    /// By entry name, e.g. `wc`.
    Name(String),
    /// By the SHA-256 or BLAKE3 hex digest of a native binary the entry stands for.
    Digest(String),
    /// A native binary of the host, by absolute path: run as a process if the allowlist
    /// allows it (see [`crate::native`]).
    Native(PathBuf),
}

/// A directory of the host made visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mount {
    /// Directory on the host.
    pub host: PathBuf,
    /// Absolute path at which the guest sees it.
    pub guest: String,
    /// Read-only or read-write.
    pub access: Access,
}

impl Mount {
    /// Parses `HOST:GUEST[:ro|:rw]` (read-only when the mode is omitted).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut parts = spec.splitn(3, ':');
        let (Some(host), Some(guest)) = (parts.next(), parts.next()) else {
            return Err(format!("mount {spec:?} must be HOST:GUEST[:ro|:rw]"));
        };
        let access = match parts.next() {
            None | Some("ro") => Access::ReadOnly,
            Some("rw") => Access::ReadWrite,
            Some(other) => return Err(format!("mount {spec:?}: mode {other:?} is not ro or rw")),
        };
        if host.is_empty() || guest.is_empty() {
            return Err(format!("mount {spec:?} must be HOST:GUEST[:ro|:rw]"));
        }
        Ok(Mount {
            host: host.into(),
            guest: guest.to_owned(),
            access,
        })
    }
}

/// Per-request limits; each `None` takes the entry's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limits {
    /// Linear-memory cap in bytes.
    pub memory_bytes: Option<u64>,
    /// Wall-clock limit.
    pub timeout: Option<Duration>,
    /// Instruction fuel (only when the runtime was built with fuel metering).
    pub fuel: Option<u64>,
    /// Bytes of stdout and of stderr kept in full (the 8 KiB tails are always kept).
    pub output_bytes: Option<u64>,
}

/// One tool invocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Request {
    /// The tool to run.
    pub tool: ToolRef,
    /// Arguments after argv\[0\] (which is always the entry point).
    pub args: Vec<String>,
    /// Environment variables, each allowed by an `env:` capability.
    pub env: Vec<(String, String)>,
    /// Bytes fed to the guest's stdin.
    pub stdin: Vec<u8>,
    /// Host directories to preopen, each allowed by an `fs:` capability.
    pub mounts: Vec<Mount>,
    /// Narrows the entry's capabilities for this call; `None` keeps them as declared.
    pub capabilities: Option<Vec<Capability>>,
    /// Limits for this call.
    pub limits: Limits,
    /// Idempotency key: a repeated id returns the first result without running again.
    pub execution_id: Option<String>,
    /// Run in this session (see [`crate::Runtime::open_session`]) instead of a fresh
    /// instance.
    pub session: Option<u64>,
    /// argv\[0\] of a native tool, when it is not the path requested: the name a
    /// busybox-style binary dispatches on (`/bin/sh` for `/bin/busybox`). Set by the
    /// process's own callers only (it is not on the wire); refused for an entry.
    pub argv0: Option<String>,
}

impl Request {
    /// A request for the entry `name` with no arguments.
    pub fn new(name: impl Into<String>) -> Self {
        Request {
            tool: ToolRef::Name(name.into()),
            args: Vec::new(),
            env: Vec::new(),
            stdin: Vec::new(),
            mounts: Vec::new(),
            capabilities: None,
            limits: Limits::default(),
            execution_id: None,
            session: None,
            argv0: None,
        }
    }

    /// Sets the arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Sets stdin.
    pub fn stdin(mut self, stdin: impl Into<Vec<u8>>) -> Self {
        self.stdin = stdin.into();
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Adds a mount.
    pub fn mount(mut self, mount: Mount) -> Self {
        self.mounts.push(mount);
        self
    }

    /// Sets the execution id.
    pub fn execution_id(mut self, id: impl Into<String>) -> Self {
        self.execution_id = Some(id.into());
        self
    }

    /// Sets the limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}
