//! The RuntimeDriver gRPC service (runtime.v1) on its own Unix socket: the interoperable
//! door beside the ring. Calls go through the same runtime, guest threads, limits,
//! idempotency cache and peer policy as ring calls.
//!
//! Served with hyper's HTTP/2 directly rather than tonic's transport server, so that this
//! module, not a layer in front of it, owns the caller's deadline (`grpc-timeout`): the
//! call is stopped at the deadline and answered `DEADLINE_EXCEEDED` then, every time
//! (tonic's own timeout answers `CANCELLED`, racing the tool's own answer). The deadline is
//! the caller's, not the tool's time limit: a retry with less time left asks the same thing.
//! A call whose client cancels the RPC, or closes the connection, is stopped.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use megavisor_client::ErrorKind;
use megavisor_core::signing::Authenticity;
use megavisor_core::{Caller, CancelToken, Entry, Error, Output, Request, Runtime};
use megavisor_driver::convert;
use megavisor_grpc::ERROR_KIND_TRAILER;
use megavisor_grpc::v1::runtime_driver_server::{RuntimeDriver, RuntimeDriverServer};
use megavisor_grpc::v1::{
    Bundle, DiscoverReply, ExecuteReply, ExecuteRequest, Module, ResourceUsage, Timings, Tool,
};
use megavisor_wire::proto::{self, call};
use serde_json::{Map, Value};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tracing::{debug, error, info};

use super::{Shared, server_name};
use crate::serve::connection::Peer;

/// Discover's feature list: what it reports as enabled.
const FEATURES: &[&str] = &[
    "wasm",
    "ring",
    "socket",
    "grpc",
    "idempotency",
    "seccomp",
    "reload",
];

/// Serves gRPC on `listener` from a thread of its own (with a small async runtime) until
/// the process exits.
pub fn spawn(shared: Arc<Shared>, listener: UnixListener) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("mv-grpc".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::UnixListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(e) => return error!("gRPC socket unusable: {e}"),
                };
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            tokio::spawn(serve_connection(shared.clone(), stream));
                        }
                        Err(e) => {
                            // Out of descriptors the connection stays queued: pause.
                            error!("gRPC accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            });
        })?;
    Ok(())
}

/// Serves one HTTP/2 connection with the service, knowing its peer.
async fn serve_connection(shared: Arc<Shared>, stream: tokio::net::UnixStream) {
    let peer =
        Peer::of(stream.as_fd()).map_err(|e| format!("the peer's credentials are unknown: {e}"));
    let service = RuntimeDriverServer::new(DriverService { shared, peer });
    let served = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(
            hyper_util::rt::TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(service),
        )
        .await;
    if let Err(e) = served {
        debug!("gRPC connection ended: {e}");
    }
}

struct DriverService {
    shared: Arc<Shared>,
    /// The connection's peer, or why it is unknown.
    peer: Result<Peer, String>,
}

/// Gives up on a call when the RPC handling it is dropped: its client cancelled it, or
/// went away, before it was answered.
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

#[tonic::async_trait]
impl RuntimeDriver for DriverService {
    async fn execute(
        &self,
        request: tonic::Request<ExecuteRequest>,
    ) -> Result<tonic::Response<ExecuteReply>, Status> {
        let received = Instant::now();
        let peer = self.check_peer()?;
        let deadline = grpc_timeout(request.metadata()).map(|d| received + d);
        let execute = request.into_inner();
        if self.shared.draining() {
            return Err(status(
                ErrorKind::ShuttingDown,
                "the supervisor is shutting down (SIGTERM) and takes no new calls".into(),
            ));
        }
        info!(
            subject = %execute.subject_id,
            instruction = %execute.instruction,
            execution_id = %execute.execution_id,
            "gRPC Execute from {peer}"
        );
        let runtime = self.shared.runtime();
        let full_output = execute.full_output;
        let call = to_request(&runtime, execute)?;
        let cancel = CancelToken::new();
        let caller = Caller {
            identity: peer.identity(),
            received,
            deadline,
            cancel: cancel.clone(),
        };
        let _give_up = CancelOnDrop(cancel.clone());
        let (done, outcome) = tokio::sync::oneshot::channel();
        let job = super::call_job(runtime.clone(), call, caller, move |delivered| {
            let _ = done.send(delivered);
        });
        self.shared
            .executor
            .submit(job)
            .map_err(|busy| status(ErrorKind::Busy, busy.to_string()))?;
        let outcome = match deadline {
            None => outcome.await,
            Some(deadline) => {
                tokio::select! {
                    outcome = outcome => outcome,
                    () = tokio::time::sleep_until(deadline.into()) => {
                        // The tool stops at the same deadline; the answer does not wait.
                        cancel.cancel();
                        return Err(status(
                            ErrorKind::Timeout,
                            format!("the call's deadline passed after {} ms", received.elapsed().as_millis()),
                        ));
                    }
                }
            }
        };
        match outcome {
            Ok(Some(Ok(output))) => Ok(tonic::Response::new(reply(output, full_output))),
            Ok(Some(Err(err))) => Err(error_status(&err)),
            Ok(None) | Err(_) => Err(status(
                ErrorKind::Internal,
                "the supervisor failed while running this call (a bug: see its log)".into(),
            )),
        }
    }

