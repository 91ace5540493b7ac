//! `megavisor run`: one tool invocation on the bundle, or on an ad-hoc module.

use std::path::Path;
use std::process::ExitCode;

use megavisor_client::{Call, Client};
use megavisor_core::bundle::VerifiedBundle;
use megavisor_core::{
    Access, Capability, Digests, Error, Mount, Request, Result, Runtime, ToolRef,
};
use megavisor_driver::convert;

use super::{build_request, bundle_dir, open_runtime, runtime_options, trust_policy};
use crate::args::RunArgs;
use crate::render;

pub fn run(args: RunArgs) -> Result<ExitCode> {
    if let Some(module) = &args.module {
        return run_module(module, &args);
    }
    let Some((tool, tool_args)) = args.command.split_first() else {
        return Err(Error::BadRequest(
            "name a tool to run (see `megavisor tools`)".to_owned(),
        ));
    };
    let mut request = build_request(tool, tool_args, &args.invoke)?;
    if args.native {
        request.tool = ToolRef::Native(tool.into());
    }
    if let Some(socket) = &args.socket {
        return Ok(run_remote(socket, request, args.invoke.json));
    }
    let runtime = open_runtime(&args.bundle)?;
    Ok(render::report(runtime.run(&request), args.invoke.json))
}

/// Runs the request on the supervisor listening at `socket`, over the shared-memory ring.
fn run_remote(socket: &Path, request: Request, as_json: bool) -> ExitCode {
    let call = Call::from(convert::call(request));
    let outcome = Client::connect(socket)
        .and_then(|client| client.call(&call))
        .map(convert::output_from_wire);
    render::report(outcome, as_json)
}

/// Runs an ad-hoc module (`Runtime::adhoc`), outside the bundle. It must be one of the
/// bundle's own modules (same digests) unless the operator passed --allow-unsigned; it is granted
/// exactly the mounts and environment on the command line.
fn run_module(path: &Path, args: &RunArgs) -> Result<ExitCode> {
    let wasm = std::fs::read(path).map_err(|e| Error::Io {
        path: path.to_owned(),
        action: "read",
        message: e.to_string(),
    })?;
    let digests = Digests::of_bytes(&wasm);
    if !args.bundle.trust.allow_unsigned {
        let bundle = VerifiedBundle::open(
            &bundle_dir(&args.bundle),
            &trust_policy(&args.bundle.trust)?,
        )?;
        if !bundle.manifest.modules.iter().any(|m| m.wasm.digests == digests) {
            return Err(Error::NotAllowed(format!(
                "{} (sha256 {}) is not in the manifest; pass --allow-unsigned to run it anyway",
                path.display(),
                digests.sha256
            )));
        }
    }
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("module");
    let request = build_request(name, &args.command, &args.invoke)?;
    let runtime = Runtime::adhoc(
        &wasm,
        name,
        granted_by_flags(&request.mounts, &request.env),
        runtime_options(&args.bundle)?,
    )?;
    Ok(render::report(runtime.run(&request), args.invoke.json))
}

fn granted_by_flags(mounts: &[Mount], env: &[(String, String)]) -> Vec<Capability> {
    let fs = mounts.iter().map(|m| match m.access {
        Access::ReadOnly => Capability::FsRead(m.guest.clone()),
        Access::ReadWrite => Capability::FsWrite(m.guest.clone()),
    });
    fs.chain(env.iter().map(|(k, _)| Capability::Env(k.clone())))
        .collect()
}
