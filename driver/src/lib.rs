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
//!
//! Calls run either on the calling thread ([`Driver::run`]) or in the background
//! ([`Driver::run_async`]), which hands the result to a callback: the one mechanism under
//! Python's `arun` and Node's promises.

mod completion;
pub mod convert;
pub mod data;
mod workers;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use megavisor_client::Canceller;
pub use megavisor_client::{
    Call, Client, Error, ErrorKind, KINDS, KindInfo, Output, Result, Tool, ToolList,
};
use megavisor_core::{Caller, CancelToken, Request, Runtime, TrustPolicy};
pub use megavisor_core::{Policy, PolicyError};

use workers::Workers;

/// The environment variable naming the bundle an embedded driver opens by default.
pub const BUNDLE_ENV: &str = "MEGAVISOR_BUNDLE";
/// The environment variable naming the public key an embedded driver trusts by default.
pub const TRUSTED_KEY_ENV: &str = "MEGAVISOR_TRUSTED_KEY";

/// Where an embedded driver finds its bundle and whom it trusts.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Public keys trusted to sign the manifest.
    pub trusted_keys: Vec<PathBuf>,
    /// The policy its calls run under: limits (`limits.max_concurrency` calls at once in
    /// this process), native tools, their sandbox.
    pub policy: Policy,
}

impl EmbeddedOptions {
    /// A bundle directory and the key it must be signed with.
    pub fn new(bundle: impl Into<PathBuf>, trusted_key: impl Into<PathBuf>) -> Self {
        EmbeddedOptions {
            bundle: bundle.into(),
            trusted_keys: vec![trusted_key.into()],
            policy: Policy::default(),
        }
    }

    /// The bundle and key a binding opens when its caller names none: `$MEGAVISOR_BUNDLE`
    /// and `$MEGAVISOR_TRUSTED_KEY` where set, else the binding's own default (the bundle
    /// shipped inside its package).
    pub fn from_env_or(bundle: impl Into<PathBuf>, trusted_key: impl Into<PathBuf>) -> Self {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        Self::new(
            var(BUNDLE_ENV).map_or_else(|| bundle.into(), PathBuf::from),
            var(TRUSTED_KEY_ENV).map_or_else(|| trusted_key.into(), PathBuf::from),
        )
    }
}

/// `call` with a mount given as `HOST:GUEST[:ro|:rw]` (read-only without a mode), as the
/// CLI's `--mount` and every binding's `mounts` take it.
pub fn with_mount(call: Call, spec: &str) -> Result<Call> {
    let mount =
        megavisor_core::Mount::parse(spec).map_err(|m| Error::new(ErrorKind::BadRequest, m))?;
    let writable = mount.access == megavisor_core::Access::ReadWrite;
    Ok(call.mount(mount.host.to_string_lossy(), mount.guest, writable))
}

/// The policy in the TOML file at `path`, or given inline as JSON (what a binding passes
/// for a structure), else every default. Errors name the file (or `<inline>`) and the key.
pub fn load_policy(path: Option<&Path>, inline_json: Option<&str>) -> Result<Policy> {
    let loaded = match (path, inline_json) {
        (Some(_), Some(_)) => {
            return Err(Error::new(
                ErrorKind::BadRequest,
                "pass a policy file or an inline policy, not both",
            ));
        }
        (Some(path), None) => Policy::from_file(path),
        (None, Some(json)) => Policy::from_json(json),
        (None, None) => return Ok(Policy::default()),
    };
    loaded.map_err(|err| core_error(err.into()))
}

/// A megavisor to run tools on, embedded or connected. Safe to share across threads.
pub struct Driver {
    mode: Mode,
}

enum Mode {
    Embedded {
        runtime: Arc<Runtime>,
        /// Threads for [`Driver::run_async`], started on its first use.
        workers: Mutex<Option<Workers>>,
        max_concurrency: u32,
    },
    Connected(Client),
}

impl Driver {
    /// Verifies and loads a bundle in this process.
    pub fn embedded(options: &EmbeddedOptions) -> Result<Self> {
        let policy = TrustPolicy::from_key_files(&options.trusted_keys).map_err(core_error)?;
        let runtime_options = options.policy.runtime_options(None).map_err(core_error)?;
        let max_concurrency = runtime_options.engine.max_concurrency;
        let runtime =
            Runtime::open(&options.bundle, &policy, runtime_options).map_err(core_error)?;
        Ok(Driver {
            mode: Mode::Embedded {
                runtime: Arc::new(runtime),
                workers: Mutex::new(None),
                max_concurrency,
            },
        })
    }

    /// Connects to the supervisor at `socket`, or at [`Client::default_socket`].
    pub fn connect(socket: Option<&Path>) -> Result<Self> {
        let socket = socket.map_or_else(Client::default_socket, Path::to_owned);
        let client = Client::connect(socket)?;
        Ok(Driver {
            mode: Mode::Connected(client),
        })
    }

