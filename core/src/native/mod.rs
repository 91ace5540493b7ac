//! Native tools: allowlisted binaries of the host, run with the same request, result, error
//! kinds, idempotency cache and concurrency limit as the megabinary's entries (seed 000's
//! exec driver), so a caller does not care which kind of tool it calls.
//!
//! A request names the binary by absolute path ([`ToolRef::Native`](crate::ToolRef)) and
//! carries a fully rendered argv: there is never a shell. The binary must pass the
//! [`Allowlist`]; it then runs with only the environment the request passes and
//! [`NativeOptions::env`] allows, plus `MEGAVISOR_EXECUTION_ID` and `MEGAVISOR_OUT_DIR`,
//! in its own process group, which is killed at the time limit.

pub mod allowlist;
pub mod cgroup;
mod process;
pub mod sandbox;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use allowlist::{AllowedBinary, Allowlist, AllowlistConfig};
pub use cgroup::{CgroupVersion, ResourceLimits};
pub use sandbox::{Namespaces, Rlimits, SandboxOptions};

use cgroup::Hierarchies;

use crate::artifacts;
use crate::caller::Credentials;
use crate::epoch::{Stop, Stopped};
use crate::error::{Error, Result};
use crate::request::Request;
use crate::result::{Output, ResourceUsage, Timings};

/// How native tools may run.
#[derive(Debug, Clone)]
pub struct NativeOptions {
    /// Which binaries.
    pub allowlist: AllowlistConfig,
    /// Environment variables a request may set: exact names, or prefixes ending in `*`.
    pub env: Vec<String>,
    /// Time limit of a request that sets none.
    pub default_timeout: Duration,
    /// Working directory of the processes (outside a sandbox).
    pub cwd: PathBuf,
    /// The sandbox every native tool runs in; `None` runs them as plain processes of the
    /// supervisor's user (allowlist, environment, time limit and process group still apply).
    pub sandbox: Option<SandboxOptions>,
}

impl Default for NativeOptions {
    fn default() -> Self {
        NativeOptions {
            allowlist: AllowlistConfig::default(),
            env: Vec::new(),
            default_timeout: Duration::from_secs(30),
            cwd: PathBuf::from("/"),
            sandbox: None,
        }
    }
}

/// The limits of one native call, settled by the runtime (its time is its `Stop`).
pub(crate) struct NativeLimits<'a> {
    /// The cgroup memory limit, replacing the sandbox's default.
    pub memory_bytes: Option<u64>,
    pub output_bytes: usize,
    /// `<out-dir>/<execution_id>/`, when the runtime has an output directory and the
    /// request an execution id.
    pub out_dir: Option<PathBuf>,
    /// A peer of another uid the call is for: outside the sandbox, the tool runs as it.
    pub run_as: Option<&'a Credentials>,
    /// The uid of the peer the call is for, if it is a peer's: its sandboxed tools share a
    /// workspace of their own.
    pub principal: Option<u32>,
}

/// The host directory a sandboxed call sees at `/workspace`: the operator's, or for a peer's
/// call the peer's own `uid-<uid>/` in it (owned by the sandbox's user), so that one peer's
/// tools never see another's files.
fn workspace_of(sandbox: &SandboxOptions, principal: Option<u32>) -> Result<Option<PathBuf>> {
    let (Some(root), Some(uid)) = (&sandbox.workspace, principal) else {
        return Ok(sandbox.workspace.clone());
    };
    let dir = root.join(format!("uid-{uid}"));
    crate::mounts::own_dir(&dir, (sandbox.uid, sandbox.gid))?;
    Ok(Some(dir))
}

/// Runs native tools under an allowlist.
#[derive(Debug)]
pub(crate) struct NativeDriver {
    allowlist: Allowlist,
    options: NativeOptions,
    /// The cgroup hierarchies, when the sandbox uses cgroups.
    hierarchies: Option<Hierarchies>,
    spawner: process::Spawner,
}

