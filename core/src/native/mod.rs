//! Native tools: allowlisted binaries of the host, run with the same request, result, error
//! kinds, idempotency cache and concurrency limit as the megabinary's entries, so a caller
//! does not care which kind of tool it calls.
//!
//! A request names the binary by absolute path ([`ToolRef::Native`](crate::ToolRef)) and
//! carries a fully rendered argv: there is never a shell. The binary must pass the
//! [`Allowlist`]; it then runs with only the environment the request passes and
//! [`NativeOptions::env`] allows, plus `MEGAVISOR_EXECUTION_ID` and `MEGAVISOR_OUT_DIR`,
//! in its own process group, which is killed at the time limit.

pub mod allowlist;
pub mod cgroup;
mod direct;
mod gate;
mod jailed;
mod process;
pub mod sandbox;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use allowlist::{AllowedBinary, Allowlist, AllowlistConfig};
pub use cgroup::{CgroupVersion, ResourceLimits};
pub use sandbox::{Namespaces, Rlimits, SandboxOptions};

use cgroup::Hierarchies;

use crate::backend::{Backend, Call, Ending, Ran};
use crate::caller::{Caller, Credentials};
use crate::epoch::Stopped;
use crate::error::{Error, Result};
use crate::peer_access::AsPeer;
use crate::request::Request;
use crate::result::ResourceUsage;

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
pub(crate) struct NativeBackend {
    allowlist: Allowlist,
    options: NativeOptions,
    /// The cgroup hierarchies, when the sandbox uses cgroups.
    hierarchies: Option<Hierarchies>,
    /// The exec gate, when the sandbox has one.
    gate: Option<gate::ExecGate>,
    /// Digests the gate allows besides the allowlist's: the manifest's originals.
    gate_digests: HashSet<String>,
    spawner: process::Spawner,
}

/// A native call, checked.
pub(crate) struct NativePlan {
    binary: AllowedBinary,
    /// The cgroup memory limit, replacing the sandbox's default.
    memory_bytes: Option<u64>,
}

impl NativeBackend {
    /// The backend of `options`; `originals` are the digests the manifest's entries stand
    /// for, which the exec gate allows too.
    pub(crate) fn new(options: NativeOptions, originals: HashSet<String>) -> Result<Self> {
        let sandboxed_cgroups = options
            .sandbox
            .as_ref()
            .is_some_and(|s| s.cgroups.is_some());
        let hierarchies = sandboxed_cgroups.then(Hierarchies::detect).transpose()?;
        if let Some(hierarchies) = &hierarchies {
            hierarchies.sweep_stale();
        }
        let gate = options
            .sandbox
            .as_ref()
            .is_some_and(|s| s.exec_gate)
            .then(gate::ExecGate::default);
        Ok(NativeBackend {
            allowlist: Allowlist::new(&options.allowlist)?,
            options,
            hierarchies,
            gate,
            gate_digests: originals,
            spawner: process::Spawner::start()?,
        })
    }

    /// The time limit of a request that sets none.
    pub(crate) fn default_timeout(&self) -> Duration {
        self.options.default_timeout
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

    /// The call's cgroup, when the sandbox uses cgroups.
    fn cgroup(&self, memory_bytes: Option<u64>) -> Result<Option<cgroup::CallCgroup>> {
        let (Some(sandbox), Some(hierarchies)) = (&self.options.sandbox, &self.hierarchies) else {
            return Ok(None);
        };
        let resources = ResourceLimits {
            memory_bytes,
            ..sandbox.resources
        };
        let version = sandbox.cgroups.unwrap_or_default();
        hierarchies.create(version, &resources).map(Some)
    }

    /// How the process is started: through the jailer into the sandbox, or directly.
    fn launch<'a>(
        &'a self,
        plan: &'a NativePlan,
        call: &'a Call<'_>,
        group: Option<&cgroup::CallCgroup>,
    ) -> Result<process::Launch<'a>> {
        let how = match &self.options.sandbox {
            Some(sandbox) => process::How::Jailed(jailed::Jail {
                sandbox,
                cgroups: group.map(|g| g.dirs()).unwrap_or_default(),
                workspace: workspace_of(sandbox, call.caller.identity.namespace())?,
                out_dir: call.out_dir.as_deref(),
                exec_gate: self.granted(sandbox, &plan.binary)?,
            }),
            None => process::How::Direct(direct::Direct {
                cwd: &self.options.cwd,
                run_as: call.peer,
            }),
        };
        Ok(process::Launch {
            binary: &plan.binary,
            argv0: call.request.argv0.as_deref(),
            args: &call.request.args,
            env: &call.env,
            stdin: &call.request.stdin,
            stop: call.stop,
            output_bytes: call.output_bytes,
            how,
        })
    }
}