    async fn discover(
        &self,
        _request: tonic::Request<()>,
    ) -> Result<tonic::Response<DiscoverReply>, Status> {
        self.check_peer()?;
        let runtime = self.shared.runtime();
        let manifest = runtime.manifest();
        let signed_by = match runtime.authenticity() {
            Authenticity::Signed { key_id } => key_id.clone(),
            Authenticity::Unverified { .. } => String::new(),
        };
        Ok(tonic::Response::new(DiscoverReply {
            version: server_name(),
            features: FEATURES.iter().map(|f| (*f).to_owned()).collect(),
            bundle: Some(Bundle {
                name: manifest.name.clone(),
                wasm_sha256: manifest.modules[0].wasm.digests.sha256.clone(),
                wasm_blake3: manifest.modules[0].wasm.digests.blake3.clone(),
                signed_by,
                modules: manifest
                    .modules
                    .iter()
                    .map(|module| Module {
                        name: module.name.clone(),
                        wasm_sha256: module.wasm.digests.sha256.clone(),
                        wasm_blake3: module.wasm.digests.blake3.clone(),
                    })
                    .collect(),
            }),
            tools: manifest.entries.iter().map(tool).collect(),
        }))
    }
}

impl DriverService {
    /// Applies the same `SO_PEERCRED` policy as the ring socket.
    fn check_peer(&self) -> Result<&Peer, Status> {
        let peer = self
            .peer
            .as_ref()
            .map_err(|reason| status(ErrorKind::NotAllowed, reason.clone()))?;
        self.shared
            .config
            .peers
            .check(peer)
            .map_err(|reason| status(ErrorKind::NotAllowed, reason))?;
        Ok(peer)
    }
}

/// An `Execute` request as the wire call a ring client would send for it, converted by the
/// same code (`convert::request`): only naming the tool and typing `params` are gRPC's own.
/// `instruction` names the entry; `args`, `params` or `params_json` (at most one) give its
/// arguments. The gRPC deadline is not part of it: it is the caller's, and stops the call
/// apart from the tool's own time limit.
pub(crate) fn to_request(runtime: &Runtime, execute: ExecuteRequest) -> Result<Request, Status> {
    let bad = |m: &str| error_status(&Error::BadRequest(m.to_owned()));
    let given = [
        !execute.args.is_empty(),
        !execute.params.is_empty(),
        !execute.params_json.is_empty(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(bad("pass one of args, params and params_json"));
    }
    // An absolute path names a native binary: it runs as the entry whose recorded digests
    // match its content (the entry's originals); failing that, as itself if the allowlist
    // lets it (a native tool named by absolute path, e.g. `/usr/bin/ctr images ls`); else
    // it is refused with EACCES.
    let (tool, entry) = if execute.instruction.starts_with('/') {
        let binary = std::path::Path::new(&execute.instruction);
        match runtime.entry_for_native(binary) {
            Ok(entry) => (call::Tool::Name(entry.name.clone()), Some(entry)),
            Err(_) if runtime.runs_native_tools() => {
                (call::Tool::Native(execute.instruction.clone()), None)
            }
            Err(refused) => return Err(error_status(&refused)),
        }
    } else {
        let entry = runtime
            .manifest()
            .entry(&execute.instruction)
            .ok_or_else(|| {
                error_status(&Error::ToolNotFound {
                    name: execute.instruction.clone(),
                    available: runtime.manifest().entry_names(),
                })
            })?;
        (call::Tool::Name(entry.name.clone()), Some(entry))
    };
    let params_json = if execute.params.is_empty() {
        execute.params_json
    } else {
        let Some(entry) = entry else {
            return Err(bad(
                "params need an entry's argument schema; a native tool takes args",
            ));
        };
        let typed = typed_params(entry, execute.params).map_err(|e| error_status(&e))?;
        typed.to_string()
    };
    let mut env: Vec<(String, String)> = execute.env.into_iter().collect();
    env.sort();
    let call = proto::Call {
        tool: Some(tool),
        args: execute.args,
        params_json,
        env: env
            .into_iter()
            .map(|(name, value)| proto::EnvVar { name, value })
            .collect(),
        stdin: execute.stdin,
        limits: Some(proto::Limits {
            memory_bytes: (execute.memory_bytes > 0).then_some(execute.memory_bytes),
            timeout_ms: (execute.timeout_ms > 0).then_some(execute.timeout_ms),
            fuel: None,
            // Without full output only the tails (always kept) are returned.
            output_bytes: if execute.full_output {
                (execute.output_bytes > 0).then_some(execute.output_bytes)
            } else {
                Some(0)
            },
        }),
        execution_id: execute.execution_id,
        ..proto::Call::default()
    };
    convert::request(runtime, call).map_err(|failure| failure_status(&failure))
}

/// The string parameters of `params`, typed by the entry's schema: "true"/"false" for
/// booleans, decimal numbers, JSON arrays (or a single string) for arrays.
fn typed_params(entry: &Entry, params: HashMap<String, String>) -> Result<Value, Error> {
    let properties = entry.arguments.get("properties").and_then(Value::as_object);
    let mut typed = Map::new();
    for (name, text) in params {
        let kind = properties
            .and_then(|p| p.get(&name))
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str);
        let bad = |what: &str| {
            Error::BadRequest(format!(
                "parameter {name:?} of {}: {text:?} is not {what}",
                entry.name
            ))
        };
        let value = match kind {
            Some("boolean") => match text.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(bad("true or false")),
            },
            Some("integer") => Value::from(text.parse::<i64>().map_err(|_| bad("an integer"))?),
            Some("number") => text
                .parse::<f64>()
                .ok()
                .and_then(|n| serde_json::Number::from_f64(n).map(Value::Number))
                .ok_or_else(|| bad("a number"))?,
            Some("array") if text.trim_start().starts_with('[') => {
                serde_json::from_str(&text).map_err(|_| bad("a JSON array"))?
            }
            Some("array") => Value::Array(vec![Value::String(text.clone())]),
            _ => Value::String(text.clone()),
        };
        typed.insert(name, value);
    }
    Ok(Value::Object(typed))
}