impl NativeDriver {
    pub(crate) fn new(options: NativeOptions) -> Result<Self> {
        let sandboxed_cgroups = options
            .sandbox
            .as_ref()
            .is_some_and(|s| s.cgroups.is_some());
        let hierarchies = sandboxed_cgroups.then(Hierarchies::detect).transpose()?;
        if let Some(hierarchies) = &hierarchies {
            hierarchies.sweep_stale();
        }
        Ok(NativeDriver {
            allowlist: Allowlist::new(&options.allowlist)?,
            options,
            hierarchies,
            spawner: process::Spawner::start()?,
        })
    }

    /// The time limit of a request that sets none.
    pub(crate) fn default_timeout(&self) -> Duration {
        self.options.default_timeout
    }

    /// Checks the request against policy, before it waits for a concurrency permit. `peer`
    /// is the user of another uid the call is for, if any: without the sandbox its tool
    /// runs as that user, which needs a supervisor that may take other identities.
    pub(crate) fn admit(
        &self,
        binary: &Path,
        request: &Request,
        peer: Option<&Credentials>,
    ) -> Result<AllowedBinary> {
        if let Some(peer) = peer
            && self.options.sandbox.is_none()
            && !nix::unistd::geteuid().is_root()
        {
            return Err(Error::NotAllowed(format!(
                "{}: a native tool for uid {} runs as that user, which this supervisor (not root) cannot do; serve with --sandbox, as root",
                binary.display(),
                peer.uid
            )));
        }
        if !request.mounts.is_empty() || request.capabilities.is_some() {
            return Err(Error::BadRequest(
                "mounts and capabilities apply to wasm tools; a native tool sees the host's files"
                    .to_owned(),
            ));
        }
        if request.limits.fuel.is_some() {
            return Err(Error::BadRequest(
                "fuel limits apply to wasm tools only".to_owned(),
            ));
        }
        if request.limits.memory_bytes.is_some() && self.hierarchies.is_none() {
            return Err(Error::BadRequest(
                "a native tool's memory limit needs the sandbox with cgroups, which is not configured"
                    .to_owned(),
            ));
        }
        for (key, _) in &request.env {
            if !self.env_allowed(key) {
                return Err(Error::NotAllowed(format!(
                    "native tools may not be given environment variable {key} (allowed: {})",
                    if self.options.env.is_empty() {
                        "none".to_owned()
                    } else {
                        self.options.env.join(", ")
                    }
                )));
            }
        }
        self.allowlist.check(binary)
    }

    /// The memory limit of a call: the request's, which may only lower the sandbox's.
    fn memory_limit(&self, asked: Option<u64>) -> Result<Option<u64>> {
        let cap = self
            .options
            .sandbox
            .as_ref()
            .and_then(|s| s.resources.memory_bytes);
        match (asked, cap) {
            (Some(bytes), _) if bytes < 1 << 20 => Err(Error::BadRequest(format!(
                "memory limit of {bytes} bytes is below the 1 MiB a process needs to start"
            ))),
            (Some(bytes), Some(cap)) if bytes > cap => Err(Error::BadRequest(format!(
                "memory limit of {bytes} bytes exceeds the sandbox's limit of {cap} bytes"
            ))),
            (asked, cap) => Ok(asked.or(cap)),
        }
    }

    fn env_allowed(&self, key: &str) -> bool {
        self.options
            .env
            .iter()
            .any(|allowed| match allowed.strip_suffix('*') {
                Some(prefix) => key.starts_with(prefix),
                None => key == allowed,
            })
    }

