//! One API over megavisor in its two modes, so every binding offers both with the same
//! calls, results and errors:
//!
//! - **embedded**: a verified bundle loaded into this process ([`megavisor_core::Runtime`]);
//! - **connected**: a running `megavisor serve`, over its shared-memory ring
//!   ([`megavisor_client::Client`]).
//!
//! Calls, outputs and errors are the client's types ([`Call`], [`Output`], [`Error`]) in both
//! modes: an embedded call is converted to the engine's request and its result back, by
//! [`convert`], the one place that knows both the wire messages and the engine's types
//! (the supervisor uses it too).

pub mod convert;

use std::path::{Path, PathBuf};

pub use megavisor_client::{Call, Client, Error, ErrorKind, Output, Result, Tool, ToolList};
use megavisor_core::{EngineOptions, Runtime, RuntimeOptions, TrustPolicy};

/// Where an embedded driver finds its bundle and whom it trusts.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Public keys trusted to sign the manifest.
    pub trusted_keys: Vec<PathBuf>,
    /// Calls that may run at once in this process.
    pub max_concurrency: u32,
}

impl EmbeddedOptions {
    /// A bundle directory and the key it must be signed with.
    pub fn new(bundle: impl Into<PathBuf>, trusted_key: impl Into<PathBuf>) -> Self {
        EmbeddedOptions {
            bundle: bundle.into(),
            trusted_keys: vec![trusted_key.into()],
            max_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get() as u32),
        }
    }
}

/// A megavisor to run tools on, embedded or connected. Safe to share across threads.
pub enum Driver {
    /// The engine in this process.
    Embedded(Box<Runtime>),
    /// A running supervisor.
    Connected(Client),
}

impl Driver {
    /// Verifies and loads a bundle in this process.
    pub fn embedded(options: &EmbeddedOptions) -> Result<Self> {
        let policy = TrustPolicy::from_key_files(&options.trusted_keys).map_err(core_error)?;
        let runtime_options = RuntimeOptions {
            engine: EngineOptions {
                max_concurrency: options.max_concurrency.max(1),
                ..EngineOptions::default()
            },
            ..RuntimeOptions::default()
        };
        Runtime::open(&options.bundle, &policy, runtime_options)
            .map(|runtime| Driver::Embedded(Box::new(runtime)))
            .map_err(core_error)
    }

    /// Connects to the supervisor at `socket`, or at [`Client::default_socket`].
    pub fn connect(socket: Option<&Path>) -> Result<Self> {
        let socket = socket.map_or_else(Client::default_socket, Path::to_owned);
        Client::connect(socket).map(Driver::Connected)
    }

    /// Runs a tool. A tool that exits non-zero is `Ok`; errors are for calls that did not run
    /// to an exit (see [`ErrorKind`]).
    pub fn run(&self, call: &Call) -> Result<Output> {
        match self {
            Driver::Embedded(runtime) => {
                let request = convert::request(runtime, call.message().clone())
                    .map_err(|failure| Error::from_failure(*failure))?;
                runtime
                    .run(&request)
                    .map(convert::output)
                    .map_err(core_error)
            }
            Driver::Connected(client) => client.call(call),
        }
    }

    /// The tools this driver can run.
    pub fn tools(&self) -> Result<ToolList> {
        match self {
            Driver::Embedded(runtime) => Ok(convert::tool_list(runtime)),
            Driver::Connected(client) => client.tools(),
        }
    }
}

/// An engine error as the client's error (same kind, message and partial output).
fn core_error(err: megavisor_core::Error) -> Error {
    Error::from_failure(convert::failure(&err))
}
