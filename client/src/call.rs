//! Building a call.

use std::time::Duration;

use megavisor_wire::proto;

/// One tool invocation, built up field by field.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Call {
    pub(crate) message: proto::Call,
}

impl Call {
    /// A call of the entry `name` with no arguments.
    pub fn new(name: impl Into<String>) -> Self {
        Call {
            message: proto::Call {
                tool: Some(proto::call::Tool::Name(name.into())),
                ..proto::Call::default()
            },
        }
    }

    /// A call of whichever entry stands for the native binary with this SHA-256 or BLAKE3
    /// hex digest.
    pub fn by_digest(digest: impl Into<String>) -> Self {
        Call {
            message: proto::Call {
                tool: Some(proto::call::Tool::Digest(digest.into())),
                ..proto::Call::default()
            },
        }
    }

    /// A call of `tool` as the bindings name it: an absolute path is a native binary
    /// ([`Call::native`]), anything else an entry of the bundle ([`Call::new`]).
    pub fn of_tool(tool: impl Into<String>) -> Self {
        let tool = tool.into();
        if tool.starts_with('/') {
            Call::native(tool)
        } else {
            Call::new(tool)
        }
    }

    /// A call of the native binary at this absolute path, run as a process if the
    /// supervisor's allowlist allows it.
    pub fn native(path: impl Into<String>) -> Self {
        Call {
            message: proto::Call {
                tool: Some(proto::call::Tool::Native(path.into())),
                ..proto::Call::default()
            },
        }
    }

    /// Sets the arguments after argv\[0\].
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.message.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Passes a JSON object of named parameters instead of arguments; the supervisor checks
    /// it against the entry's argument schema and renders it into argv.
    pub fn params_json(mut self, json: impl Into<String>) -> Self {
        self.message.params_json = json.into();
        self
    }

    /// Sets the bytes fed to stdin.
    pub fn stdin(mut self, stdin: impl Into<Vec<u8>>) -> Self {
        self.message.stdin = stdin.into();
        self
    }

    /// Adds an environment variable (the entry must allow it with an `env:` capability).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.message.env.push(proto::EnvVar {
            name: name.into(),
            value: value.into(),
        });
        self
    }

    /// Preopens the host directory `host` at `guest` (the entry must allow it).
    pub fn mount(
        mut self,
        host: impl Into<String>,
        guest: impl Into<String>,
        writable: bool,
    ) -> Self {
        self.message.mounts.push(proto::Mount {
            host: host.into(),
            guest: guest.into(),
            writable,
        });
        self
    }

    /// Runs with only these capabilities (each covered by the entry's own).
    pub fn capabilities<I, S>(mut self, capabilities: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.message.narrow_capabilities = true;
        self.message.capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the wall-clock limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        let limits = self.message.limits.get_or_insert_with(Default::default);
        limits.timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Sets the linear-memory cap in bytes.
    pub fn memory_bytes(mut self, bytes: u64) -> Self {
        self.message
            .limits
            .get_or_insert_with(Default::default)
            .memory_bytes = Some(bytes);
        self
    }

    /// Sets the instruction fuel (when the supervisor meters fuel).
    pub fn fuel(mut self, fuel: u64) -> Self {
        self.message
            .limits
            .get_or_insert_with(Default::default)
            .fuel = Some(fuel);
        self
    }

    /// Sets the bytes of stdout and of stderr returned in full.
    pub fn output_bytes(mut self, bytes: u64) -> Self {
        self.message
            .limits
            .get_or_insert_with(Default::default)
            .output_bytes = Some(bytes);
        self
    }

    /// Runs in this session ([`crate::Client::open_session`]) instead of a fresh instance.
    pub fn session(mut self, session: u64) -> Self {
        self.message.session = session;
        self
    }

    /// Sets the idempotency key: a repeated id returns the first result without running again.
    pub fn execution_id(mut self, id: impl Into<String>) -> Self {
        self.message.execution_id = id.into();
        self
    }

    /// The protocol message this call sends.
    pub fn message(&self) -> &proto::Call {
        &self.message
    }

    /// The protocol message this call sends, taken.
    pub fn into_message(self) -> proto::Call {
        self.message
    }
}

impl From<proto::Call> for Call {
    fn from(message: proto::Call) -> Self {
        Call { message }
    }
}
