//! The policy: one document of everything an operator decides about what runs and how
//! far it may go, read from TOML (or the same structure as JSON, inline, from a binding).
//! Unknown keys are refused, every key has a default, and an error names the file, the key
//! and what was expected. `docs/policy.example.toml` shows every key with its default.
//!
//! Sections: `[limits]` (what any call may ask for), `[native]` (which host binaries may
//! run), `[sandbox]` (how they are jailed), `[cgroups]` (their resources), `[peers]` (who
//! may connect to a supervisor and which host directories their mounts may name) and
//! `[seccomp]` (the system-call filters of guest threads and sandboxed tools).

mod units;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use units::{Size, Span, parse_duration, parse_size};

use crate::engine::EngineOptions;
use crate::error::Error;
use crate::mounts::MountRoot;
use crate::native::{
    AllowlistConfig, CgroupVersion, Namespaces, NativeOptions, ResourceLimits, Rlimits,
    SandboxOptions,
};
use crate::runtime::RuntimeOptions;
use crate::session::SessionOptions;
use megavisor_jail::filters;

/// The policy in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// What any call may ask for.
    pub limits: LimitsPolicy,
    /// Which native binaries may run.
    pub native: NativePolicy,
    /// How native tools are jailed.
    pub sandbox: SandboxPolicy,
    /// The resources of each sandboxed native call.
    pub cgroups: CgroupsPolicy,
    /// Who may connect, and where their mounts may lie.
    pub peers: PeersPolicy,
    /// The seccomp filters of guest threads and sandboxed tools.
    pub seccomp: SeccompPolicy,
}

/// `[seccomp]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SeccompPolicy {
    /// An operator's filters in seccompiler's JSON, with the filters every set names (see
    /// `jail/seccomp/filters.json`, the built-in ones used when this is unset).
    pub filters: Option<PathBuf>,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsPolicy {
    /// Calls that run at once (guest threads and warm instance slots). Default: one per
    /// core.
    pub max_concurrency: u32,
    /// The largest linear memory any call may have.
    pub max_memory: Size,
    /// The longest time limit any call may have.
    pub max_timeout: Span,
    /// Bytes of stdout and of stderr any call may keep in full.
    pub max_output: Size,
    /// The largest stdin of a call.
    pub max_stdin: Size,
    /// Execution ids remembered per principal.
    pub idempotency_entries: usize,
    /// Bytes of output the remembered outcomes of one principal may hold.
    pub idempotency_bytes: Size,
    /// How long an execution id is remembered.
    pub idempotency_ttl: Span,
    /// Sessions open at once; each holds one of the `max_concurrency` permits.
    pub max_sessions: usize,
    /// A session unused this long is closed.
    pub session_idle_ttl: Span,
}

/// `[native]`. Native tools are refused unless `binaries`, `allowlist_file` or `digests`
/// names some.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NativePolicy {
    /// Absolute paths of allowed binaries (symlinks resolved).
    pub binaries: Vec<PathBuf>,
    /// A file of allowed paths, one per line, `#` comments; re-read when it changes.
    pub allowlist_file: Option<PathBuf>,
    /// SHA-256 or BLAKE3 hex digests of allowed binaries, wherever they lie; once any is
    /// given, a listed path whose content matches none is refused.
    pub digests: Vec<String>,
    /// Environment variables a request may pass: names, or prefixes ending in `*`.
    pub env: Vec<String>,
    /// The time limit of a native call that sets none.
    pub default_timeout: Span,
    /// Working directory of native tools run outside the sandbox.
    pub cwd: PathBuf,
}

