//! What a call returns, as Python objects: `Result`, `Timings`, `Tool`.

use std::collections::HashMap;

use megavisor_driver::{Output, Tool};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The outcome of a call that ran to an exit (a non-zero exit code is still a result).
#[pyclass(name = "Result", module = "megavisor", frozen, get_all)]
pub(crate) struct RunResult {
    /// The tool that ran.
    tool: String,
    /// The tool's exit code.
    exit_code: i32,
    /// Standard output, up to the call's output limit.
    stdout: Py<PyBytes>,
    /// Standard error, up to the call's output limit.
    stderr: Py<PyBytes>,
    /// The last 8 KiB of each stream.
    stdout_tail: Py<PyBytes>,
    stderr_tail: Py<PyBytes>,
    /// Bytes written in all (more than `len(stdout)` when cut at the limit).
    stdout_total: u64,
    stderr_total: u64,
    /// Artifacts the tool reported, name to path or value.
    artifacts: HashMap<String, String>,
    /// Where the time went.
    timings: Py<Timings>,
    /// The execution id the call carried, if any.
    execution_id: Option<String>,
    /// True when replayed from the idempotency cache.
    cached: bool,
    /// What a native tool used (`None` for the bundle's tools).
    usage: Option<Py<Usage>>,
}

/// The resources a native tool used.
#[pyclass(module = "megavisor", frozen, get_all)]
pub(crate) struct Usage {
    /// Peak memory of the call's cgroup, or the largest resident set of one process.
    peak_memory_bytes: u64,
    /// CPU time of every process of the call.
    user_us: u64,
    system_us: u64,
    /// The limits it ran into: `memory_limit`, `timeout`, `pids_limit`.
    limits_hit: Vec<String>,
    /// The cgroup hierarchy that limited and counted it (`v1`, `v2`), or `None`.
    cgroup: Option<String>,
}

#[pymethods]
impl Usage {
    fn __repr__(&self) -> String {
        format!(
            "Usage(peak_memory_bytes={}, user_us={}, system_us={}, limits_hit={:?}, cgroup={:?})",
            self.peak_memory_bytes, self.user_us, self.system_us, self.limits_hit, self.cgroup
        )
    }
}

impl RunResult {
    pub(crate) fn new(py: Python<'_>, output: Output) -> PyResult<Self> {
        let timings = output.timings.unwrap_or_default();
        Ok(RunResult {
            tool: output.tool,
            exit_code: output.exit_code,
            stdout: PyBytes::new(py, &output.stdout).unbind(),
            stderr: PyBytes::new(py, &output.stderr).unbind(),
            stdout_tail: PyBytes::new(py, &output.stdout_tail).unbind(),
            stderr_tail: PyBytes::new(py, &output.stderr_tail).unbind(),
            stdout_total: output.stdout_total,
            stderr_total: output.stderr_total,
            artifacts: output.artifacts.into_iter().collect(),
            timings: Py::new(
                py,
                Timings {
                    queue_us: timings.queue_us,
                    instantiate_us: timings.instantiate_us,
                    run_us: timings.run_us,
                    total_us: timings.total_us,
                },
            )?,
            execution_id: Some(output.execution_id).filter(|id| !id.is_empty()),
            cached: output.cached,
            usage: output
                .usage
                .map(|usage| {
                    Py::new(
                        py,
                        Usage {
                            peak_memory_bytes: usage.peak_memory_bytes,
                            user_us: usage.user_us,
                            system_us: usage.system_us,
                            limits_hit: usage.limits_hit,
                            cgroup: Some(usage.cgroup).filter(|c| !c.is_empty()),
                        },
                    )
                })
                .transpose()?,
        })
    }
}

#[pymethods]
impl RunResult {
    /// True when the tool exited 0.
    #[getter]
    fn ok(&self) -> bool {
        self.exit_code == 0
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Result(tool={:?}, exit_code={}, stdout={} bytes, stderr={} bytes, total_us={})",
            self.tool,
            self.exit_code,
            self.stdout.bind(py).as_bytes().len(),
            self.stderr.bind(py).as_bytes().len(),
            self.timings.get().total_us,
        )
    }
}

/// Where a call's time went, in microseconds.
#[pyclass(module = "megavisor", frozen, get_all)]
pub(crate) struct Timings {
    /// Waiting for a free instance slot.
    queue_us: u64,
    /// Creating the fresh instance.
    instantiate_us: u64,
    /// Running the tool.
    run_us: u64,
    /// From the call's arrival to its result.
    total_us: u64,
}

#[pymethods]
impl Timings {
    fn __repr__(&self) -> String {
        format!(
            "Timings(queue_us={}, instantiate_us={}, run_us={}, total_us={})",
            self.queue_us, self.instantiate_us, self.run_us, self.total_us
        )
    }
}

/// A tool of the bundle: what an agent framework needs to offer it to a model.
#[pyclass(name = "Tool", module = "megavisor", frozen, get_all)]
pub(crate) struct ToolInfo {
    /// The tool's name, as `run` takes it.
    name: String,
    /// What it does, from the manifest.
    description: String,
    /// JSON Schema of its arguments (with megavisor's `x-argv` rendering hints), as JSON.
    schema_json: String,
    /// Capabilities it declares, e.g. `fs:read:/data/**`.
    capabilities: Vec<String>,
    /// Default memory limit in bytes and time limit in milliseconds.
    memory_bytes: u64,
    timeout_ms: u64,
}

impl From<Tool> for ToolInfo {
    fn from(tool: Tool) -> Self {
        ToolInfo {
            name: tool.name,
            description: tool.description,
            schema_json: tool.arguments_schema_json,
            capabilities: tool.capabilities,
            memory_bytes: tool.memory_bytes,
            timeout_ms: tool.timeout_ms,
        }
    }
}

#[pymethods]
impl ToolInfo {
    /// The argument schema as a dict (`json.loads(schema_json)`).
    #[getter]
    fn schema<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.import("json")?
            .call_method1("loads", (&self.schema_json,))
    }

    fn __repr__(&self) -> String {
        format!(
            "Tool(name={:?}, description={:?})",
            self.name, self.description
        )
    }
}
