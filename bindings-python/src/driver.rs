//! `megavisor._native.Driver`: the driver, with the GIL released while a call runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use megavisor_driver::{
    Call, Cancel, Driver as Inner, EmbeddedOptions, Error, ErrorKind, load_policy,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::sync::PyOnceLock;

use crate::completions::Completions;
use crate::errors::exception;
use crate::output::{RunResult, ToolInfo};

/// An embedded or connected driver. Subclassed by `megavisor.Driver`, which adds `arun`.
#[pyclass(module = "megavisor._native", frozen, subclass)]
pub(crate) struct Driver {
    inner: Inner,
}

#[pymethods]
impl Driver {
    /// `Driver("embedded", bundle, trusted_key, default_bundle=..., default_key=...)` or
    /// `Driver("connected", socket)`. Verification and connecting run without the GIL.
    #[new]
    #[pyo3(signature = (mode, path=None, trusted_key=None, *, default_bundle=None, default_key=None, max_concurrency=None, allow_binaries=None, allowlist=None, allow_digests=None, native_env=None, policy_path=None, policy_json=None))]
    #[allow(clippy::too_many_arguments)] // the keyword arguments of the Python API
    fn new(
        py: Python<'_>,
        mode: &str,
        path: Option<PathBuf>,
        trusted_key: Option<PathBuf>,
        default_bundle: Option<PathBuf>,
        default_key: Option<PathBuf>,
        max_concurrency: Option<u32>,
        allow_binaries: Option<Vec<PathBuf>>,
        allowlist: Option<PathBuf>,
        allow_digests: Option<Vec<String>>,
        native_env: Option<Vec<String>>,
        policy_path: Option<PathBuf>,
        policy_json: Option<String>,
    ) -> PyResult<Self> {
        let inner = match mode {
            "embedded" => {
                let mut options = EmbeddedOptions::from_env_or(
                    default_bundle.unwrap_or_default(),
                    default_key.unwrap_or_default(),
                );
                if let Some(bundle) = path {
                    options.bundle = bundle;
                }
                if let Some(key) = trusted_key {
                    options.trusted_keys = vec![key];
                }
                py.detach(|| {
                    let mut policy = load_policy(policy_path.as_deref(), policy_json.as_deref())?;
                    // The keyword arguments override single keys of the policy.
                    if let Some(max) = max_concurrency {
                        policy.limits.max_concurrency = max;
                    }
                    let native = &mut policy.native;
                    native.binaries.extend(allow_binaries.unwrap_or_default());
                    native.digests.extend(allow_digests.unwrap_or_default());
                    native.env.extend(native_env.unwrap_or_default());
                    if allowlist.is_some() {
                        native.allowlist_file = allowlist;
                    }
                    options.policy = policy;
                    Inner::embedded(&options)
                })
            }
            "connected" => py.detach(|| Inner::connect(path.as_deref())),
            other => {
                let message = format!("mode must be \"embedded\" or \"connected\", not {other:?}");
                return Err(PyValueError::new_err(message));
            }
        };
        inner
            .map(|inner| Driver { inner })
            .map_err(|err| exception(py, &err))
    }