/// `[sandbox]`: native tools in their own namespaces, root and cgroup (needs root).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxPolicy {
    /// Run every native tool in the sandbox.
    pub enabled: bool,
    /// The jailer program. Default: `megavisor-jail` beside the running program.
    pub jailer: Option<PathBuf>,
    /// An operator's root directory; unset builds a fresh one from `read_only`.
    pub root: Option<PathBuf>,
    /// Host directories a fresh root shows, read-only.
    pub read_only: Vec<PathBuf>,
    /// A host directory mounted read-write (noexec) at `/workspace`; unset for a private
    /// tmpfs.
    pub workspace: Option<PathBuf>,
    /// Keep the host's network (no network namespace).
    pub network: bool,
    /// Size of the private `/tmp` (and of a tmpfs workspace).
    pub tmp_size: Size,
    /// The unprivileged uid tools run as.
    pub uid: u32,
    /// The unprivileged gid tools run as.
    pub gid: u32,
    /// The hostname inside.
    pub hostname: String,
    /// RLIMIT_NOFILE.
    pub open_files: Option<u64>,
    /// RLIMIT_FSIZE: the largest file a tool may write.
    pub file_size: Option<Size>,
    /// RLIMIT_CPU, in seconds.
    pub cpu_seconds: Option<u64>,
    /// The exec gate: tools may execute only files whose content the allowlist's digests
    /// or the manifest's originals allow, enforced by the kernel (Landlock, required).
    pub exec_gate: bool,
    /// The directories whose files the gate may grant (as the sandbox shows them).
    pub gate_dirs: Vec<PathBuf>,
}

/// `[cgroups]`: the resources of each sandboxed native call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CgroupsPolicy {
    /// `auto` (v2 if it has the controllers, else v1), `v1`, `v2` or `none`.
    pub version: CgroupChoice,
    /// CPU quota, in cores (e.g. 0.5).
    pub cpus: Option<f64>,
    /// Processes and threads at once.
    pub pids: Option<u64>,
    /// IO weight (v2: 1-10000; v1: 10-1000).
    pub io_weight: Option<u32>,
    /// Memory (and swap); a request may only lower it.
    pub memory: Option<Size>,
}

/// Which cgroup hierarchy sandboxed calls use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CgroupChoice {
    /// v2 if it offers every controller the limits need, else v1.
    #[default]
    Auto,
    /// cgroup v1.
    V1,
    /// cgroup v2.
    V2,
    /// No cgroup: no limits, usage from the process only.
    None,
}

/// `[peers]`: who may connect to a supervisor, and where their mounts may lie.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PeersPolicy {
    /// uids allowed besides the supervisor's own.
    pub allow_uids: Vec<u32>,
    /// Primary gids allowed.
    pub allow_gids: Vec<u32>,
    /// Make the socket 0660 and owned by this group (name or gid) instead of 0600.
    pub socket_group: Option<String>,
    /// Host directories under which peers' mounts may lie, `DIR[:ro|:rw]` (read-only by
    /// default). None: peers may mount nothing.
    pub mount_roots: Vec<String>,
}

impl Default for LimitsPolicy {
    fn default() -> Self {
        let runtime = RuntimeOptions::default();
        LimitsPolicy {
            max_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get() as u32),
            max_memory: Size(runtime.engine.max_memory_bytes),
            max_timeout: Span(runtime.max_timeout),
            max_output: Size(runtime.max_output_bytes),
            max_stdin: Size(runtime.max_stdin_bytes),
            idempotency_entries: runtime.idempotency_capacity,
            idempotency_bytes: Size(runtime.idempotency_max_bytes as u64),
            idempotency_ttl: Span(runtime.idempotency_ttl),
            max_sessions: runtime.sessions.max,
            session_idle_ttl: Span(runtime.sessions.idle_ttl),
        }
    }
}

impl Default for NativePolicy {
    fn default() -> Self {
        let native = NativeOptions::default();
        NativePolicy {
            binaries: Vec::new(),
            allowlist_file: None,
            digests: Vec::new(),
            env: Vec::new(),
            default_timeout: Span(native.default_timeout),
            cwd: native.cwd,
        }
    }
}

