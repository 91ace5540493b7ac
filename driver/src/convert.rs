//! Between the wire messages and megavisor-core's types: the one place that knows both.

use std::time::Duration;

use megavisor_core::{
    Access, Capability, Error, ErrorKind, Limits, Mount, Output, Request, ResourceUsage, Runtime,
    Timings, ToolRef,
};
use megavisor_wire::proto::{self, call};

/// Turns a wire call into a core request, rendering `params_json` through the entry's schema.
pub fn request(runtime: &Runtime, call: proto::Call) -> Result<Request, Box<proto::Failure>> {
    let bad =
        |message: String| Box::new(proto::Failure::new(proto::ErrorKind::BadRequest, message));
    let tool = match call.tool {
        Some(call::Tool::Name(name)) => ToolRef::Name(name),
        Some(call::Tool::Digest(digest)) => ToolRef::Digest(digest),
        Some(call::Tool::Native(path)) => ToolRef::Native(path.into()),
        None => return Err(bad("the call names no tool".to_owned())),
    };
    let mut args = call.args;
    let mut stdin = call.stdin;
    if !call.params_json.is_empty() {
        if !args.is_empty() {
            return Err(bad("pass either args or params_json, not both".to_owned()));
        }
        let ToolRef::Name(name) = &tool else {
            return Err(bad(
                "params_json needs a tool named by entry, not by digest or path".to_owned(),
            ));
        };
        let entry = runtime.manifest().entry(name).ok_or_else(|| {
            failure(&Error::ToolNotFound {
                name: name.clone(),
                available: runtime.manifest().entry_names(),
            })
        })?;
        let params = serde_json::from_str(&call.params_json)
            .map_err(|e| bad(format!("params_json is not JSON: {e}")))?;
        let rendered = entry
            .render_arguments(&params)
            .map_err(|e| Box::new(failure(&e)))?;
        args = rendered.args;
        if let Some(bytes) = rendered.stdin {
            stdin = bytes;
        }
    }
    let capabilities = if call.narrow_capabilities {
        let parsed: Result<Vec<Capability>, String> =
            call.capabilities.iter().map(|c| c.parse()).collect();
        Some(parsed.map_err(bad)?)
    } else {
        None
    };
    let limits = call.limits.unwrap_or_default();
    Ok(Request {
        tool,
        args,
        env: call.env.into_iter().map(|v| (v.name, v.value)).collect(),
        stdin,
        mounts: call
            .mounts
            .into_iter()
            .map(|m| Mount {
                host: m.host.into(),
                guest: m.guest,
                access: if m.writable {
                    Access::ReadWrite
                } else {
                    Access::ReadOnly
                },
            })
            .collect(),
        capabilities,
        limits: Limits {
            memory_bytes: limits.memory_bytes,
            timeout: limits.timeout_ms.map(Duration::from_millis),
            fuel: limits.fuel,
            output_bytes: limits.output_bytes,
        },
        execution_id: Some(call.execution_id).filter(|id| !id.is_empty()),
        session: Some(call.session).filter(|id| *id != 0),
        argv0: None,
    })
}

/// A core request as a wire call (the inverse of [`request`], for callers that build core
/// requests and send them to a supervisor).
pub fn call(request: Request) -> proto::Call {
    proto::Call {
        tool: Some(match request.tool {
            ToolRef::Name(name) => call::Tool::Name(name),
            ToolRef::Digest(digest) => call::Tool::Digest(digest),
            ToolRef::Native(path) => call::Tool::Native(path.display().to_string()),
        }),
        args: request.args,
        params_json: String::new(),
        env: request
            .env
            .into_iter()
            .map(|(name, value)| proto::EnvVar { name, value })
            .collect(),
        stdin: request.stdin,
        mounts: request
            .mounts
            .into_iter()
            .map(|m| proto::Mount {
                host: m.host.to_string_lossy().into_owned(),
                guest: m.guest,
                writable: m.access == Access::ReadWrite,
            })
            .collect(),
        narrow_capabilities: request.capabilities.is_some(),
        capabilities: request
            .capabilities
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect(),
        limits: Some(proto::Limits {
            memory_bytes: request.limits.memory_bytes,
            timeout_ms: request
                .limits
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            fuel: request.limits.fuel,
            output_bytes: request.limits.output_bytes,
        }),
        execution_id: request.execution_id.unwrap_or_default(),
        session: request.session.unwrap_or_default(),
    }
}

