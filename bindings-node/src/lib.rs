//! The native addon of the `megavisor` Node package (napi-rs).
//!
//! It wraps [`megavisor_driver`] (embedded or connected, one API) and nothing else: no
//! protocol code of its own. Calls return an *outcome* (a result, or an error's kind,
//! message and partial output) instead of throwing, and `index.js` turns failed outcomes
//! into the package's typed `MegavisorError`s, so both calling styles share one error path.

mod outcome;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use megavisor_driver::{
    Call, Cancel, Driver as Inner, EmbeddedOptions, Error, ErrorKind, load_policy,
};
use napi::bindgen_prelude::{Buffer, Either, Object};
use napi::{Env, Result};
use napi_derive::napi;

use outcome::{Failure, Outcome, SessionOutcome, ToolInfo, ToolsOutcome};

/// What a call may carry beside its tool and arguments.
#[napi(object)]
pub struct RunOptions {
    /// Bytes for the tool's stdin.
    pub stdin: Option<Buffer>,
    /// Environment variables, each allowed by one of the tool's `env:` capabilities.
    pub env: Option<HashMap<String, String>>,
    /// Time limit in milliseconds.
    pub timeout: Option<f64>,
    /// Memory limit in bytes.
    pub memory: Option<f64>,
    /// Idempotency key: a call repeated with the same id replays the first result.
    pub execution_id: Option<String>,
    /// Arguments as JSON, rendered to argv and stdin through the tool's schema.
    pub params_json: Option<String>,
    /// Host directories to mount, each `HOST:GUEST[:ro|:rw]` (read-only without a mode).
    pub mounts: Option<Vec<String>>,
    /// Run in this session (`openSession`) instead of a fresh instance.
    pub session: Option<f64>,
}

/// Which native tools an embedded driver may run (as plain processes; the sandbox is the
/// supervisor's).
#[napi(object)]
pub struct NativeConfig {
    /// Absolute paths allowed.
    pub allow_binaries: Option<Vec<String>>,
    /// An allowlist file (one absolute path per line, `#` comments, re-read on change).
    pub allowlist: Option<String>,
    /// SHA-256 or BLAKE3 hex digests allowed wherever the binary lies.
    pub allow_digests: Option<Vec<String>>,
    /// Variables (or `PREFIX*`) a call may pass.
    pub native_env: Option<Vec<String>>,
}

/// An embedded or connected driver.
#[napi]
pub struct Driver {
    inner: std::sync::Arc<Inner>,
}

#[napi]
impl Driver {
    /// Verifies a bundle and loads it into this process: `bundle` and `trustedKey`, else
    /// `$MEGAVISOR_BUNDLE` and `$MEGAVISOR_TRUSTED_KEY`, else the package's own.
    #[napi]
    #[allow(clippy::too_many_arguments)] // the positional arguments index.js passes
    pub fn embedded(
        bundle: Option<String>,
        trusted_key: Option<String>,
        default_bundle: String,
        default_key: String,
        max_concurrency: Option<u32>,
        native: Option<NativeConfig>,
        policy_path: Option<String>,
        policy_json: Option<String>,
    ) -> Either<Driver, Failure> {
        let mut options = EmbeddedOptions::from_env_or(default_bundle, default_key);
        if let Some(bundle) = bundle {
            options.bundle = PathBuf::from(bundle);
        }
        if let Some(key) = trusted_key {
            options.trusted_keys = vec![PathBuf::from(key)];
        }
        let policy_path = policy_path.map(PathBuf::from);
        let mut policy = match load_policy(policy_path.as_deref(), policy_json.as_deref()) {
            Ok(policy) => policy,
            Err(err) => return opened(Err(err)),
        };
        // The options override single keys of the policy.
        if let Some(max) = max_concurrency {
            policy.limits.max_concurrency = max;
        }
        if let Some(tools) = native {
            let native = &mut policy.native;
            let paths = tools.allow_binaries.unwrap_or_default();
            native.binaries.extend(paths.into_iter().map(PathBuf::from));
            native
                .digests
                .extend(tools.allow_digests.unwrap_or_default());
            native.env.extend(tools.native_env.unwrap_or_default());
            if let Some(file) = tools.allowlist {
                native.allowlist_file = Some(PathBuf::from(file));
            }
        }
        options.policy = policy;
        opened(Inner::embedded(&options))
    }

    /// Connects to a running supervisor at `socket`, else `$MEGAVISOR_SOCKET`, else the
    /// default socket.
    #[napi]
    pub fn connect(socket: Option<String>) -> Either<Driver, Failure> {
        let socket = socket.map(PathBuf::from);
        opened(Inner::connect(socket.as_deref()))
    }