    /// Runs an admitted binary until it ends or `stop` says so. `received` is when the call
    /// arrived (its queue time runs until now).
    pub(crate) fn run(
        &self,
        binary: &AllowedBinary,
        request: &Request,
        limits: &NativeLimits<'_>,
        stop: &Stop,
        received: Instant,
    ) -> Result<Output> {
        let queued = received.elapsed();
        let tool = binary.requested.display().to_string();
        if let Some(reason) = stop.check() {
            return Err(stop.ended_before_start(reason, &tool, request.execution_id.clone()));
        }
        let mut env = request.env.clone();
        if let Some(id) = &request.execution_id {
            env.push(("MEGAVISOR_EXECUTION_ID".to_owned(), id.clone()));
        }
        if let Some(dir) = &limits.out_dir {
            // Inside the sandbox the directory is mounted at /out, owned by the tool's uid;
            // outside, it is itself.
            let seen = match &self.options.sandbox {
                Some(sandbox) => {
                    crate::mounts::own_dir(dir, (sandbox.uid, sandbox.gid))?;
                    megavisor_jail::OUT_DIR.to_owned()
                }
                None => dir.display().to_string(),
            };
            env.push(("MEGAVISOR_OUT_DIR".to_owned(), seen));
        }
        let started = Instant::now();
        let memory_limit = self.memory_limit(limits.memory_bytes)?;
        let group = match (&self.options.sandbox, &self.hierarchies) {
            (Some(sandbox), Some(hierarchies)) => {
                let resources = ResourceLimits {
                    memory_bytes: memory_limit,
                    ..sandbox.resources
                };
                let version = sandbox.cgroups.unwrap_or_default();
                Some(hierarchies.create(version, &resources)?)
            }
            _ => None,
        };
        let jail = match &self.options.sandbox {
            Some(sandbox) => Some(process::Jail {
                sandbox,
                cgroups: group.as_ref().map(|g| g.dirs()).unwrap_or_default(),
                workspace: workspace_of(sandbox, limits.principal)?,
            }),
            None => None,
        };
        let finished = process::run(
            &self.spawner,
            &process::Invocation {
                binary,
                args: &request.args,
                env: &env,
                stdin: &request.stdin,
                stop,
                output_bytes: limits.output_bytes,
                run_as: limits.run_as,
                cwd: &self.options.cwd,
                jail,
                out_dir: limits.out_dir.as_deref(),
            },
            &|| {
                if let Some(group) = &group {
                    group.kill_members();
                }
            },
        );
        let counted = group.as_ref().map(|g| g.usage()).unwrap_or_default();
        let cgroup = group.as_ref().map(|g| match g.version() {
            CgroupVersion::V2 => "v2",
            _ => "v1",
        });
        if let Some(group) = group {
            group.remove();
        }
        let finished = finished?;
        let ran = started.elapsed();
        let mut limits_hit = Vec::new();
        if counted.oom_killed {
            limits_hit.push("memory_limit");
        }
        if finished.stopped == Some(Stopped::Limit) {
            limits_hit.push("timeout");
        }
        if counted.pids_limited {
            limits_hit.push("pids_limit");
        }
        let usage = ResourceUsage {
            peak_memory_bytes: counted.peak_memory_bytes.unwrap_or(finished.max_rss_bytes),
            user_us: counted.user_us.unwrap_or(finished.user_us),
            system_us: counted.system_us.unwrap_or(finished.system_us),
            limits_hit,
            cgroup,
        };
        let mut artifacts = artifacts::from_stdout(&finished.stdout.tail);
        if let (Some(dir), Some(id)) = (&limits.out_dir, &request.execution_id) {
            artifacts.extend(artifacts::from_file(&dir.join(format!("{id}.json"))));
        }
        let output = Output {
            tool: tool.clone(),
            exit_code: finished.exit_code,
            stdout: finished.stdout.head,
            stderr: finished.stderr.head,
            stdout_tail: finished.stdout.tail,
            stderr_tail: finished.stderr.tail,
            stdout_total: finished.stdout.total,
            stderr_total: finished.stderr.total,
            artifacts,
            timings: Timings {
                queue_us: queued.as_micros() as u64,
                instantiate_us: 0,
                run_us: ran.as_micros() as u64,
                total_us: received.elapsed().as_micros() as u64,
            },
            execution_id: request.execution_id.clone(),
            cached: false,
            usage: Some(usage.clone()),
        };
        if counted.oom_killed && finished.stopped.is_none() {
            return Err(Error::MemoryLimit {
                tool,
                requested: usage.peak_memory_bytes,
                limit: memory_limit.unwrap_or_default(),
                partial: Box::new(output),
            });
        }
        match finished.stopped {
            Some(reason) => Err(stop.error(reason, output, true)),
            None => Ok(output),
        }
    }
}
