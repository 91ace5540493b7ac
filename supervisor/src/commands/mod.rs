//! One module per subcommand, plus what they share: finding the bundle and the trusted
//! keys, and turning invocation flags into a request.

pub mod exec;
pub mod keygen;
pub mod pack;
pub mod policy;
pub mod recompile;
pub mod run;
pub mod run_image;
pub mod tools;
pub mod verify;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use megavisor_core::{Error, Limits, Mount, Request, Result, Runtime, RuntimeOptions, TrustPolicy};

use crate::args::{BundleArgs, InvokeArgs, TrustArgs};

/// The data directory of this program: `../share/megavisor` beside it, else the system's
/// (see `megavisor_driver::data`).
fn data_dir() -> PathBuf {
    megavisor_driver::data::data_dir_of_current_exe()
}

/// The bundle directory: `--bundle`, else `MEGAVISOR_BUNDLE`, else the data directory's.
pub fn bundle_dir(args: &BundleArgs) -> PathBuf {
    args.bundle
        .clone()
        .or_else(|| std::env::var_os("MEGAVISOR_BUNDLE").map(PathBuf::from))
        .unwrap_or_else(|| data_dir().join(megavisor_driver::data::BUNDLE_DIR))
}

/// The trust policy: `--trusted-key`, else `MEGAVISOR_TRUSTED_KEY`, else the data
/// directory's key.
pub fn trust_policy(args: &TrustArgs) -> Result<TrustPolicy> {
    let keys = if !args.trusted_keys.is_empty() {
        args.trusted_keys.clone()
    } else if let Some(key) = std::env::var_os("MEGAVISOR_TRUSTED_KEY") {
        vec![PathBuf::from(key)]
    } else {
        let default = data_dir().join(megavisor_driver::data::TRUSTED_KEY_FILE);
        if default.exists() || !args.allow_unsigned {
            vec![default]
        } else {
            Vec::new()
        }
    };
    let mut policy = if keys.is_empty() {
        TrustPolicy::default()
    } else {
        TrustPolicy::from_key_files(&keys)?
    };
    policy.allow_unsigned = args.allow_unsigned;
    Ok(policy)
}

/// Runtime options for a one-shot command under the policy its flags name: a single slot
/// is enough.
pub fn runtime_options(args: &BundleArgs) -> Result<RuntimeOptions> {
    let mut options =
        policy::load(&args.policy, None)?.runtime_options(args.trust.cache_dir.clone())?;
    options.engine.max_concurrency = 1;
    Ok(options)
}

/// Verifies and loads the bundle.
pub fn open_runtime(args: &BundleArgs) -> Result<Runtime> {
    let dir = bundle_dir(args);
    if !dir.join(megavisor_core::manifest::MANIFEST_FILE).exists() {
        return Err(Error::BadRequest(format!(
            "no bundle at {}: pass --bundle DIR or set MEGAVISOR_BUNDLE (or install one: `make install`, or `make setup` in a checkout)",
            dir.display()
        )));
    }
    Runtime::open(&dir, &trust_policy(&args.trust)?, runtime_options(args)?)
}

/// Builds the request for `tool` from the invocation flags, reading stdin unless it is a
/// terminal (so `megavisor run echo hi` never waits for input).
pub fn build_request(tool: &str, args: &[String], flags: &InvokeArgs) -> Result<Request> {
    let mut request = Request::new(tool).args(args.iter().cloned());
    for spec in &flags.mounts {
        request = request.mount(Mount::parse(spec).map_err(Error::BadRequest)?);
    }
    for pair in &flags.env {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| Error::BadRequest(format!("--env {pair:?} must be KEY=VALUE")))?;
        request = request.env(key, value);
    }
    request.limits = Limits {
        memory_bytes: flags.memory,
        timeout: flags.timeout,
        ..Limits::default()
    };
    request.execution_id = flags.exec_id.clone();
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        // Read up to one byte past the limit, to know it was passed without holding more.
        let limit = RuntimeOptions::default().max_stdin_bytes;
        let mut bytes = Vec::new();
        stdin
            .lock()
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::Io {
                path: "<stdin>".into(),
                action: "read",
                message: e.to_string(),
            })?;
        if bytes.len() as u64 > limit {
            return Err(Error::BadRequest(format!(
                "stdin is larger than the limit of {limit} bytes; pass large inputs as a mount"
            )));
        }
        request.stdin = bytes;
    }
    Ok(request)
}