    /// True for an embedded driver, false for a connected one.
    pub fn is_embedded(&self) -> bool {
        matches!(self.mode, Mode::Embedded { .. })
    }

    /// Runs a tool on the calling thread. A tool that exits non-zero is `Ok`; errors are for
    /// calls that did not run to an exit (see [`ErrorKind`]).
    pub fn run(&self, call: &Call) -> Result<Output> {
        match &self.mode {
            Mode::Embedded { runtime, .. } => {
                run_embedded(runtime, call, &Caller::process_waiting())
            }
            Mode::Connected(client) => client.call(call),
        }
    }

    /// Starts a tool and returns at once; `done` gets the result on another thread (a worker
    /// of this driver when embedded, the client's receiving thread when connected), so it
    /// should hand the result on rather than do slow work itself. The returned [`Cancel`]
    /// gives up on the call.
    pub fn run_async(
        &self,
        call: Call,
        done: impl FnOnce(Result<Output>) + Send + 'static,
    ) -> Cancel {
        match &self.mode {
            Mode::Embedded {
                runtime,
                workers,
                max_concurrency,
            } => {
                let mut workers = workers.lock().expect("driver workers lock");
                if workers.is_none() {
                    match Workers::start(runtime, *max_concurrency) {
                        Ok(started) => *workers = Some(started),
                        Err(err) => {
                            let message = format!("cannot start the driver's threads: {err}");
                            done(Err(Error::new(ErrorKind::Internal, message)));
                            return Cancel(Handle::Nothing);
                        }
                    }
                }
                let caller = Caller::process();
                let cancel = caller.cancel.clone();
                workers.as_ref().expect("started above").submit(
                    runtime,
                    call,
                    caller,
                    Box::new(done),
                );
                Cancel(Handle::Embedded(cancel))
            }
            Mode::Connected(client) => {
                let future = client.call_async(&call);
                let cancel = future.canceller();
                completion::on_ready(future, done);
                Cancel(cancel.map_or(Handle::Nothing, Handle::Connected))
            }
        }
    }

    /// Opens a session of `tool`: one instance kept alive for the calls that name it
    /// ([`Call::session`]), so what one call defines is there in the next. Returns its id.
    pub fn open_session(&self, tool: &str) -> Result<u64> {
        match &self.mode {
            Mode::Embedded { runtime, .. } => runtime
                .open_session(tool, &Caller::process_waiting())
                .map_err(core_error),
            Mode::Connected(client) => client.open_session(tool),
        }
    }

    /// Closes a session; `session_gone` when it is not there (any more).
    pub fn close_session(&self, session: u64) -> Result<()> {
        match &self.mode {
            Mode::Embedded { runtime, .. } => runtime
                .close_session(session, &Caller::process_waiting())
                .map_err(core_error),
            Mode::Connected(client) => client.close_session(session),
        }
    }

    /// The tools this driver can run.
    pub fn tools(&self) -> Result<ToolList> {
        match &self.mode {
            Mode::Embedded { runtime, .. } => Ok(convert::tool_list(runtime)),
            Mode::Connected(client) => client.tools(),
        }
    }
}

/// Gives up on a call started with [`Driver::run_async`]: it stops within a few
/// milliseconds, and its callback gets a `cancelled` error (or its output, if it ended
/// first). Cheap to clone; cancelling twice, or after the end, does nothing.
#[derive(Clone)]
pub struct Cancel(Handle);

#[derive(Clone)]
enum Handle {
    Embedded(CancelToken),
    Connected(Canceller),
    /// The call never started (its callback has its error already).
    Nothing,
}

impl Cancel {
    /// Gives up on the call.
    pub fn cancel(&self) {
        match &self.0 {
            Handle::Embedded(token) => token.cancel(),
            Handle::Connected(canceller) => canceller.cancel(),
            Handle::Nothing => {}
        }
    }
}

/// Runs a call on the engine of this process, for `caller`.
fn run_embedded(runtime: &Runtime, call: &Call, caller: &Caller) -> Result<Output> {
    let request = convert::request(runtime, call.message().clone())
        .map_err(|failure| Error::from_failure(*failure))?;
    run_request(runtime, &request, caller)
}

/// Runs a request on the engine of this process, for `caller`.
fn run_request(runtime: &Runtime, request: &Request, caller: &Caller) -> Result<Output> {
    runtime
        .run_for(request, caller)
        .map(convert::output)
        .map_err(core_error)
}

/// An engine error as the client's error (same kind, message and partial output).
fn core_error(err: megavisor_core::Error) -> Error {
    Error::from_failure(convert::failure(&err))
}