    /// `"embedded"` or `"connected"`.
    #[getter]
    fn mode(&self) -> &'static str {
        if self.inner.is_embedded() {
            "embedded"
        } else {
            "connected"
        }
    }

    /// Runs a tool and returns its `Result`; `params` (a dict) is rendered to argv and stdin
    /// through the tool's argument schema. Raises a `megavisor.MegavisorError` subclass
    /// when the call did not run to an exit.
    #[pyo3(signature = (tool, args=Vec::new(), *, stdin=None, env=None, timeout=None, memory=None, execution_id=None, params=None, mounts=None, session=None))]
    #[allow(clippy::too_many_arguments)] // the keyword arguments of the Python API
    fn run(
        &self,
        py: Python<'_>,
        tool: String,
        args: Vec<String>,
        stdin: Option<PyBackedBytes>,
        env: Option<BTreeMap<String, String>>,
        timeout: Option<f64>,
        memory: Option<i64>,
        execution_id: Option<String>,
        params: Option<Bound<'_, PyAny>>,
        mounts: Option<Vec<String>>,
        session: Option<u64>,
    ) -> PyResult<RunResult> {
        let call = call(
            py,
            tool,
            args,
            stdin.as_deref(),
            env,
            timeout,
            memory,
            execution_id,
            params,
            mounts,
            session,
        )?;
        match py.detach(|| self.inner.run(&call)) {
            Ok(output) => RunResult::new(py, output),
            Err(err) => Err(exception(py, &err)),
        }
    }

    /// Starts a tool in the background; its result reaches `completions` under `token`.
    /// The returned `Pending` gives up on it.
    #[pyo3(signature = (completions, token, tool, args=Vec::new(), *, stdin=None, env=None, timeout=None, memory=None, execution_id=None, params=None, mounts=None, session=None))]
    #[allow(clippy::too_many_arguments)] // the keyword arguments of the Python API
    fn submit(
        &self,
        py: Python<'_>,
        completions: &Completions,
        token: u64,
        tool: String,
        args: Vec<String>,
        stdin: Option<PyBackedBytes>,
        env: Option<BTreeMap<String, String>>,
        timeout: Option<f64>,
        memory: Option<i64>,
        execution_id: Option<String>,
        params: Option<Bound<'_, PyAny>>,
        mounts: Option<Vec<String>>,
        session: Option<u64>,
    ) -> PyResult<Pending> {
        let call = call(
            py,
            tool,
            args,
            stdin.as_deref(),
            env,
            timeout,
            memory,
            execution_id,
            params,
            mounts,
            session,
        )?;
        let shared = completions.shared.clone();
        // Sending may wait for an in-flight permit on a saturated connection.
        let cancel = py.detach(|| {
            self.inner
                .run_async(call, move |result| shared.finish(token, result))
        });
        Ok(Pending { cancel })
    }

    /// Opens a session of `tool` and returns its id (see `megavisor.Driver.open_session`).
    fn open_session_id(&self, py: Python<'_>, tool: String) -> PyResult<u64> {
        py.detach(|| self.inner.open_session(&tool))
            .map_err(|err| exception(py, &err))
    }

    /// Closes the session `session`; raises `SessionGone` when it is not there.
    fn close_session(&self, py: Python<'_>, session: u64) -> PyResult<()> {
        py.detach(|| self.inner.close_session(session))
            .map_err(|err| exception(py, &err))
    }

    /// The tools this driver can run.
    fn tools(&self, py: Python<'_>) -> PyResult<Vec<ToolInfo>> {
        match py.detach(|| self.inner.tools()) {
            Ok(list) => Ok(list.tools.into_iter().map(ToolInfo::from).collect()),
            Err(err) => Err(exception(py, &err)),
        }
    }
}

/// A call running in the background (see `Driver.submit`).
#[pyclass(module = "megavisor._native", frozen)]
pub(crate) struct Pending {
    cancel: Cancel,
}

#[pymethods]
impl Pending {
    /// Gives up on the call: it stops within a few milliseconds (its result, if it still
    /// comes, is a `Cancelled` error). Does nothing once it has ended.
    fn cancel(&self, py: Python<'_>) {
        // Connected, this sends a message, which may wait a moment for room in the ring.
        py.detach(|| self.cancel.cancel());
    }
}

/// `json.dumps(params)`: the tool's arguments as JSON, rendered to argv through its schema.
fn json_dumps(params: &Bound<'_, PyAny>) -> PyResult<String> {
    static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let py = params.py();
    let dumps = DUMPS.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py.import("json")?.getattr("dumps")?.unbind())
    })?;
    dumps.bind(py).call1((params,))?.extract()
}

/// A call from the Python arguments; an out-of-range limit raises `BadRequest`.
#[allow(clippy::too_many_arguments)] // the keyword arguments of the Python API
fn call(
    py: Python<'_>,
    tool: String,
    args: Vec<String>,
    stdin: Option<&[u8]>,
    env: Option<BTreeMap<String, String>>,
    timeout: Option<f64>,
    memory: Option<i64>,
    execution_id: Option<String>,
    params: Option<Bound<'_, PyAny>>,
    mounts: Option<Vec<String>>,
    session: Option<u64>,
) -> PyResult<Call> {
    let mut call = Call::of_tool(tool).args(args);
    if let Some(stdin) = stdin {
        call = call.stdin(stdin);
    }
    for (name, value) in env.into_iter().flatten() {
        call = call.env(name, value);
    }
    if let Some(seconds) = timeout {
        // Limits have millisecond resolution.
        let Some(timeout) = Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|t| t.as_millis() >= 1)
        else {
            let message = format!("timeout must be at least 0.001 seconds, not {seconds}");
            return Err(exception(py, &Error::new(ErrorKind::BadRequest, message)));
        };
        call = call.timeout(timeout);
    }
    if let Some(bytes) = memory {
        let Some(bytes) = u64::try_from(bytes).ok().filter(|b| *b > 0) else {
            let message = format!("memory must be a positive number of bytes, not {bytes}");
            return Err(exception(py, &Error::new(ErrorKind::BadRequest, message)));
        };
        call = call.memory_bytes(bytes);
    }
    if let Some(id) = execution_id {
        call = call.execution_id(id);
    }
    if let Some(params) = params {
        call = call.params_json(json_dumps(&params)?);
    }
    for spec in mounts.into_iter().flatten() {
        call = megavisor_driver::with_mount(call, &spec).map_err(|err| exception(py, &err))?;
    }
    if let Some(session) = session {
        call = call.session(session);
    }
    Ok(call)
}