fn reply(output: Output, full_output: bool) -> ExecuteReply {
    let timings = output.timings;
    ExecuteReply {
        exit_code: output.exit_code,
        stdout_tail: output.stdout_tail,
        stderr_tail: output.stderr_tail,
        artifacts: output.artifacts.into_iter().collect(),
        stdout: if full_output {
            output.stdout
        } else {
            Vec::new()
        },
        stderr: if full_output {
            output.stderr
        } else {
            Vec::new()
        },
        stdout_total: output.stdout_total,
        stderr_total: output.stderr_total,
        timings: Some(Timings {
            queue_us: timings.queue_us,
            instantiate_us: timings.instantiate_us,
            run_us: timings.run_us,
            total_us: timings.total_us,
        }),
        cached: output.cached,
        tool: output.tool,
        usage: output.usage.map(|usage| ResourceUsage {
            peak_memory_bytes: usage.peak_memory_bytes,
            user_us: usage.user_us,
            system_us: usage.system_us,
            limits_hit: usage.limits_hit.iter().map(|l| (*l).to_owned()).collect(),
            cgroup: usage.cgroup.unwrap_or_default().to_owned(),
        }),
    }
}

fn tool(entry: &Entry) -> Tool {
    Tool {
        name: entry.name.clone(),
        description: entry.description.clone(),
        arguments_schema_json: entry.arguments.to_string(),
        capabilities: entry.capabilities.iter().map(ToString::to_string).collect(),
        memory_bytes: entry.limits.memory_bytes,
        timeout_ms: entry.limits.timeout_ms,
    }
}

/// The gRPC status of a core error, with its kind in the trailer.
fn error_status(err: &Error) -> Status {
    let kind = ErrorKind::from_name(err.kind().as_str()).unwrap_or(ErrorKind::Internal);
    status(kind, err.to_string())
}

/// The gRPC status of a wire failure.
fn failure_status(failure: &proto::Failure) -> Status {
    let name = proto::ErrorKind::try_from(failure.kind).map_or("internal", |k| k.name());
    let kind = ErrorKind::from_name(name).unwrap_or(ErrorKind::Internal);
    status(kind, failure.message.clone())
}

/// A status of `kind` (its code from the one table of kinds), with its name in the trailer.
fn status(kind: ErrorKind, message: String) -> Status {
    let info = kind.info();
    let mut trailers = MetadataMap::new();
    trailers.insert(
        ERROR_KIND_TRAILER,
        info.name
            .parse()
            .expect("kind names are valid metadata values"),
    );
    Status::with_metadata(Code::from_i32(info.grpc_code), message, trailers)
}

/// The `grpc-timeout` header: digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.saturating_mul(3600)),
        "M" => Duration::from_secs(value.saturating_mul(60)),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(grpc_timeout(&metadata), Some(Duration::from_millis(250)));
        metadata.insert("grpc-timeout", "3S".parse().unwrap());
        assert_eq!(grpc_timeout(&metadata), Some(Duration::from_secs(3)));
        metadata.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(grpc_timeout(&metadata), None);
    }
}