impl Default for SandboxPolicy {
    fn default() -> Self {
        let sandbox = SandboxOptions::default();
        SandboxPolicy {
            enabled: false,
            jailer: None,
            root: None,
            read_only: sandbox.read_only,
            workspace: None,
            network: false,
            tmp_size: Size(sandbox.tmp_bytes),
            uid: sandbox.uid,
            gid: sandbox.gid,
            hostname: sandbox.hostname,
            open_files: sandbox.rlimits.open_files,
            file_size: sandbox.rlimits.file_bytes.map(Size),
            cpu_seconds: sandbox.rlimits.cpu_seconds,
            exec_gate: false,
            gate_dirs: sandbox.gate_dirs,
        }
    }
}

impl Default for CgroupsPolicy {
    fn default() -> Self {
        let resources = SandboxOptions::default().resources;
        CgroupsPolicy {
            version: CgroupChoice::Auto,
            cpus: resources.cpu_cores,
            pids: resources.pids,
            io_weight: resources.io_weight,
            memory: resources.memory_bytes.map(Size),
        }
    }
}

/// A policy that could not be read: which file, which key, what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy {source_name}: {}{message}", key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
pub struct PolicyError {
    /// The file, or `<inline>` for a policy passed as data.
    pub source_name: String,
    /// The dotted key at fault, when one is.
    pub key: Option<String>,
    /// What was wrong and what was expected.
    pub message: String,
}

impl From<PolicyError> for Error {
    fn from(err: PolicyError) -> Self {
        Error::BadRequest(err.to_string())
    }
}

