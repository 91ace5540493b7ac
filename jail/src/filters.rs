//! The seccomp filters as data, and their one compiler. `jail/seccomp/filters.json` holds
//! each filter in seccompiler's JSON format, one comment per system call, as Firecracker
//! keeps `resources/seccomp/*.json`; the names of its filters are below. A thread (or
//! process) installs a *set* of them: every filter runs on every call, and the most
//! restrictive answer wins, so sets share filters instead of repeating lists.
//!
//! - `administration` (`EPERM`): calls that administer the machine rather than compute:
//!   mounts and namespaces, debugging other processes, loading kernel code or keys, the
//!   clock, swap, power.
//! - `guest_exec` (`EACCES`, the answer to an execve the manifest does not allow): starting
//!   programs.
//! - `guest_processes` (`EPERM`): making processes; threads, which the engine may need, are
//!   allowed.
//! - `tool_namespaces` (`EPERM`): a sandboxed tool making new namespaces, or typing into a
//!   terminal.
//! - `gated_exec` (`EPERM`): what would execute code where the exec gate (Landlock) does
//!   not look: an anonymous memory file.
//! - `no_clone3` (`ENOSYS`): `clone3` keeps its flags in memory a filter cannot read; the C
//!   library falls back to `clone`, which the filters above judge.

use seccompiler::{BpfProgram, TargetArch};

/// The filters' source, compiled into the programs that use it.
pub const FILTERS_JSON: &str = include_str!("../seccomp/filters.json");

/// The set of the supervisor's threads that run guest code: no programs, no processes, no
/// administration.
pub const GUEST_THREAD: &[&str] = &[
    "administration",
    "guest_exec",
    "guest_processes",
    "no_clone3",
];

/// The set of a sandboxed native tool: programs and processes, but no administration and no
/// new namespaces.
pub const SANDBOXED_TOOL: &[&str] = &["administration", "tool_namespaces", "no_clone3"];

/// The set of a sandboxed tool behind the exec gate: the sandboxed tool's, and no
/// anonymous files to execute.
pub const GATED_TOOL: &[&str] = &[
    "administration",
    "tool_namespaces",
    "gated_exec",
    "no_clone3",
];

/// Why a set of filters could not be compiled or installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError(pub String);

impl std::fmt::Display for FilterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seccomp: {}", self.0)
    }
}

impl std::error::Error for FilterError {}

/// Compiles the filters named in `set`, in order, for this machine's architecture, from
/// `source` (seccompiler's JSON, as `jail/seccomp/filters.json`), or from the built-in
/// filters when it is `None`.
pub fn compile(set: &[&str], source: Option<&str>) -> Result<Vec<BpfProgram>, FilterError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| FilterError(format!("unsupported architecture: {e}")))?;
    let json = source.unwrap_or(FILTERS_JSON);
    let mut programs = seccompiler::compile_from_json(json.as_bytes(), arch)
        .map_err(|e| FilterError(format!("the filters do not compile: {e}")))?;
    set.iter()
        .map(|name| {
            programs
                .remove(*name)
                .ok_or_else(|| FilterError(format!("no filter named {name:?}")))
        })
        .collect()
}

/// Installs compiled filters on the calling thread (and sets `no_new_privs` on it); the
/// threads and processes it starts inherit them.
pub fn install(programs: &[BpfProgram]) -> Result<(), FilterError> {
    for program in programs {
        seccompiler::apply_filter(program).map_err(|e| FilterError(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_set_compiles_and_every_call_has_a_comment() {
        compile(GUEST_THREAD, None).unwrap();
        compile(SANDBOXED_TOOL, None).unwrap();
        compile(GATED_TOOL, None).unwrap();
        let missing = compile(GUEST_THREAD, Some("{}")).unwrap_err();
        assert!(missing.to_string().contains("administration"), "{missing}");
        let filters: serde_json::Value = serde_json::from_str(FILTERS_JSON).unwrap();
        for (name, filter) in filters.as_object().unwrap() {
            for rule in filter["filter"].as_array().unwrap() {
                let comment = rule["comment"].as_str().unwrap_or_default();
                assert!(
                    !comment.is_empty(),
                    "{name}: {} has no comment",
                    rule["syscall"]
                );
            }
        }
    }
}
