//! Admission: the limits and checks every call passes, whichever backend runs it, in one
//! place. A call refused here runs nothing and creates nothing.

use std::path::PathBuf;
use std::time::Duration;

use crate::caller::{Caller, Credentials, Identity};
use crate::error::{Error, Result};
use crate::mounts;
use crate::request::Request;
use crate::runtime::RuntimeOptions;

/// What admission settled of a call.
pub(crate) struct Admitted {
    /// The request's environment, checked (the runtime's own variables come later).
    pub env: Vec<(String, String)>,
    /// Bytes of stdout and of stderr kept in full.
    pub output_bytes: usize,
}

/// Checks what every backend shares: stdin, the output limit, the arguments, the
/// environment and the execution id.
pub(crate) fn admit(options: &RuntimeOptions, request: &Request) -> Result<Admitted> {
    let max_stdin = options.max_stdin_bytes;
    if request.stdin.len() as u64 > max_stdin {
        return Err(Error::BadRequest(format!(
            "stdin of {} bytes exceeds this runtime's limit of {max_stdin} bytes",
            request.stdin.len()
        )));
    }
    if let Some(arg) = request.args.iter().find(|arg| arg.contains('\0')) {
        return Err(Error::BadRequest(format!(
            "argument {arg:?} contains a NUL byte"
        )));
    }
    // Room for the runtime's two variables.
    let mut env = Vec::with_capacity(request.env.len() + 2);
    for (key, value) in &request.env {
        if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            return Err(Error::BadRequest(format!(
                "environment variable {key:?} has an invalid name or value"
            )));
        }
        if key.starts_with("MEGAVISOR_") {
            return Err(Error::BadRequest(format!(
                "environment variable {key} is reserved for the runtime"
            )));
        }
        env.push((key.clone(), value.clone()));
    }
    if let Some(id) = &request.execution_id {
        validate_execution_id(id)?;
    }
    Ok(Admitted {
        env,
        output_bytes: output_limit(options.max_output_bytes, request.limits.output_bytes)?,
    })
}

/// The time limit of a call (from when it arrives): the one `asked`, else the tool's
/// `default`, at most `max`.
pub(crate) fn time_limit(
    default: Duration,
    asked: Option<Duration>,
    max: Duration,
) -> Result<Duration> {
    match asked.unwrap_or(default) {
        t if t.is_zero() => Err(Error::BadRequest(
            "time limit must be greater than zero".to_owned(),
        )),
        t if t > max => Err(Error::BadRequest(format!(
            "time limit of {} ms exceeds this runtime's maximum of {} ms",
            t.as_millis(),
            max.as_millis()
        ))),
        t => Ok(t),
    }
}

/// Bytes of stdout and of stderr a call keeps in full: the ones `asked`, at most `max`.
fn output_limit(max: u64, asked: Option<u64>) -> Result<usize> {
    match asked.unwrap_or(max) {
        bytes if bytes > max => Err(Error::BadRequest(format!(
            "output limit of {bytes} bytes exceeds this runtime's maximum of {max} bytes"
        ))),
        bytes => Ok(bytes as usize),
    }
}

/// A wasm call's memory cap: the one `asked`, else the entry's `default`, at most the
/// pool's `max`.
pub(crate) fn wasm_memory_limit(default: u64, asked: Option<u64>, max: u64) -> Result<u64> {
    match asked.unwrap_or(default) {
        0 => Err(Error::BadRequest(
            "memory limit must be greater than zero".to_owned(),
        )),
        bytes if bytes > max => Err(Error::BadRequest(format!(
            "memory limit of {bytes} bytes exceeds this runtime's maximum of {max} bytes"
        ))),
        bytes => Ok(bytes),
    }
}

/// A native call's cgroup memory limit: the one `asked`, which may only lower the
/// sandbox's `cap`.
pub(crate) fn native_memory_limit(asked: Option<u64>, cap: Option<u64>) -> Result<Option<u64>> {
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

/// `<out-dir>/<execution_id>/` (a peer's under `uid-<uid>/`, both its own), created, when
/// the runtime has an output directory and the request an execution id. `peer` is the
/// caller when it is another user than this process.
pub(crate) fn out_dir(
    options: &RuntimeOptions,
    request: &Request,
    caller: &Caller,
    peer: Option<&Credentials>,
) -> Result<Option<PathBuf>> {
    let (Some(root), Some(id)) = (&options.out_dir, &request.execution_id) else {
        return Ok(None);
    };
    let principal_dir = match &caller.identity {
        Identity::Process => root.clone(),
        Identity::Peer(credentials) => root.join(format!("uid-{}", credentials.uid)),
    };
    let dir = principal_dir.join(id);
    match peer {
        // The principal's directory is the peer's own: what it put in there is not
        // followed.
        Some(owner) => {
            let owner = (owner.uid, owner.gid);
            std::fs::create_dir_all(root).map_err(|e| Error::io(root, "create", e))?;
            mounts::own_dir(&principal_dir, owner)?;
            mounts::own_dir(&dir, owner)?;
        }
        None => std::fs::DirBuilder::new()
            .recursive(true)
            .create(&dir)
            .map_err(|e| Error::io(&dir, "create output directory", e))?,
    }
    Ok(Some(dir))
}

/// Execution ids name files and directories, so they are restricted to a safe alphabet.
fn validate_execution_id(id: &str) -> Result<()> {
    let ok = (1..=128).contains(&id.len())
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "execution id {id:?} must be 1-128 characters of A-Z a-z 0-9 . _ : - and not start with '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_ids_are_file_name_safe() {
        validate_execution_id("exec-1:a.b_c").unwrap();
        for bad in ["", "../x", "a/b", ".hidden", &"x".repeat(129)] {
            assert!(validate_execution_id(bad).is_err(), "{bad}");
        }
    }
}