impl Policy {
    /// Reads and checks the TOML policy at `path`.
    pub fn from_file(path: &Path) -> Result<Policy, PolicyError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            source_name: name.clone(),
            key: None,
            message: format!("cannot read it: {e}"),
        })?;
        Self::from_toml(&text, &name)
    }

    /// Reads and checks a TOML policy; `name` says where it came from, for errors.
    pub fn from_toml(text: &str, name: &str) -> Result<Policy, PolicyError> {
        let deserializer = toml::Deserializer::parse(text).map_err(|e| PolicyError {
            source_name: name.to_owned(),
            key: None,
            message: e.to_string().trim_end().to_owned(),
        })?;
        Self::read(deserializer, name, |e| e.message().to_owned())
    }

    /// Reads and checks a policy given as JSON (what a binding passes for an inline one).
    pub fn from_json(text: &str) -> Result<Policy, PolicyError> {
        let deserializer = &mut serde_json::Deserializer::from_str(text);
        Self::read(deserializer, "<inline>", |e| e.to_string())
    }

    /// The policy `deserializer` holds, checked; errors name `name` and the dotted key, and
    /// say what was wrong in `message`'s words.
    fn read<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
        name: &str,
        message: impl Fn(D::Error) -> String,
    ) -> Result<Policy, PolicyError> {
        let fail = |key: String, message: String| PolicyError {
            source_name: name.to_owned(),
            key: (key != ".").then_some(key),
            message,
        };
        let policy: Policy = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            fail(key, message(e.into_inner()))
        })?;
        policy
            .check()
            .map_err(|(key, message)| fail(key.to_owned(), message))?;
        Ok(policy)
    }

    /// The policy as TOML, every key written (unset optional keys are left out).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a policy is always representable as TOML")
    }

    /// What serde cannot check: ranges and the forms of strings.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.limits.max_concurrency == 0 || self.limits.max_concurrency > 4096 {
            return Err((
                "limits.max_concurrency",
                format!("expected 1 to 4096, found {}", self.limits.max_concurrency),
            ));
        }
        if self.native.default_timeout.0 > self.limits.max_timeout.0 {
            return Err((
                "native.default_timeout",
                format!(
                    "expected at most limits.max_timeout ({} ms), found {} ms",
                    self.limits.max_timeout.0.as_millis(),
                    self.native.default_timeout.0.as_millis()
                ),
            ));
        }
        if self.limits.max_memory.0 == 0 {
            return Err(("limits.max_memory", "expected more than 0 bytes".to_owned()));
        }
        for (key, path) in self
            .native
            .binaries
            .iter()
            .map(|p| ("native.binaries", p))
            .chain(
                self.native
                    .allowlist_file
                    .iter()
                    .map(|p| ("native.allowlist_file", p)),
            )
        {
            if !path.is_absolute() {
                return Err((
                    key,
                    format!("expected an absolute path, found {}", path.display()),
                ));
            }
        }
        for digest in &self.native.digests {
            let hex = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex {
                return Err((
                    "native.digests",
                    format!("expected 64 hex digits (SHA-256 or BLAKE3), found {digest:?}"),
                ));
            }
        }
        for root in &self.peers.mount_roots {
            MountRoot::parse(root).map_err(|e| ("peers.mount_roots", e))?;
        }
        self.seccomp_filters()
            .map_err(|e| ("seccomp.filters", e.to_string()))?;
        if let Some(cpus) = self.cgroups.cpus
            && !(cpus.is_finite() && cpus > 0.0)
        {
            return Err((
                "cgroups.cpus",
                format!("expected a positive number of cores, found {cpus}"),
            ));
        }
        Ok(())
    }

    /// The operator's seccomp filters (`seccomp.filters`), read and checked to compile into
    /// both sets; `None` for the built-in ones.
    pub fn seccomp_filters(&self) -> Result<Option<String>, Error> {
        let Some(path) = &self.seccomp.filters else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
        for set in [
            filters::GUEST_THREAD,
            filters::SANDBOXED_TOOL,
            filters::GATED_TOOL,
        ] {
            filters::compile(set, Some(&text))
                .map_err(|e| Error::BadRequest(format!("{}: {e}", path.display())))?;
        }
        Ok(Some(text))
    }

    /// The mount roots of `[peers]`, each resolved to the directory it names now (so a
    /// symlink swapped in later does not move it).
    pub fn mount_roots(&self) -> Result<Vec<MountRoot>, Error> {
        self.peers
            .mount_roots
            .iter()
            .map(|spec| {
                let mut root = MountRoot::parse(spec).map_err(Error::BadRequest)?;
                root.path = root.path.canonicalize().map_err(|e| {
                    Error::BadRequest(format!("mount root {}: {e}", root.path.display()))
                })?;
                if !root.path.is_dir() {
                    return Err(Error::BadRequest(format!(
                        "mount root {} is not a directory",
                        root.path.display()
                    )));
                }
                Ok(root)
            })
            .collect()
    }

    /// The runtime's options under this policy (`cache_dir` is where recompiled modules
    /// go; it is the host's business, not the policy's).
    pub fn runtime_options(&self, cache_dir: Option<PathBuf>) -> Result<RuntimeOptions, Error> {
        let limits = &self.limits;
        Ok(RuntimeOptions {
            engine: EngineOptions {
                max_concurrency: limits.max_concurrency,
                max_memory_bytes: limits.max_memory.0,
                cache_dir,
                ..EngineOptions::default()
            },
            idempotency_capacity: limits.idempotency_entries,
            idempotency_max_bytes: limits.idempotency_bytes.0 as usize,
            idempotency_ttl: limits.idempotency_ttl.0,
            max_output_bytes: limits.max_output.0,
            max_stdin_bytes: limits.max_stdin.0,
            max_timeout: limits.max_timeout.0,
            out_dir: None,
            mount_roots: self.mount_roots()?,
            native: self.native_options()?,
            sessions: SessionOptions {
                max: limits.max_sessions,
                idle_ttl: limits.session_idle_ttl.0,
            },
        })
    }

    /// The native tools this policy allows; `None` (every native tool refused) when it
    /// names none.
    fn native_options(&self) -> Result<Option<NativeOptions>, Error> {
        let native = &self.native;
        if native.binaries.is_empty()
            && native.allowlist_file.is_none()
            && native.digests.is_empty()
        {
            return Ok(None);
        }
        let sandbox = if self.sandbox.enabled {
            Some(self.sandbox_options(self.seccomp_filters()?))
        } else {
            None
        };
        Ok(Some(NativeOptions {
            allowlist: AllowlistConfig {
                paths: native.binaries.clone(),
                file: native.allowlist_file.clone(),
                digests: native.digests.clone(),
                ..AllowlistConfig::default()
            },
            env: native.env.clone(),
            default_timeout: native.default_timeout.0,
            cwd: native.cwd.clone(),
            sandbox,
        }))
    }

    /// The native sandbox under this policy, with the tools' seccomp filters
    /// (`seccomp_filters`, read by the caller; `None`: the built-in ones).
    fn sandbox_options(&self, seccomp_filters: Option<String>) -> SandboxOptions {
        let (sandbox, cgroups) = (&self.sandbox, &self.cgroups);
        let defaults = SandboxOptions::default();
        SandboxOptions {
            jailer: sandbox.jailer.clone().unwrap_or(defaults.jailer),
            namespaces: Namespaces {
                net: !sandbox.network,
                ..Namespaces::default()
            },
            root: sandbox.root.clone(),
            read_only: sandbox.read_only.clone(),
            workspace: sandbox.workspace.clone(),
            tmp_bytes: sandbox.tmp_size.0,
            uid: sandbox.uid,
            gid: sandbox.gid,
            rlimits: Rlimits {
                open_files: sandbox.open_files,
                file_bytes: sandbox.file_size.map(|s| s.0),
                cpu_seconds: sandbox.cpu_seconds,
                ..defaults.rlimits
            },
            resources: ResourceLimits {
                memory_bytes: cgroups.memory.map(|s| s.0),
                cpu_cores: cgroups.cpus,
                pids: cgroups.pids,
                io_weight: cgroups.io_weight,
            },
            cgroups: match cgroups.version {
                CgroupChoice::Auto => Some(CgroupVersion::Auto),
                CgroupChoice::V1 => Some(CgroupVersion::V1),
                CgroupChoice::V2 => Some(CgroupVersion::V2),
                CgroupChoice::None => None,
            },
            hostname: sandbox.hostname.clone(),
            seccomp_filters,
            exec_gate: sandbox.exec_gate,
            gate_dirs: sandbox.gate_dirs.clone(),
            gate_originals: true,
        }
    }

    /// The jailer this policy names, or the default one beside the running program.
    pub fn jailer(&self) -> PathBuf {
        self.sandbox
            .jailer
            .clone()
            .unwrap_or_else(|| SandboxOptions::default().jailer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_document_is_the_defaults() {
        assert_eq!(Policy::from_toml("", "empty").unwrap(), Policy::default());
    }

    #[test]
    fn the_annotated_example_is_the_defaults() {
        let example = include_str!("../../../docs/policy.example.toml");
        let policy = Policy::from_toml(example, "docs/policy.example.toml").unwrap();
        assert_eq!(policy, Policy::default());
    }

    #[test]
    fn shown_policy_reads_back_the_same() {
        let mut policy = Policy::default();
        policy.native.binaries.push("/usr/bin/wc".into());
        policy.cgroups.memory = Some(Size(512 << 20));
        let again = Policy::from_toml(&policy.to_toml(), "shown").unwrap();
        assert_eq!(again, policy);
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(Policy::from_json(&json).unwrap(), policy);
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let err = Policy::from_toml("[limits]\nmax_timeout = 5\n", "p.toml").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("limits.max_timeout"), "{err}");
        assert!(
            err.to_string()
                .starts_with("policy p.toml: key `limits.max_timeout`"),
            "{err}"
        );
        let err = Policy::from_toml("[native]\nbinaries = [\"wc\"]\n", "p.toml").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("native.binaries"), "{err}");
        let err = Policy::from_toml("[limits]\nmax_concurency = 2\n", "p.toml").unwrap_err();
        assert!(err.to_string().contains("max_concurency"), "{err}");
        let err = Policy::from_toml("[limits\n", "p.toml").unwrap_err();
        assert!(err.to_string().starts_with("policy p.toml: "), "{err}");
    }
}