    /// `"embedded"` or `"connected"`.
    #[napi(getter)]
    pub fn mode(&self) -> &'static str {
        if self.inner.is_embedded() {
            "embedded"
        } else {
            "connected"
        }
    }

    /// Runs a tool on the calling (JavaScript) thread.
    #[napi]
    pub fn run_sync(
        &self,
        tool: String,
        args: Vec<String>,
        options: Option<RunOptions>,
    ) -> Outcome {
        match call(tool, args, options) {
            Ok(call) => Outcome::from(self.inner.run(&call)),
            Err(err) => Outcome::from(Err(err)),
        }
    }

    /// Starts a tool and returns a promise of its outcome; the event loop does not wait for
    /// the tool (connected, sending waits while the connection has its maximum in flight).
    /// `cancellation`, when given, can give up on the call later.
    #[napi(ts_return_type = "Promise<Outcome>")]
    pub fn run<'env>(
        &self,
        env: &'env Env,
        tool: String,
        args: Vec<String>,
        options: Option<RunOptions>,
        cancellation: Option<&Cancellation>,
    ) -> Result<Object<'env>> {
        let (deferred, promise) = env.create_deferred()?;
        let settle = move |result| deferred.resolve(move |_| Ok(Outcome::from(result)));
        match call(tool, args, options) {
            Ok(call) => {
                let cancel = self.inner.run_async(call, settle);
                if let Some(cancellation) = cancellation {
                    cancellation.arm(cancel);
                }
            }
            Err(err) => settle(Err(err)),
        }
        Ok(promise)
    }

    /// Opens a session of `tool`: its id, or why not.
    #[napi]
    pub fn open_session(&self, tool: String) -> SessionOutcome {
        SessionOutcome::from(self.inner.open_session(&tool))
    }

    /// Closes a session (`session_gone` when it is not there).
    #[napi]
    pub fn close_session(&self, session: f64) -> SessionOutcome {
        SessionOutcome::from(
            self.inner
                .close_session(session as u64)
                .map(|()| session as u64),
        )
    }

    /// The tools this driver can run.
    #[napi]
    pub fn tools(&self) -> ToolsOutcome {
        ToolsOutcome::from(
            self.inner
                .tools()
                .map(|list| list.tools.into_iter().map(ToolInfo::from).collect()),
        )
    }
}

/// One error kind of the one table (`megavisor_client::kinds`).
#[napi(object)]
pub struct ErrorKindInfo {
    /// The wire name (`timeout`).
    pub name: String,
    /// `err.code` (`TIMEOUT`).
    pub code: String,
}

/// The one table of error kinds, in order: `index.js` builds its `KINDS` from it.
#[napi]
pub fn error_kinds() -> Vec<ErrorKindInfo> {
    megavisor_driver::KINDS
        .iter()
        .map(|info| ErrorKindInfo {
            name: info.name.to_owned(),
            code: info.node_code.to_owned(),
        })
        .collect()
}

/// What gives up on a call started by `run`: `index.js` makes one for a call with an
/// `AbortSignal` and cancels it when the signal aborts.
#[napi]
#[derive(Default)]
pub struct Cancellation {
    state: std::sync::Mutex<(bool, Option<Cancel>)>,
}

#[napi]
impl Cancellation {
    /// Not cancelled yet.
    #[napi(constructor)]
    pub fn new() -> Self {
        Cancellation::default()
    }

    /// Gives up on the call (now, or as soon as it has started).
    #[napi]
    pub fn cancel(&self) {
        let mut state = self.state.lock().expect("cancellation lock");
        state.0 = true;
        if let Some(cancel) = state.1.take() {
            drop(state);
            cancel.cancel();
        }
    }

    /// Ties the started call to this cancellation.
    fn arm(&self, cancel: Cancel) {
        let mut state = self.state.lock().expect("cancellation lock");
        if state.0 {
            drop(state);
            cancel.cancel();
        } else {
            state.1 = Some(cancel);
        }
    }
}

/// A driver just opened, or why it could not be.
fn opened(driver: megavisor_driver::Result<Inner>) -> Either<Driver, Failure> {
    match driver {
        Ok(inner) => Either::A(Driver {
            inner: std::sync::Arc::new(inner),
        }),
        Err(err) => Either::B(err.into()),
    }
}

/// A call from the JavaScript arguments; out-of-range limits are `bad_request`.
fn call(
    tool: String,
    args: Vec<String>,
    options: Option<RunOptions>,
) -> megavisor_driver::Result<Call> {
    let mut call = Call::of_tool(tool).args(args);
    let Some(options) = options else {
        return Ok(call);
    };
    if let Some(stdin) = options.stdin {
        call = call.stdin(stdin.to_vec());
    }
    // Sorted, so the same variables make the same request (idempotency compares requests).
    let mut env: Vec<_> = options.env.unwrap_or_default().into_iter().collect();
    env.sort();
    for (name, value) in env {
        call = call.env(name, value);
    }
    if let Some(ms) = options.timeout {
        if !(ms.is_finite() && ms >= 1.0 && ms.fract() == 0.0) {
            return Err(bad_request(format!(
                "timeout must be a whole number of milliseconds, at least 1, not {ms}"
            )));
        }
        call = call.timeout(Duration::from_millis(ms as u64));
    }
    if let Some(bytes) = options.memory {
        if !(bytes.is_finite() && bytes >= 1.0 && bytes.fract() == 0.0) {
            return Err(bad_request(format!(
                "memory must be a positive whole number of bytes, not {bytes}"
            )));
        }
        call = call.memory_bytes(bytes as u64);
    }
    if let Some(id) = options.execution_id {
        call = call.execution_id(id);
    }
    if let Some(json) = options.params_json {
        call = call.params_json(json);
    }
    for spec in options.mounts.unwrap_or_default() {
        call = megavisor_driver::with_mount(call, &spec)?;
    }
    if let Some(session) = options.session {
        if !(session.is_finite() && session >= 1.0 && session.fract() == 0.0) {
            return Err(bad_request(format!(
                "session must be a session id, not {session}"
            )));
        }
        call = call.session(session as u64);
    }
    Ok(call)
}

fn bad_request(message: String) -> Error {
    Error::new(ErrorKind::BadRequest, message)
}