impl NativeBackend {
    /// What the exec gate lets this call execute: the allowed files of the root and the
    /// interpreter of the binary itself (which the jailer grants by its descriptor).
    fn granted(
        &self,
        sandbox: &SandboxOptions,
        binary: &AllowedBinary,
    ) -> Result<Option<Vec<megavisor_jail::GrantedFile>>> {
        let Some(gate) = &self.gate else {
            return Ok(None);
        };
        let mut allowed = self.allowlist.digests();
        if sandbox.gate_originals {
            allowed.extend(self.gate_digests.iter().cloned());
        }
        let mut granted = gate.granted(sandbox, &allowed)?;
        if let Some(interpreter) = gate.interpreter_of(sandbox, &binary.file, &allowed)?
            && !granted.iter().any(|g| g.path == interpreter.path)
        {
            granted.push(interpreter);
        }
        Ok(Some(granted))
    }
}

impl Backend for NativeBackend {
    /// The binary, by absolute path.
    type Tool<'a> = &'a Path;
    type Admitted = NativePlan;

    /// Checks the request against policy. A peer names and opens the binary as itself: it
    /// runs nothing it could not read. Without the sandbox a peer's tool runs as that user,
    /// which needs a supervisor that may take other identities.
    fn admit(
        &self,
        binary: &Path,
        request: &Request,
        _caller: &Caller,
        peer: Option<&Credentials>,
    ) -> Result<NativePlan> {
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
        let memory_bytes = crate::admission::native_memory_limit(
            request.limits.memory_bytes,
            self.options
                .sandbox
                .as_ref()
                .and_then(|s| s.resources.memory_bytes),
        )?;
        let as_peer = peer.map(AsPeer::assume).transpose()?;
        let binary = self.allowlist.check(binary)?;
        drop(as_peer);
        Ok(NativePlan {
            binary,
            memory_bytes,
        })
    }

    /// Inside the sandbox the directory is mounted at `/out`, owned by the tool's uid;
    /// outside, it is itself.
    fn out_dir_seen_at(&self, host: &Path) -> Result<String> {
        Ok(match &self.options.sandbox {
            Some(sandbox) => {
                crate::mounts::own_dir(host, (sandbox.uid, sandbox.gid))?;
                megavisor_jail::OUT_DIR.to_owned()
            }
            None => host.display().to_string(),
        })
    }

    fn run(&self, plan: NativePlan, call: &Call<'_>) -> Result<Ran> {
        if let Some(reason) = call.stop.check() {
            return Err(call.stop.ended_before_start(
                reason,
                &call.name,
                call.request.execution_id.clone(),
            ));
        }
        let started = Instant::now();
        let group = self.cgroup(plan.memory_bytes)?;
        let finished = self.launch(&plan, call, group.as_ref()).and_then(|launch| {
            process::run(&self.spawner, &launch, &|| {
                if let Some(group) = &group {
                    group.kill_members();
                }
            })
        });
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
        let usage = usage(&counted, &finished, cgroup);
        let ending = match finished.stopped {
            Some(reason) => Ending::Stopped(reason),
            None if counted.oom_killed => Ending::MemoryLimit {
                requested: usage.peak_memory_bytes,
                limit: plan.memory_bytes.unwrap_or_default(),
            },
            None => Ending::Exited,
        };
        Ok(Ran {
            exit_code: finished.exit_code,
            stdout: finished.stdout,
            stderr: finished.stderr,
            instantiate: Duration::ZERO,
            run: ran,
            usage: Some(usage),
            ending,
        })
    }
}

/// What a native call used, from its cgroup where it had one, else from `wait4`, and
/// which limits it hit.
fn usage(
    counted: &cgroup::CgroupUsage,
    finished: &process::Finished,
    cgroup: Option<&'static str>,
) -> ResourceUsage {
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
    ResourceUsage {
        peak_memory_bytes: counted.peak_memory_bytes.unwrap_or(finished.max_rss_bytes),
        user_us: counted.user_us.unwrap_or(finished.user_us),
        system_us: counted.system_us.unwrap_or(finished.system_us),
        limits_hit,
        cgroup,
    }
}