/// A core output as a wire output.
pub fn output(output: Output) -> proto::Output {
    let Timings {
        queue_us,
        instantiate_us,
        run_us,
        total_us,
    } = output.timings;
    proto::Output {
        tool: output.tool,
        exit_code: output.exit_code,
        stdout: output.stdout,
        stderr: output.stderr,
        stdout_tail: output.stdout_tail,
        stderr_tail: output.stderr_tail,
        stdout_total: output.stdout_total,
        stderr_total: output.stderr_total,
        artifacts: output.artifacts.into_iter().collect(),
        timings: Some(proto::Timings {
            queue_us,
            instantiate_us,
            run_us,
            total_us,
        }),
        execution_id: output.execution_id.unwrap_or_default(),
        cached: output.cached,
        usage: output.usage.map(|usage| proto::ResourceUsage {
            peak_memory_bytes: usage.peak_memory_bytes,
            user_us: usage.user_us,
            system_us: usage.system_us,
            limits_hit: usage.limits_hit.iter().map(|l| (*l).to_owned()).collect(),
            cgroup: usage.cgroup.unwrap_or_default().to_owned(),
        }),
    }
}

/// A core error as a wire failure, with the partial output where there is one.
pub fn failure(err: &Error) -> proto::Failure {
    proto::Failure {
        kind: wire_kind(err.kind()) as i32,
        message: err.to_string(),
        partial: err.partial_output().cloned().map(output),
    }
}

/// The wire kind of a core kind (the same name: a test holds both to the table of kinds).
pub fn wire_kind(kind: ErrorKind) -> proto::ErrorKind {
    match kind {
        ErrorKind::HashMismatch => proto::ErrorKind::HashMismatch,
        ErrorKind::BadSignature => proto::ErrorKind::BadSignature,
        ErrorKind::ToolNotFound => proto::ErrorKind::ToolNotFound,
        ErrorKind::NotAllowed => proto::ErrorKind::NotAllowed,
        ErrorKind::Timeout => proto::ErrorKind::Timeout,
        ErrorKind::MemoryLimit => proto::ErrorKind::MemoryLimit,
        ErrorKind::Trap => proto::ErrorKind::Trap,
        ErrorKind::BadRequest => proto::ErrorKind::BadRequest,
        ErrorKind::Internal => proto::ErrorKind::Internal,
        ErrorKind::Cancelled => proto::ErrorKind::Cancelled,
        ErrorKind::SessionGone => proto::ErrorKind::SessionGone,
    }
}

/// The bundle's tools, as `ListTools` returns them.
pub fn tool_list(runtime: &Runtime) -> proto::ToolList {
    let manifest = runtime.manifest();
    let first = &manifest.modules[0].wasm.digests;
    proto::ToolList {
        bundle: manifest.name.clone(),
        manifest_sha256: runtime.manifest_digest().to_owned(),
        wasm_sha256: first.sha256.clone(),
        wasm_blake3: first.blake3.clone(),
        modules: manifest
            .modules
            .iter()
            .map(|module| proto::Module {
                name: module.name.clone(),
                wasm_sha256: module.wasm.digests.sha256.clone(),
                wasm_blake3: module.wasm.digests.blake3.clone(),
            })
            .collect(),
        tools: manifest
            .entries
            .iter()
            .map(|entry| proto::Tool {
                name: entry.name.clone(),
                description: entry.description.clone(),
                arguments_schema_json: entry.arguments.to_string(),
                capabilities: entry.capabilities.iter().map(ToString::to_string).collect(),
                memory_bytes: entry.limits.memory_bytes,
                timeout_ms: entry.limits.timeout_ms,
            })
            .collect(),
    }
}

/// A wire output in the engine's type (the inverse of [`output`]).
pub fn output_from_wire(output: proto::Output) -> Output {
    let timings = output.timings.unwrap_or_default();
    Output {
        tool: output.tool,
        exit_code: output.exit_code,
        stdout: output.stdout,
        stderr: output.stderr,
        stdout_tail: output.stdout_tail,
        stderr_tail: output.stderr_tail,
        stdout_total: output.stdout_total,
        stderr_total: output.stderr_total,
        artifacts: output.artifacts.into_iter().collect(),
        timings: Timings {
            queue_us: timings.queue_us,
            instantiate_us: timings.instantiate_us,
            run_us: timings.run_us,
            total_us: timings.total_us,
        },
        execution_id: Some(output.execution_id).filter(|id| !id.is_empty()),
        cached: output.cached,
        usage: output.usage.map(|usage| ResourceUsage {
            peak_memory_bytes: usage.peak_memory_bytes,
            user_us: usage.user_us,
            system_us: usage.system_us,
            limits_hit: usage
                .limits_hit
                .iter()
                .filter_map(|l| known_limit(l))
                .collect(),
            cgroup: match usage.cgroup.as_str() {
                "v1" => Some("v1"),
                "v2" => Some("v2"),
                _ => None,
            },
        }),
    }
}

/// A limit's name as the core's static string (names this build does not know are dropped).
fn known_limit(name: &str) -> Option<&'static str> {
    ["memory_limit", "timeout", "pids_limit"]
        .into_iter()
        .find(|known| *known == name)
}
