//! What the addon hands JavaScript: results and failures as plain objects.

use std::collections::HashMap;

use megavisor_driver::{Error, Output, Result, Tool};
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

/// Where a call's time went, in microseconds.
#[napi(object)]
pub struct Timings {
    pub queue_us: f64,
    pub instantiate_us: f64,
    pub run_us: f64,
    pub total_us: f64,
}

/// The outcome of a call that ran to an exit (a non-zero exit code is still a result).
#[napi(object)]
pub struct RunResult {
    pub tool: String,
    pub exit_code: i32,
    pub ok: bool,
    pub stdout: Buffer,
    pub stderr: Buffer,
    /// The last 8 KiB of each stream.
    pub stdout_tail: Buffer,
    pub stderr_tail: Buffer,
    /// Bytes written in all (more than `stdout.length` when cut at the limit).
    pub stdout_total: f64,
    pub stderr_total: f64,
    pub artifacts: HashMap<String, String>,
    pub timings: Timings,
    pub execution_id: Option<String>,
    /// True when replayed from the idempotency cache.
    pub cached: bool,
    /// What a native tool used (absent for the bundle's tools).
    pub usage: Option<Usage>,
}

/// The resources a native tool used.
#[napi(object)]
pub struct Usage {
    pub peak_memory_bytes: f64,
    pub user_us: f64,
    pub system_us: f64,
    /// `memory_limit`, `timeout`, `pids_limit`: the limits it ran into.
    pub limits_hit: Vec<String>,
    /// `v1` or `v2`: the cgroup hierarchy that limited and counted it.
    pub cgroup: Option<String>,
}

impl From<Output> for RunResult {
    fn from(output: Output) -> Self {
        let timings = output.timings.unwrap_or_default();
        RunResult {
            tool: output.tool,
            exit_code: output.exit_code,
            ok: output.exit_code == 0,
            stdout: output.stdout.into(),
            stderr: output.stderr.into(),
            stdout_tail: output.stdout_tail.into(),
            stderr_tail: output.stderr_tail.into(),
            stdout_total: output.stdout_total as f64,
            stderr_total: output.stderr_total as f64,
            artifacts: output.artifacts.into_iter().collect(),
            timings: Timings {
                queue_us: timings.queue_us as f64,
                instantiate_us: timings.instantiate_us as f64,
                run_us: timings.run_us as f64,
                total_us: timings.total_us as f64,
            },
            execution_id: Some(output.execution_id).filter(|id| !id.is_empty()),
            cached: output.cached,
            usage: output.usage.map(|usage| Usage {
                peak_memory_bytes: usage.peak_memory_bytes as f64,
                user_us: usage.user_us as f64,
                system_us: usage.system_us as f64,
                limits_hit: usage.limits_hit,
                cgroup: Some(usage.cgroup).filter(|c| !c.is_empty()),
            }),
        }
    }
}

/// Why a call did not run to an exit.
#[napi(object)]
pub struct Failure {
    /// The stable snake-case kind (`timeout`, `connection_lost`, ...).
    pub kind: String,
    pub message: String,
    /// What the tool wrote before it was stopped (timeout, memory limit, trap).
    pub partial: Option<RunResult>,
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        Failure {
            kind: err.kind().as_str().to_owned(),
            message: err.to_string(),
            partial: err.partial_output().cloned().map(RunResult::from),
        }
    }
}

/// A call's result or its failure.
#[napi(object)]
pub struct Outcome {
    pub result: Option<RunResult>,
    pub error: Option<Failure>,
}

impl From<Result<Output>> for Outcome {
    fn from(result: Result<Output>) -> Self {
        match result {
            Ok(output) => Outcome {
                result: Some(output.into()),
                error: None,
            },
            Err(err) => Outcome {
                result: None,
                error: Some(err.into()),
            },
        }
    }
}

/// A tool of the bundle: what an agent framework needs to offer it to a model.
#[napi(object)]
pub struct ToolInfo {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments (with megavisor's `x-argv` rendering hints), as JSON.
    pub schema_json: String,
    pub capabilities: Vec<String>,
    pub memory_bytes: f64,
    pub timeout_ms: f64,
}

impl From<Tool> for ToolInfo {
    fn from(tool: Tool) -> Self {
        ToolInfo {
            name: tool.name,
            description: tool.description,
            schema_json: tool.arguments_schema_json,
            capabilities: tool.capabilities,
            memory_bytes: tool.memory_bytes as f64,
            timeout_ms: tool.timeout_ms as f64,
        }
    }
}

/// The tool list or the failure to get it.
#[napi(object)]
pub struct ToolsOutcome {
    pub tools: Option<Vec<ToolInfo>>,
    pub error: Option<Failure>,
}

impl From<Result<Vec<ToolInfo>>> for ToolsOutcome {
    fn from(result: Result<Vec<ToolInfo>>) -> Self {
        match result {
            Ok(tools) => ToolsOutcome {
                tools: Some(tools),
                error: None,
            },
            Err(err) => ToolsOutcome {
                tools: None,
                error: Some(err.into()),
            },
        }
    }
}

/// A session's id, or the failure to open (or close) it. Ids have at most 53 bits, so a
/// JavaScript number holds them exactly.
#[napi(object)]
pub struct SessionOutcome {
    pub session: Option<f64>,
    pub error: Option<Failure>,
}

impl From<Result<u64>> for SessionOutcome {
    fn from(result: Result<u64>) -> Self {
        match result {
            Ok(session) => SessionOutcome {
                session: Some(session as f64),
                error: None,
            },
            Err(err) => SessionOutcome {
                session: None,
                error: Some(err.into()),
            },
        }
    }
}
